"""Resume after SIGKILL: a killed `tfuq train` continues from its last complete checkpoint, exactly.

Two kinds of kill: one from outside at a moment chosen by timing (the training has logged step 7),
and the kill harness (slow): `tfuq train` run through a small runner that SIGKILLs its own process
at a named point (start-up, mid-step, during a checkpoint write, right after a checkpoint, between
a best checkpoint and its record, during a validation, during the final save of model.keras), then
resumed with the same command and compared with an uninterrupted run, with op determinism on.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tfuq.config import load_config

tf = pytest.importorskip("tensorflow")

from tfuq.stages.train import run_training  # noqa: E402
from tfuq.training.build import build_trainer  # noqa: E402
from tfuq.training.checkpoints import TrainingCheckpoints, checkpoint_steps  # noqa: E402

SETTINGS = ["TRAINING.max_iter=500", "TRAINING.save_every_n=4", "TRAINING.log_every_n=1"]


def losses(path: Path) -> dict[int, float]:
    with path.open(newline="") as handle:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(handle) if r.get("loss")}


def test_killed_training_resumes_from_its_last_checkpoint(tiny_ini: Path, tmp_path: Path) -> None:
    from tfuq.data.sources import resolve_sources

    config = load_config(tiny_ini, SETTINGS)
    resolve_sources(config)  # the phantom exists before the subprocess starts
    log = config.model_dir / "logs" / "training.csv"
    args = [sys.executable, "-m", "tfuq.cli", "train", str(tiny_ini)]
    args += [x for s in SETTINGS for x in ("--set", s)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and max(losses(log), default=0) >= 7):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "training did not reach step 7 in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = losses(log)
    last = max(checkpoint_steps(config.model_dir / "checkpoints"))
    assert last >= 4 and last % 4 == 0 and max(before) >= last

    # the checkpoint alone: step, optimiser iterations and moments come back
    probe = build_trainer(config)
    restored = TrainingCheckpoints(probe, config.model_dir / "checkpoints", max_to_keep=5)
    assert restored.restore(last) == last
    assert int(probe.optimizer.iterations.numpy()) == last
    moments = [v for v in probe.optimizer.variables if v.path.endswith(("_momentum", "_velocity"))]
    assert moments and all(np.any(np.asarray(v) != 0) for v in moments)

    # resuming continues the killed run's trajectory (deterministic window stream, RNG, optimiser)
    stop = max(max(before), last + 2)
    result = run_training(load_config(tiny_ini, [*SETTINGS, f"TRAINING.max_iter={stop}"]))
    assert (result.start_step, result.final_step) == (last, stop)
    assert int(result.trainer.optimizer.iterations.numpy()) == stop
    after = losses(log)
    assert sorted(after) == list(range(1, stop + 1))
    reference = dict(before)
    if len([s for s in before if s > last]) < 2:  # killed right after a checkpoint: run it uninterrupted
        other = load_config(
            tiny_ini, [*SETTINGS, f"TRAINING.max_iter={stop}", f"SYSTEM.model_dir={tmp_path / 'ref'}"]
        )
        run_training(other)
        reference = losses(other.model_dir / "logs" / "training.csv")
    for step in sorted(reference):
        if step <= stop:
            assert after[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-7), step


# -- the kill harness ------------------------------------------------------------------------------

#: ``python RUNNER ARGS``: ``tfuq.cli.main(ARGS)`` with op determinism on and, when ``TFUQ_TEST_KILL``
#: is ``POINT:STEP``, a SIGKILL of the process at that point of the run (the hooks patch tfuq and
#: TensorFlow from outside; the package has no test code).
RUNNER = """
import os, signal, sys
import tensorflow as tf

