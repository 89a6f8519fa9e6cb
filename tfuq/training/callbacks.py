"""Keras callbacks of a training run: step clock, CSV log, NaN guard, checkpoints, stopping, progress.

Every callback works on any ``keras.Model`` trainer whose ``train_step``
returns a dict of scalar terms (``loss`` first): the regression trainer and
the GAN trainers alike. They share a :class:`StepClock` (the global
iteration, continued across resumes), which must come first in the
callback list; :class:`NaNGuard` must come before :class:`CheckpointSaver`
so that a non-finite step is never saved.

Files (chief only): ``<model_dir>/logs/training.csv`` with one row per
logged step (``step``, ``loss``, each term, ``lr``) and
``<model_dir>/logs/validation.csv`` with one row per validation
(:mod:`tfuq.training.csv_logs`).

Kill safety: everything a step writes is written before the checkpoint of
that step, which is the commit point of a resumed run. :class:`CheckpointSaver`
saves after the step's CSV row and, when the step ends an epoch, after its
validation and the best-checkpoint bookkeeping (so it must come after
:class:`CSVLog` and :class:`BestCheckpoint` in the list). A run killed at any
point resumes from its last checkpoint; :class:`CSVLog` then drops the rows
after that step (and repairs a damaged file), :class:`BestCheckpoint` and
:class:`ValidationEarlyStopping` take their state from the validation rows up
to that step, and the steps after it are trained, logged and validated again.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfuq.atomic import write_json
from tfuq.training.checkpoints import TrainingCheckpoints, checkpoint_steps
from tfuq.training.csv_logs import read_rows, repair_log

__all__ = [
    "BestCheckpoint",
    "CSVLog",
    "CheckpointSaver",
    "ConvergenceStop",
    "NaNGuard",
    "Progress",
    "StepClock",
    "ValidationEarlyStopping",
    "current_lr",
    "relative_change",
    "scalar_logs",
]

logger = logging.getLogger(__name__)


def scalar_logs(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """Keras logs as plain floats (tensors and size-1 arrays converted, others dropped)."""
    out = {}
    for key, value in (logs or {}).items():
        array = np.asarray(keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else value)
        if array.size == 1 and np.issubdtype(array.dtype, np.number):
            out[key] = float(array.reshape(()))
    return out


def relative_change(previous: float, current: float) -> float:
    """``|current - previous| / |previous|`` (inf when previous is 0 and they differ).

    Example:
        >>> relative_change(2.0, 1.9)
        0.05000000000000005
    """
    if previous == current:
        return 0.0
    return abs(current - previous) / abs(previous) if previous else math.inf


def current_lr(model: keras.Model) -> float | None:
    """The learning rate of ``model.optimizer`` at its current iteration, if it has one."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return None


class StepClock(keras.callbacks.Callback):
    """The global iteration: ``start`` plus the batches trained; stops ``fit`` at ``stop``.

    Args:
        start: Step of the restored checkpoint (0 from scratch).
        stop: ``[TRAINING] max_iter``.
    """

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop, self.step = int(start), int(stop), int(start)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        self.step += 1
        if self.step >= self.stop:
            self.model.stop_training = True


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first step whose loss terms are not finite; remember which."""

    def __init__(self, clock: StepClock) -> None:
        super().__init__()
        self.clock = clock
        self.bad_step: int | None = None
        self.bad_values: dict[str, float] = {}

    @property
    def ok(self) -> bool:
        """No non-finite loss so far."""
        return self.bad_step is None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        values = scalar_logs(logs)
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad and self.ok:
            self.bad_step, self.bad_values = self.clock.step, bad
            self.model.stop_training = True


class CheckpointSaver(keras.callbacks.Callback):
    """Save every ``every_n`` steps (0 = never here; the job saves at the end) while finite.

    The checkpoint of a step is its commit point, so it is written after
    everything else the step writes: a step that ends an epoch is saved at
    the epoch's end (after its validation row and best checkpoint), any other
    when the next step begins (the state is still that of the step), and a
    step left pending when training ends at its end.
    """

    def __init__(self, clock: StepClock, checkpoints: TrainingCheckpoints, every_n: int, guard: NaNGuard):
        super().__init__()
        self.clock, self.checkpoints, self.every_n, self.guard = clock, checkpoints, int(every_n), guard
        self.pending: int | None = None

    def _flush(self) -> None:
        if self.pending is not None and self.guard.ok:
            self.checkpoints.save(self.pending)
        self.pending = None

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras before each training step."""
        self._flush()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        if self.every_n and self.clock.step % self.every_n == 0:
            self.pending = self.clock.step

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each epoch (and its validation)."""
        self._flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras when ``fit`` ends."""
        self._flush()


