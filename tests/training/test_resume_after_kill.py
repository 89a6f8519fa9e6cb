"""Resume after SIGKILL: a killed `tfuq train` continues from its last complete checkpoint, exactly."""

from __future__ import annotations

import csv
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