tf.config.experimental.enable_op_determinism()
point, _, at = os.environ.get("TFUQ_TEST_KILL", "").partition(":")
at = int(at or 0)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point:
    import keras
    from tensorflow.python.ops import gen_io_ops
    from tfuq.training import callbacks as cb
    from tfuq.training import checkpoints as ck

    if point == "startup":  # locked, contract checked, config stored, inputs ready: no step yet
        cb.StepClock.on_train_begin = lambda self, logs=None: die()
    elif point == "mid-step":  # step `at` has begun
        def batch_begin(self, batch, logs=None):
            if self.step + 1 == at:
                die()
        cb.StepClock.on_train_batch_begin = batch_begin
    elif point == "checkpoint-write":  # the shards of ckpt-`at` are in ckpt-`at`_temp/, not merged
        merge = gen_io_ops.merge_v2_checkpoints
        def merging(prefixes, destination, *args, **kwargs):
            folder, name = os.path.split(destination.numpy().decode())
            if name == f"ckpt-{at}" and os.path.basename(folder) == "checkpoints":
                die()
            return merge(prefixes, destination, *args, **kwargs)
        gen_io_ops.merge_v2_checkpoints = merging
    elif point == "after-checkpoint":  # ckpt-`at` is complete and listed
        save = ck.TrainingCheckpoints.save
        def saving(self, step):
            path = save(self, step)
            if step == at and self.directory.name == "checkpoints":
                die()
            return path
        ck.TrainingCheckpoints.save = saving
    elif point == "validation":  # in the validation of step `at`
        def test_batch_begin(self, batch, logs=None):
            if self.step == at:
                die()
        cb.StepClock.on_test_batch_begin = test_batch_begin
    elif point == "best-record":  # a new best checkpoint saved at step >= `at`, best.json not yet
        record = cb.BestCheckpoint._write_record
        def recording(self, step, value, path):
            if step >= at:
                die()
            record(self, step, value, path)
        cb.BestCheckpoint._write_record = recording
    elif point == "final-save":  # model.keras written to its temporary file, not yet renamed
        save_model = keras.Model.save
        def saving(self, *args, **kwargs):
            save_model(self, *args, **kwargs)
            die()
        keras.Model.save = saving

from tfuq.cli import main

main(sys.argv[1:])
"""

#: 12 steps, a checkpoint every 4, a validation every 2 (on 1 of the 3 phantom subjects).
HARNESS = [
    "TRAINING.max_iter=12",
    "TRAINING.save_every_n=4",
    "TRAINING.validation_every_n=2",
    "TRAINING.log_every_n=1",
    "TRAINING.exclude_fraction_for_validation=0.34",
]
#: (point, step): every place a kill leaves a different state behind.
KILLS = [
    ("startup", 0),
    ("mid-step", 6),
    ("checkpoint-write", 8),
    ("after-checkpoint", 8),
    ("best-record", 5),
    ("validation", 12),  # the last validation, before the last checkpoint
    ("final-save", 12),
]


def _last_step(path: Path) -> int:
    """The last step of a CSV log (0 when there is none)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0


def _check_killed_state(point: str, model_dir: Path) -> None:
    """The kill happened where it was meant to: what each point leaves behind."""
    steps = checkpoint_steps(model_dir / "checkpoints")
    logs = model_dir / "logs"
    train, valid = _last_step(logs / "training.csv"), _last_step(logs / "validation.csv")
    best = model_dir / "checkpoints" / "best"
    left = {
        "startup": (steps, train) == ([], 0) and (model_dir / "training_config.ini").is_file(),
        "mid-step": (steps, train, valid) == ([4], 5, 4),
        "checkpoint-write": (steps, train, valid) == ([4], 8, 8)
        and (model_dir / "checkpoints" / "ckpt-8_temp").is_dir(),
        "after-checkpoint": (steps, train, valid) == ([4, 8], 8, 8),
        "best-record": bool(checkpoint_steps(best))
        and checkpoint_steps(best)[-1] >= 5
        and json.loads((best / "best.json").read_text())["step"] < checkpoint_steps(best)[-1],
        "validation": (steps, train, valid) == ([4, 8], 12, 10),
        "final-save": steps[-1:] == [12]
        and not (model_dir / "model.keras").exists()
        and any(p.name.startswith(".model.keras.") for p in model_dir.iterdir()),
    }
    assert left[point], (point, steps, train, valid, sorted(p.name for p in model_dir.rglob("*")))