class CSVLog(keras.callbacks.Callback):
    """``training.csv`` (one row per ``every_n`` steps) and ``validation.csv`` (one per validation).

    Rows are a function of the step alone (step 1 and every ``every_n``-th),
    so a resumed run writes the rows an uninterrupted one would. On resume
    the rows after the restored step (from the interrupted run) are dropped
    and a damaged file is rewritten from its good rows
    (:func:`~tfuq.training.csv_logs.repair_log`), so the file describes the
    run that the checkpoints continue, each logged step once.

    Args:
        clock: The shared step clock.
        log_dir: ``<model_dir>/logs``.
        every_n: Steps between rows (the first step is always logged).
        enabled: False on non-chief workers.
    """

    def __init__(self, clock: StepClock, log_dir: Path, every_n: int = 1, *, enabled: bool = True) -> None:
        super().__init__()
        self.clock, self.every_n, self.enabled = clock, max(1, int(every_n)), enabled
        self.train_path, self.valid_path = Path(log_dir) / "training.csv", Path(log_dir) / "validation.csv"
        self._columns: dict[Path, list[str]] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras when ``fit`` starts."""
        if not self.enabled:
            return
        for path in (self.train_path, self.valid_path):
            kept = repair_log(path, self.clock.start)
            if kept.columns:
                self._columns[path] = kept.columns

    def _rank(self, key: str) -> tuple[int, int, str]:
        """Column order: the trainer's ``term_names`` (loss first) when it has them, then by name."""
        names = list(getattr(self.model, "term_names", ("loss",)))
        bare = key[4:] if key.startswith("val_") else key
        return (0, names.index(bare), key) if bare in names else (1, 0, key)

    def _append(self, path: Path, values: dict[str, float]) -> None:
        columns = self._columns.get(path)
        new = columns is None or not path.exists()
        if new:
            columns = ["step", *sorted(values, key=self._rank)]
            self._columns[path] = columns
            path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({"step": self.clock.step, **{k: f"{v:.8g}" for k, v in values.items()}})

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        step = self.clock.step
        if self.enabled and (step % self.every_n == 0 or step == 1):
            values = scalar_logs(logs)
            lr = current_lr(self.model)
            if lr is not None:
                values["lr"] = lr
            self._append(self.train_path, values)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each epoch (and its validation)."""
        values = {k: v for k, v in scalar_logs(logs).items() if k.startswith("val_")}
        if self.enabled and values:
            self._append(self.valid_path, values)


def _validation_history(path: Path | None, upto: int, since: int) -> list[tuple[int, float]]:
    """``(step, val_loss)`` of the validation rows of steps ``since <= step <= upto``, by step."""
    if path is None:
        return []
    out = []
    for row in read_rows(path):
        step, text = int(float(row["step"])), row.get("val_loss", "")
        if since <= step <= upto and text:
            out.append((step, float(text)))
    return out


class BestCheckpoint(keras.callbacks.Callback):
    """Keep the checkpoint with the lowest ``val_loss`` in ``<checkpoints>/best`` (+ ``best.json``).

    Validations at steps below ``start`` are logged but never kept as the
    best, so with :class:`ValidationEarlyStopping`'s ``start`` the weights
    scored are those of a model trained at least that long.

    Kill safety: ``checkpoints`` should keep two checkpoints, so the one
    ``best.json`` names still exists while the next best is being saved. A
    resumed run takes the best value from the validation rows up to its step
    (``history``, ``validation.csv``), as an uninterrupted run had it there,
    and points ``best.json`` at that validation's checkpoint when a kill left
    it naming another one. Only when that checkpoint is gone (two better
    validations after the resumed step) does a record of the interrupted
    run's stay, until the validations after the resumed step run again.

    Args:
        clock: The run's step clock.
        checkpoints: The ``best`` checkpoints.
        enabled: False on non-chief workers (they save, but write no record).
        start: First step that counts.
        history: ``validation.csv``, read when training begins.
    """

    def __init__(
        self,
        clock: StepClock,
        checkpoints: TrainingCheckpoints,
        *,
        enabled: bool = True,
        start: int = 0,
        history: Path | None = None,
    ) -> None:
        super().__init__()
        self.clock, self.checkpoints, self.enabled, self.start = clock, checkpoints, enabled, int(start)
        self.record = Path(checkpoints.directory) / "best.json"
        self.history = history
        self.best = math.inf
        record = self._read_record()
        if record is not None:
            self.best = float(record["val_loss"])

    def _read_record(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.record.read_text(encoding="utf-8"))
            float(record["val_loss"]), int(record["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record

    def _write_record(self, step: int, value: float, path: str) -> None:
        if self.enabled:
            write_json(self.record, {"step": step, "val_loss": value, "checkpoint": path}, overwrite=True)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras when ``fit`` starts: the best as of the resumed step."""
        resumed = self.clock.start
        history = [
            (s, v) for s, v in _validation_history(self.history, resumed, self.start) if math.isfinite(v)
        ]
        record = self._read_record()
        saved = checkpoint_steps(self.checkpoints.directory)
        if not history:
            self.best = math.inf
            if record is not None and int(record["step"]) <= resumed and int(record["step"]) in saved:
                self.best = float(record["val_loss"])
            return
        step, value = min(history, key=lambda item: item[1])  # the first of equal values, as fit keeps it
        self.best = value
        if record is not None and int(record["step"]) == step and step in saved:
            return
        if step in saved:
            if self.enabled:
                logger.warning(
                    "%s: repaired after an interrupted run: the best validation is step %d (val_loss %.5g)",
                    self.record,
                    step,
                    value,
                )
            self._write_record(step, value, str(Path(self.checkpoints.directory) / f"ckpt-{step}"))
        elif record is not None and int(record["step"]) > resumed:
            logger.info(
                "%s names step %d of the interrupted run; the validations after step %d run again",
                self.record,
                int(record["step"]),
                resumed,
            )
        elif self.enabled:
            logger.warning(
                "%s: the best validation up to step %d is step %d, whose checkpoint is gone; the record is "
                "kept until a lower val_loss",
                self.record,
                resumed,
                step,
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each epoch (and its validation)."""
        value = scalar_logs(logs).get("val_loss")
        if value is None:
            return
        if self.enabled:
            if self.clock.step < self.start:
                before = f"before the start at step {self.start}"
            elif math.isfinite(self.best):
                before = f"best before {self.best:.5g}"
            else:
                before = "first counted"
            logger.info("validation at step %d: val_loss %.5g (%s)", self.clock.step, value, before)
        if not math.isfinite(value) or value >= self.best or self.clock.step < self.start:
            return
        self.best = value
        path = self.checkpoints.save(self.clock.step)
        self._write_record(self.clock.step, value, path)


class ValidationEarlyStopping(keras.callbacks.Callback):
    """Stop after ``patience`` validations without a lower ``val_loss``.

    A resumed run replays the validation rows up to its step (``history``),
    so it stops where an uninterrupted run would; a run resumed after it
    already stopped early gets its patience again.

    Args:
        patience: Validations without a lower loss before stopping.
        clock: The run's step clock; needed with ``start`` or ``history``.
        start: Validations at steps below it are ignored (neither a best
            value nor a wait), as Keras' ``EarlyStopping(start_from_epoch)``:
            the loss of a heteroscedastic model often pauses early, while its
            variance head settles, and would stop it there.
        history: ``validation.csv``, read when training begins.
    """

    def __init__(
        self,
        patience: int,
        clock: StepClock | None = None,
        *,
        start: int = 0,
        history: Path | None = None,
    ) -> None:
        super().__init__()
        if start and clock is None:
            raise ValueError(f"A start step needs the step clock. Received: start={start!r}, clock=None")
        if history is not None and clock is None:
            raise ValueError(f"A history needs the step clock. Received: history={history!r}, clock=None")
        self.patience, self.best, self.waited = int(patience), math.inf, 0
        self.clock, self.start, self.history = clock, int(start), history
        self.stopped = False

    def _count(self, value: float) -> bool:
        """Count one validation; True when patience ran out."""
        if value < self.best:
            self.best, self.waited = value, 0
            return False
        self.waited += 1
        return self.waited >= self.patience

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras when ``fit`` starts: replay the validations up to the resumed step."""
        if self.clock is None or self.history is None:
            return
        self.best, self.waited = math.inf, 0
        for _, value in _validation_history(self.history, self.clock.start, self.start):
            if self._count(value):
                self.waited = 0  # it had stopped there: a new run gets its patience again

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each epoch (and its validation)."""
        value = scalar_logs(logs).get("val_loss")
        if value is None or (self.clock is not None and self.clock.step < self.start):
            return
        if self._count(value):
            self.stopped = True
            self.model.stop_training = True
            logger.info("early stopping: val_loss has not improved for %d validations", self.waited)


class ConvergenceStop(keras.callbacks.Callback):
    """Klaser's criterion: stop when the mean loss of a block of ``window`` steps changes by < ``tolerance``.

    Blocks are aligned to multiples of ``window``; at each block end the
    block's mean loss is compared with the previous block's by
    :func:`relative_change`. After a resume the previous blocks are read
    back from ``training.csv`` rows (its logged steps).

    Reference: Klaser et al., SASHIMI 2020, section 2.3 (< 5% change over 5000 iterations).
    """

    def __init__(self, clock: StepClock, window: int, tolerance: float, csv_path: Path | None = None) -> None:
        super().__init__()
        self.clock, self.window, self.tolerance = clock, int(window), float(tolerance)
        self.previous: float | None = None
        self.total, self.count = 0.0, 0
        self.stopped = False
        self.csv_path = csv_path

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras when ``fit`` starts."""
        start = self.clock.start
        if not start or self.csv_path is None:
            return
        rows = [(int(float(r["step"])), float(r["loss"])) for r in read_rows(self.csv_path) if r.get("loss")]
        block = start // self.window
        previous = [v for s, v in rows if (s - 1) // self.window == block - 1 and s <= start]
        current = [v for s, v in rows if (s - 1) // self.window == block and s <= start]
        self.previous = float(np.mean(previous)) if previous else None
        self.total, self.count = float(np.sum(current)), len(current)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        loss = scalar_logs(logs).get("loss")
        if loss is None or not math.isfinite(loss):
            return
        self.total, self.count = self.total + loss, self.count + 1
        if self.clock.step % self.window:
            return
        mean = self.total / self.count
        if self.previous is not None and relative_change(self.previous, mean) < self.tolerance:
            self.stopped = True
            self.model.stop_training = True
            logger.info(
                "converged at step %d: mean loss %.6g vs %.6g over the previous %d steps (< %g change)",
                self.clock.step,
                mean,
                self.previous,
                self.window,
                self.tolerance,
            )
        self.previous, self.total, self.count = mean, 0.0, 0


class Progress(keras.callbacks.Callback):
    """A progress bar on a terminal, else a log line every ``every_n`` steps (loss, rate, ETA)."""

    def __init__(self, clock: StepClock, every_n: int = 0, *, enabled: bool = True) -> None:
        super().__init__()
        self.clock, self.enabled = clock, enabled
        self.every_n = every_n or max(1, (clock.stop - clock.start) // 20)
        self.bar: keras.utils.Progbar | None = None
        self.started = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras when ``fit`` starts."""
        self.started = time.perf_counter()
        if self.enabled and sys.stderr.isatty():
            self.bar = keras.utils.Progbar(self.clock.stop, stateful_metrics=None, unit_name="step")
            self.bar.update(self.clock.start)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        if not self.enabled:
            return
        values = scalar_logs(logs)
        step = self.clock.step
        if self.bar is not None:
            self.bar.update(step, list(values.items()))
            return
        if step % self.every_n == 0 or step == self.clock.stop:
            done = step - self.clock.start
            rate = done / max(time.perf_counter() - self.started, 1e-9)
            eta = (self.clock.stop - step) / rate if rate else math.inf
            terms = " ".join(f"{k} {v:.5g}" for k, v in values.items())
            logger.info("step %d/%d %s (%.2f steps/s, eta %.0f s)", step, self.clock.stop, terms, rate, eta)
