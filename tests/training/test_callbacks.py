"""Training callbacks driven by hand: clock, NaN guard, CSV rows and resume, stopping rules, TensorBoard."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tfuq.training import callbacks as cb  # noqa: E402
from tfuq.training.csv_logs import read_rows  # noqa: E402
from tfuq.training.summaries import TensorBoardLog, mid_slice, to_image  # noqa: E402


class FakeCheckpoints:
    """Records saved steps like TrainingCheckpoints.save."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.saved = directory, []

    def save(self, step: int) -> str:
        self.saved.append(step)
        return str(self.directory / f"ckpt-{step}")


def model() -> keras.Model:
    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    net.compile(optimizer=keras.optimizers.SGD(0.25))
    net.term_names = ("loss", "nll", "dropout_kl")
    return net


def drive(
    callbacks: list[keras.callbacks.Callback], losses: list[float], start: int = 0, **extra: float
) -> None:
    """Call the hooks as fit does: train begin, one batch per loss, stop when asked, train end."""
    net = model()
    for callback in callbacks:
        callback.set_model(net)
        callback.on_train_begin()
    for batch, loss in enumerate(losses):
        for callback in callbacks:
            callback.on_train_batch_begin(batch)
        logs = {"nll": tf.constant(loss), "dropout_kl": 0.0, "loss": np.float32(loss), **extra}
        for callback in callbacks:
            callback.on_train_batch_end(batch, logs)
        if net.stop_training:
            break
    for callback in callbacks:
        callback.on_train_end()


def test_relative_change_and_clock() -> None:
    assert cb.relative_change(2.0, 1.9) == pytest.approx(0.05)
    assert cb.relative_change(-2.0, -2.2) == pytest.approx(0.1)
    assert cb.relative_change(0.0, 0.0) == 0.0 and cb.relative_change(0.0, 1.0) == math.inf
    clock = cb.StepClock(3, 5)
    drive([clock], [1.0] * 10)
    assert clock.step == 5  # stopped at max_iter
    assert cb.scalar_logs({"a": tf.constant(2.0), "b": np.ones(1), "c": np.ones(3), "d": "x"}) == {
        "a": 2.0,
        "b": 1.0,
    }


def test_nan_guard_stops_and_no_checkpoint_is_saved_at_the_bad_step(tmp_path: Path) -> None:
    clock = cb.StepClock(0, 100)
    guard = cb.NaNGuard(clock)
    ckpts = FakeCheckpoints(tmp_path)
    drive([clock, guard, cb.CheckpointSaver(clock, ckpts, 2, guard)], [3.0, 2.0, 1.0, float("nan"), 0.5, 0.4])
    assert guard.bad_step == 4 and math.isnan(guard.bad_values["loss"])
    assert ckpts.saved == [2] and clock.step == 4