def _run(runner: Path, ini: Path, model_dir: Path, kill: str = "") -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(runner), "train", str(ini), "--set", f"SYSTEM.model_dir={model_dir}"]
    args += [x for s in HARNESS for x in ("--set", s)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow", "TFUQ_TEST_KILL": kill}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)


def _strays(model_dir: Path) -> list[str]:
    """What an interrupted run may leave and a completed resume must not."""
    from tfuq.atomic import is_interrupted_write

    found = []
    listed = {f"ckpt-{s}" for s in checkpoint_steps(model_dir / "checkpoints")}
    listed |= {f"best/ckpt-{s}" for s in checkpoint_steps(model_dir / "checkpoints" / "best")}
    for path in model_dir.rglob("*"):
        name, relative = path.name, str(path.relative_to(model_dir))
        if (
            is_interrupted_write(path)
            or name.endswith("_temp")
            or name.startswith(("checkpoint.tmp", ".tfuq.lock", "damaged-"))
            or ".damaged-" in name
        ):
            found.append(relative)
        elif name.startswith("ckpt-") and path.parent.name in ("checkpoints", "best"):
            prefix = ("best/" if path.parent.name == "best" else "") + name.split(".")[0]
            if prefix not in listed:
                found.append(relative)
    return sorted(found)


def _tensors(prefix: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if "save_counter" not in name  # counts the saves of each process, not training state
    }


def _network_weights(model_dir: Path) -> list[np.ndarray]:
    from tfuq.model_store import load_model

    return [np.asarray(w) for w in load_model(model_dir / "model.keras").get_weights()]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, phantom_cache: Path) -> tuple[Path, Path, Path]:
    """The runner, the INI and the model_dir of an uninterrupted reference run."""
    from training_setup import TINY_INI

    from tfuq.data.sources import resolve_sources

    folder = tmp_path_factory.mktemp("kill-harness")
    ini = folder / "tiny.ini"
    ini.write_text(TINY_INI.format(model_dir=folder / "unused", cache_dir=phantom_cache))
    resolve_sources(load_config(ini, HARNESS))  # the phantom exists before the subprocesses start
    runner = folder / "runner.py"
    runner.write_text(RUNNER)
    reference = folder / "reference"
    done = _run(runner, ini, reference)
    assert done.returncode == 0, done.stderr[-3000:]
    return runner, ini, reference


@pytest.mark.slow
@pytest.mark.parametrize(("point", "step"), KILLS, ids=[p for p, _ in KILLS])
def test_killed_anywhere_the_resumed_run_ends_as_an_uninterrupted_one(
    point: str, step: int, harness: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """SIGKILL at ``point``, resume with the same command: the run ends as if never interrupted.

    Guaranteed (op determinism on, same machine and TensorFlow build, one device): the resumed
    run's final checkpoint (weights, optimiser state, step, dropout RNG) and ``model.keras`` are
    bitwise equal to an uninterrupted run's; ``training.csv`` has every step once and
    ``validation.csv`` every validation once, with the uninterrupted run's values; the best
    checkpoint and ``best.json`` are the uninterrupted run's; the resume takes over the killed
    run's lock with a warning and no temporary file, orphan checkpoint or lock file is left.
    Without op determinism the same holds up to floating-point reassociation in multithreaded
    kernels (the values agree to about 1e-6).
    """
    runner, ini, reference = harness
    model_dir = tmp_path / "run"
    killed = _run(runner, ini, model_dir, f"{point}:{step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (model_dir / ".tfuq.lock").is_file()  # killed holding the lock
    _check_killed_state(point, model_dir)

    resumed = _run(runner, ini, model_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the lock left by a run that ended without releasing it" in resumed.stderr

    logs, ref_logs = model_dir / "logs", reference / "logs"
    for name, steps in (("training.csv", list(range(1, 13))), ("validation.csv", list(range(2, 13, 2)))):
        rows = (logs / name).read_text().splitlines()
        assert [int(r.split(",")[0]) for r in rows[1:]] == steps, name  # every step once, in order
        assert rows == (ref_logs / name).read_text().splitlines(), name  # the same values
    assert _strays(model_dir) == []

    best = json.loads((model_dir / "checkpoints" / "best" / "best.json").read_text())
    ref_best = json.loads((reference / "checkpoints" / "best" / "best.json").read_text())
    assert (best["step"], best["val_loss"]) == (ref_best["step"], ref_best["val_loss"])
    ours, theirs = _tensors(Path(best["checkpoint"])), _tensors(Path(ref_best["checkpoint"]))
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)

    assert checkpoint_steps(model_dir / "checkpoints")[-1] == 12
    ours, theirs = (
        _tensors(model_dir / "checkpoints" / "ckpt-12"),
        _tensors(reference / "checkpoints" / "ckpt-12"),
    )
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    for a, b in zip(_network_weights(model_dir), _network_weights(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (model_dir / "training_config.ini").read_text().replace(str(model_dir), "X") == (
        reference / "training_config.ini"
    ).read_text().replace(str(reference), "X")
