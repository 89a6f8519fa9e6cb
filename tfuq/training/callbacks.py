"""Keras callbacks of a training run: step clock, CSV log, NaN guard, checkpoints, stopping, progress.

Every callback works on any ``keras.Model`` trainer whose ``train_step``
returns a dict of scalar terms (``loss`` first): the regression trainer and
the GAN trainers alike. They share a :class:`StepClock` (the global
iteration, continued across resumes), which must come first in the
callback list; :class:`NaNGuard` must come before :class:`CheckpointSaver`
so that a non-finite step is never saved.

Files (chief only): ``<model_dir>/logs/training.csv`` with one row per
logged step (``step``, ``loss``, each term, ``lr``) and
``<model_dir>/logs/validation.csv`` with one row per validation.
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

from tfuq.atomic import write_json, write_text
from tfuq.training.checkpoints import TrainingCheckpoints

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
    "read_rows",
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
    """Save every ``every_n`` steps (0 = never here; the job saves at the end) while finite."""

    def __init__(self, clock: StepClock, checkpoints: TrainingCheckpoints, every_n: int, guard: NaNGuard):
        super().__init__()
        self.clock, self.checkpoints, self.every_n, self.guard = clock, checkpoints, int(every_n), guard

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        if self.every_n and self.clock.step % self.every_n == 0 and self.guard.ok:
            self.checkpoints.save(self.clock.step)


class CSVLog(keras.callbacks.Callback):
    """``training.csv`` (one row per ``every_n`` steps) and ``validation.csv`` (one per validation).

    On resume the rows after the restored step (from the interrupted run) are
    dropped, so the file describes the run that the checkpoints continue.

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
            rows = read_rows(path)
            if not rows:
                continue
            kept = [r for r in rows if int(float(r["step"])) <= self.clock.start]
            self._columns[path] = list(rows[0])
            write_text(path, _render(self._columns[path], kept), overwrite=True)

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
        if self.enabled and (step % self.every_n == 0 or step == self.clock.start + 1):
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


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV log written by :class:`CSVLog` ([] when absent)."""
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _render(columns: list[str], rows: list[dict[str, str]]) -> str:
    lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


class BestCheckpoint(keras.callbacks.Callback):
    """Keep the checkpoint with the lowest ``val_loss`` in ``<checkpoints>/best`` (+ ``best.json``).

    Validations at steps below ``start`` are logged but never kept as the
    best, so with :class:`ValidationEarlyStopping`'s ``start`` the weights
    scored are those of a model trained at least that long.
    """

    def __init__(
        self, clock: StepClock, checkpoints: TrainingCheckpoints, *, enabled: bool = True, start: int = 0
    ) -> None:
        super().__init__()
        self.clock, self.checkpoints, self.enabled, self.start = clock, checkpoints, enabled, int(start)
        self.record = Path(checkpoints.directory) / "best.json"
        self.best = math.inf
        if self.record.is_file():
            self.best = float(json.loads(self.record.read_text(encoding="utf-8"))["val_loss"])

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
        if self.enabled:
            write_json(
                self.record, {"step": self.clock.step, "val_loss": value, "checkpoint": path}, overwrite=True
            )


class ValidationEarlyStopping(keras.callbacks.Callback):
    """Stop after ``patience`` validations without a lower ``val_loss``.

    Args:
        patience: Validations without a lower loss before stopping.
        clock: The run's step clock; needed with ``start``.
        start: Validations at steps below it are ignored (neither a best
            value nor a wait), as Keras' ``EarlyStopping(start_from_epoch)``:
            the loss of a heteroscedastic model often pauses early, while its
            variance head settles, and would stop it there.
    """

    def __init__(self, patience: int, clock: StepClock | None = None, *, start: int = 0) -> None:
        super().__init__()
        if start and clock is None:
            raise ValueError(f"A start step needs the step clock. Received: start={start!r}, clock=None")
        self.patience, self.best, self.waited = int(patience), math.inf, 0
        self.clock, self.start = clock, int(start)
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each epoch (and its validation)."""
        value = scalar_logs(logs).get("val_loss")
        if value is None or (self.clock is not None and self.clock.step < self.start):
            return
        if value < self.best:
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
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