def test_csv_rows_columns_validation_and_resume(tmp_path: Path) -> None:
    clock = cb.StepClock(0, 100)
    log = cb.CSVLog(clock, tmp_path, every_n=2)
    drive([clock, log], [5.0, 4.0, 3.0, 2.0, 1.0])
    log.on_epoch_end(0, {"val_loss": 0.7, "val_nll": 0.6, "loss": 1.0})
    with (tmp_path / "training.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2", "4"]
    assert list(rows[0]) == ["step", "loss", "nll", "dropout_kl", "lr"]
    assert [float(r["loss"]) for r in rows] == [5.0, 4.0, 2.0] and rows[0]["lr"] == "0.25"
    assert (tmp_path / "validation.csv").read_text().splitlines() == ["step,val_loss,val_nll", "5,0.7,0.6"]

    resumed_clock = cb.StepClock(2, 100)  # resumed from checkpoint 2: rows after it go
    resumed = cb.CSVLog(resumed_clock, tmp_path, every_n=2)
    drive([resumed_clock, resumed], [9.0, 8.0])
    with (tmp_path / "training.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # the rows of an uninterrupted run: step 1, then every second step (not step 3, the first resumed)
    assert [(r["step"], float(r["loss"])) for r in rows] == [("1", 5.0), ("2", 4.0), ("4", 8.0)]
    assert (tmp_path / "validation.csv").read_text().splitlines() == ["step,val_loss,val_nll"]


def test_klaser_convergence_over_blocks_and_after_resume(tmp_path: Path) -> None:
    losses = [12.0, 10.0, 8.0, 6.0, 5.0, 4.0, 5.0, 4.9, 4.8]  # block means 10, 5, 4.9
    clock = cb.StepClock(0, 100)
    stop = cb.ConvergenceStop(clock, window=3, tolerance=0.05)
    drive([clock, stop], losses)
    assert stop.stopped and clock.step == 9
    clock = cb.StepClock(0, 100)
    strict = cb.ConvergenceStop(clock, window=3, tolerance=0.01)  # 2% change: keep going
    drive([clock, strict], losses)
    assert not strict.stopped and clock.step == 9

    rows = ["step,loss"] + [f"{s},{v}" for s, v in enumerate(losses[:6], start=1)]
    (tmp_path / "training.csv").write_text("\n".join(rows) + "\n")
    clock = cb.StepClock(6, 100)
    resumed = cb.ConvergenceStop(clock, window=3, tolerance=0.05, csv_path=tmp_path / "training.csv")
    drive([clock, resumed], losses[6:])
    assert resumed.stopped and clock.step == 9


def test_validation_early_stopping_and_best_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = cb.StepClock(0, 100)
    ckpts = FakeCheckpoints(tmp_path)
    early, best = cb.ValidationEarlyStopping(patience=2), cb.BestCheckpoint(clock, ckpts)
    net = model()
    for callback in (early, best):
        callback.set_model(net)
    with caplog.at_level(logging.INFO, logger="tfuq.training.callbacks"):
        for value in (1.0, 0.9, float("nan"), 0.95, 0.92):
            clock.step += 10
            for callback in (early, best):
                callback.on_epoch_end(0, {"loss": 5.0, "val_loss": value})
            if net.stop_training:
                break
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validation at")]
    assert logged[:2] == ["validation at step 10: val_loss 1 (first counted)",
                          "validation at step 20: val_loss 0.9 (best before 1)"]  # fmt: skip
    assert early.stopped and clock.step == 40  # 0.9 at step 20 was not beaten twice (nan counts as no gain)
    assert ckpts.saved == [10, 20]
    record = json.loads((tmp_path / "best.json").read_text())
    assert record == {"step": 20, "val_loss": 0.9, "checkpoint": str(tmp_path / "ckpt-20")}
    assert cb.BestCheckpoint(clock, ckpts).best == 0.9  # a resumed run keeps the record


def test_early_stopping_ignores_validations_before_its_start() -> None:
    values = (0.5, 1.0, 0.9, 0.95, 0.92, 0.93, 0.94)  # an early dip at step 10, then a plateau
    stops = {}
    for start in (0, 20):
        clock = cb.StepClock(0, 100)
        early = cb.ValidationEarlyStopping(patience=2, clock=clock, start=start)
        net = model()
        early.set_model(net)
        for value in values:
            clock.step += 10
            early.on_epoch_end(0, {"val_loss": value})
            if net.stop_training:
                break
        stops[start] = (clock.step, early.best)
    # From the first validation: 0.5 is never beaten, stop after two more (step 30). From step 20:
    # best 1.0, then 0.9 (step 30), then 0.95 and 0.92 do not beat it: stop at step 50.
    assert stops == {0: (30, 0.5), 20: (50, 0.9)}
    with pytest.raises(ValueError, match="start step needs the step clock"):
        cb.ValidationEarlyStopping(patience=2, start=5)


def test_best_checkpoint_ignores_validations_before_its_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = cb.StepClock(0, 100)
    ckpts = FakeCheckpoints(tmp_path)
    best = cb.BestCheckpoint(clock, ckpts, start=20)
    best.set_model(model())
    with caplog.at_level(logging.INFO, logger="tfuq.training.callbacks"):
        for value in (0.5, 1.0, 0.9, 0.95):  # the dip at step 10 is before the start
            clock.step += 10
            best.on_epoch_end(0, {"val_loss": value})
    assert ckpts.saved == [20, 30] and best.best == 0.9
    assert [r.getMessage() for r in caplog.records] == [
        "validation at step 10: val_loss 0.5 (before the start at step 20)",
        "validation at step 20: val_loss 1 (first counted)",
        "validation at step 30: val_loss 0.9 (best before 1)",
        "validation at step 40: val_loss 0.95 (best before 0.9)",
    ]
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 30


def test_progress_logs_steps_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    clock = cb.StepClock(0, 4)
    with caplog.at_level(logging.INFO, logger="tfuq.training.callbacks"):
        drive([clock, cb.Progress(clock, every_n=2)], [3.0, 2.0, 1.0, 0.5])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("step 2/4 ") and "loss 2" in lines[0]


def test_mid_slices_images_and_tensorboard_events(tmp_path: Path) -> None:
    volume = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(mid_slice(volume), volume[:, :, 2])
    np.testing.assert_array_equal(mid_slice(volume[:, :, 0]), volume[:, :, 0])
    with pytest.raises(ValueError, match="2D or 3D"):
        mid_slice(np.zeros(3))
    image = to_image(np.array([[1.0, 3.0], [2.0, np.nan]]))
    assert image.shape == (1, 2, 2, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, ..., 0], [[1 / 3, 1.0], [2 / 3, 0.0]])
    assert not to_image(np.ones((2, 2))).any()

    clock = cb.StepClock(0, 4)
    planes = {"input": np.eye(3), "mean": np.ones((3, 3))}
    board = TensorBoardLog(clock, tmp_path, every_n=2, images=lambda: planes, image_every_n=3)
    drive([clock, board], [3.0, 2.0, 1.0, 0.5])
    board.on_epoch_end(0, {"val_loss": 0.25})
    board.on_train_end()
    found: dict[tuple[str, int], object] = {}
    for path in tmp_path.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found[(value.tag, event.step)] = tf.make_ndarray(value.tensor)
    assert float(found[("train/loss", 2)]) == 2.0 and float(found[("train/lr", 4)]) == 0.25
    assert ("train/loss", 1) not in found and float(found[("validation/loss", 4)]) == 0.25
    width, height, png = found[("mid_slice/input", 3)]
    assert (int(width), int(height)) == (3, 3)
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy()[..., 0], np.eye(3, dtype=np.uint8) * 255)
    assert ("mid_slice/mean", 4) in found  # and at the end


def test_a_checkpoint_is_saved_after_everything_its_step_writes(tmp_path: Path) -> None:
    """The commit point of a step: after its CSV row, its validation row and its best checkpoint."""
    events: list[str] = []

    class Recording(FakeCheckpoints):
        def __init__(self, directory: Path, kind: str) -> None:
            super().__init__(directory)
            self.kind = kind

        def save(self, step: int) -> str:
            rows = [r["step"] for r in read_rows(tmp_path / "training.csv")]
            valid = [r["step"] for r in read_rows(tmp_path / "validation.csv")]
            events.append(f"{self.kind} {step} after rows {rows[-1]} / {valid[-1] if valid else '-'}")
            return super().save(step)

    clock = cb.StepClock(0, 5)
    guard = cb.NaNGuard(clock)
    regular, best = Recording(tmp_path / "ckpt", "ckpt"), Recording(tmp_path / "best", "best")
    callbacks = [
        clock,
        guard,
        cb.CSVLog(clock, tmp_path),
        cb.BestCheckpoint(clock, best),
        cb.CheckpointSaver(clock, regular, 1, guard),
    ]
    net = model()
    for callback in callbacks:
        callback.set_model(net)
        callback.on_train_begin()
    losses = iter([3.0, 2.0, 1.0, 0.5, 0.25])
    for epoch in range(3):  # fit with 2 steps per epoch and a validation at each epoch end
        for batch in range(2):
            for callback in callbacks:
                callback.on_train_batch_begin(batch)
            logs = {"loss": next(losses)}
            for callback in callbacks:
                callback.on_train_batch_end(batch, logs)
            if net.stop_training:
                break
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"loss": 1.0, "val_loss": 1.0 / (epoch + 1)})
    for callback in callbacks:
        callback.on_train_end()
    assert events == [
        "ckpt 1 after rows 1 / -",  # mid-epoch: when the next step begins
        "best 2 after rows 2 / 2",
        "ckpt 2 after rows 2 / 2",  # an epoch end: after the validation and the best checkpoint
        "ckpt 3 after rows 3 / 2",
        "best 4 after rows 4 / 4",
        "ckpt 4 after rows 4 / 4",
        "best 5 after rows 5 / 5",
        "ckpt 5 after rows 5 / 5",  # stopped at max_iter mid-epoch: at the epoch's end
    ]


def write_index(folder: Path, steps: list[int]) -> None:
    """A checkpoint folder listing ``steps`` (empty files stand for the checkpoints)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'model_checkpoint_path: "ckpt-{steps[-1]}"'] + [
        f'all_model_checkpoint_paths: "ckpt-{s}"' for s in steps
    ]
    (folder / "checkpoint").write_text("\n".join(lines) + "\n")
    for step in steps:
        (folder / f"ckpt-{step}.index").write_bytes(b"")


def test_best_checkpoint_resumes_from_the_validation_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history = tmp_path / "validation.csv"
    history.write_text("step,val_loss\n10,0.8\n20,0.5\n30,0.6\n40,0.3\n")  # 40: after the resumed step
    best_dir = tmp_path / "best"
    write_index(best_dir, [10, 20])  # killed after saving best ckpt-20, before writing best.json
    (best_dir / "best.json").write_text(json.dumps({"step": 10, "val_loss": 0.8, "checkpoint": "ckpt-10"}))
    clock = cb.StepClock(30, 100)
    best = cb.BestCheckpoint(clock, FakeCheckpoints(best_dir), history=history)
    assert best.best == 0.8  # before training begins: the record
    best.set_model(model())
    with caplog.at_level(logging.INFO, logger="tfuq.training.callbacks"):
        best.on_train_begin()
    assert best.best == 0.5
    record = json.loads((best_dir / "best.json").read_text())
    assert record == {"step": 20, "val_loss": 0.5, "checkpoint": str(best_dir / "ckpt-20")}
    assert "repaired after an interrupted run: the best validation is step 20" in caplog.text

    # a record of a step after the resumed one (the killed run's) goes back to the best up to the
    # resumed step while that checkpoint is kept, else it stays until that validation runs again
    (best_dir / "best.json").write_text(json.dumps({"step": 40, "val_loss": 0.3, "checkpoint": "ckpt-40"}))
    write_index(best_dir, [20, 40])
    best = cb.BestCheckpoint(clock, FakeCheckpoints(best_dir), history=history)
    best.on_train_begin()
    assert best.best == 0.5 and json.loads((best_dir / "best.json").read_text())["step"] == 20
    (best_dir / "best.json").write_text(json.dumps({"step": 40, "val_loss": 0.3, "checkpoint": "ckpt-40"}))
    write_index(best_dir, [40])
    best = cb.BestCheckpoint(clock, FakeCheckpoints(best_dir), history=history)
    best.set_model(model())
    best.on_train_begin()
    assert best.best == 0.5 and json.loads((best_dir / "best.json").read_text())["step"] == 40
    clock.step = 40
    best.on_epoch_end(3, {"val_loss": 0.3})
    assert (
        best.checkpoints.saved == [40] and json.loads((best_dir / "best.json").read_text())["val_loss"] == 0.3
    )

    history.unlink()  # no rows: the record counts when it is not after the resumed step
    best = cb.BestCheckpoint(cb.StepClock(40, 100), FakeCheckpoints(best_dir), history=history)
    best.on_train_begin()
    assert best.best == 0.3
    best = cb.BestCheckpoint(cb.StepClock(30, 100), FakeCheckpoints(best_dir), history=history)
    best.on_train_begin()
    assert best.best == math.inf


def test_early_stopping_resumes_from_the_validation_rows(tmp_path: Path) -> None:
    history = tmp_path / "validation.csv"
    history.write_text("step,val_loss\n10,1.0\n20,0.9\n30,0.95\n40,0.2\n")
    clock = cb.StepClock(30, 100)
    early = cb.ValidationEarlyStopping(2, clock, history=history)
    early.set_model(model())
    early.on_train_begin()
    assert (early.best, early.waited) == (0.9, 1)  # as an uninterrupted run had it at step 30
    clock.step = 40
    early.on_epoch_end(3, {"val_loss": 0.96})
    assert early.stopped  # the second validation without a lower loss

    history.write_text("step,val_loss\n10,1.0\n20,1.1\n30,1.2\n")  # it had stopped at step 30
    again = cb.ValidationEarlyStopping(2, clock, history=history)
    again.on_train_begin()
    assert (again.best, again.waited) == (1.0, 0)  # a new run gets its patience again
    with pytest.raises(ValueError, match="history needs the step clock"):
        cb.ValidationEarlyStopping(2, history=history)
