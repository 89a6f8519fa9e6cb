"""tf.distribute on CPU: MirroredStrategy over 2 logical CPUs, MultiWorkerMirroredStrategy with 2 workers.

Each test runs in fresh subprocesses, because logical devices and the
multi-worker collective runtime must be configured before TensorFlow starts.
Dropout is off and the networks use instance normalisation so that one step
is the same function of the global batch however it is split (BatchNorm
statistics and dropout masks are per replica).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tfuq.config import load_config

pytest.importorskip("tensorflow")

EXACT = ["UNCERTAINTY.dropout=none", "NETWORK.feature_norm=instance", "TRAINING.max_iter=1"]

MIRRORED_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tfuq.config import load_config
from tfuq.data.pipeline import make_training_dataset
from tfuq.data.split import TRAINING, read_split, subjects_in_phase
from tfuq.losses import NLLLoss
from tfuq.networks import build_model
from tfuq.stages.train import run_training
from tfuq.model_store import read_target_normalisation

ini, out = sys.argv[1], sys.argv[2]
overrides = sys.argv[3:]
results = {}
for kind in ("mirrored",):
    config = load_config(ini, overrides + [f"SYSTEM.model_dir={out}/{kind}", f"SYSTEM.strategy={kind}"])
    result = run_training(config)
    replicas = result.trainer.distribute_strategy.num_replicas_in_sync
    loss = float(open(f"{out}/{kind}/logs/training.csv").read().splitlines()[1].split(",")[1])
    weights = [np.asarray(v.numpy()).tolist() for v in result.trainer.network.trainable_variables]
    results[kind] = {"replicas": replicas, "loss": loss, "weights": weights}

# one device, by hand: the same initial network, one SGD step on the global batch's mean NLL
config = load_config(ini, overrides + [f"SYSTEM.model_dir={out}/mirrored"])
keras.utils.set_random_seed(config.system.seed)
network = build_model(config)
ids = subjects_in_phase(read_split(config.system.dataset_split_file), TRAINING)
target = read_target_normalisation(config.model_dir)
x, y = next(iter(make_training_dataset(config, ids, target_normalisation=target)))
with tf.GradientTape() as tape:
    loss = NLLLoss(config.family)(y, network(x, training=True))
grads = tape.gradient(loss, network.trainable_variables)
lr = config.training.lr
trained = [w.numpy() - lr * g.numpy() for w, g in zip(network.trainable_variables, grads)]
initial = [w.numpy().tolist() for w in network.trainable_variables]
results["oracle"] = {"loss": float(loss), "weights": [w.tolist() for w in trained], "initial": initial}
json.dump(results, open(f"{out}/results.json", "w"))
"""

WORKER_SCRIPT = """
import sys
from tfuq.config import load_config
from tfuq.training.strategy import make_strategy

ini, out, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = load_config(ini, sys.argv[4:])
strategy = make_strategy(config.system)  # before any other TensorFlow operation
import numpy as np
from tfuq.stages.train import run_training

result = run_training(config, strategy=strategy)
weights = result.trainer.get_weights()  # the network's, and a GAN's discriminators'
np.savez(f"{out}/worker{index}.npz", *weights)
print("replicas", strategy.num_replicas_in_sync, "step", result.final_step)
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    env.pop("TF_CONFIG", None)
    return env


def _phantom(ini: Path, overrides: list[str] | None = None) -> None:
    """Generate the phantom once, before the subprocesses race to do it."""
    from tfuq.data.sources import resolve_sources

    resolve_sources(load_config(ini, overrides or []))


def test_mirrored_two_cpus_same_first_step_as_one_device(tiny_ini: Path, tmp_path: Path) -> None:
    _phantom(tiny_ini)
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    overrides = [*EXACT, "TRAINING.optimiser=sgd", "TRAINING.lr=0.1", "NETWORK.batch_size=4"]
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_ini), str(tmp_path), *overrides],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    mirrored, one_device = results["mirrored"], results["oracle"]
    assert mirrored["replicas"] == 2
    assert mirrored["loss"] == pytest.approx(one_device["loss"], rel=1e-5)
    step = 0.0
    for a, b, w0 in zip(mirrored["weights"], one_device["weights"], one_device["initial"], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
        step = max(step, float(np.abs(np.asarray(b) - np.asarray(w0)).max()))
    assert step > 1e-4  # the step moved the weights: the comparison is of gradients, not of w0


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _two_workers(command: Callable[[int], list[str]]) -> list[tuple[int, str, str]]:
    """Run ``command(index)`` as worker 0 and 1 of one localhost TF_CONFIG cluster; (code, out, err) each."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(
            subprocess.Popen(
                command(index), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=600))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]


#: UP-GAN (configs/demo_upgan.ini) made tiny: 2 phases of 1 step each, then fine-tuning, so three
#: steps cross both stage boundaries (each stage's step is traced on its own).
UPGAN_TINY = [
    "NETWORK.num_phases=2",
    "NETWORK.feature_norm=none",
    "NETWORK.batch_size=2",
    "GAN.phase_iter=1",
    "PHANTOM.num_subjects=4",
]


@pytest.mark.slow
@pytest.mark.parametrize("application", ["regression", "upgan"])
def test_multi_worker_two_local_processes_end_with_identical_weights(
    application: str, tiny_ini: Path, tmp_path: Path
) -> None:
    ini, extra = tiny_ini, [*EXACT, "NETWORK.batch_size=2"]
    if application == "upgan":
        ini, extra = Path(__file__).resolve().parents[2] / "configs" / "demo_upgan.ini", UPGAN_TINY
    overrides = [
        *extra,
        "TRAINING.max_iter=3",
        "TRAINING.save_every_n=2",
        "SYSTEM.strategy=multi_worker",
        f"SYSTEM.model_dir={tmp_path / 'run'}",
    ]
    _phantom(ini, [o for o in overrides if not o.startswith("SYSTEM.strategy")])
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    results = _two_workers(
        lambda i: [sys.executable, str(script), str(ini), str(tmp_path), str(i), *overrides]
    )
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert "replicas 2 step 3" in out
    first, second = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert len(first.files) == len(second.files) > 0
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])
    run = tmp_path / "run"
    assert (run / "model.keras").is_file() and (run / "checkpoints" / "ckpt-3.index").is_file()
    assert len((run / "logs" / "training.csv").read_text().splitlines()) == 4
    # only the chief wrote (and locked) the model_dir: no worker waited for another's lock
    assert (run / "training_config.ini").is_file() and not (run / ".tfuq.lock").exists()


@pytest.mark.slow
def test_multi_worker_from_the_command_line(tiny_ini: Path, tmp_path: Path) -> None:
    """Two real `tfuq train` processes with TF_CONFIG (the strategy is made before any TF op)."""
    overrides = [
        *EXACT,
        "NETWORK.batch_size=2",
        "TRAINING.max_iter=3",
        f"SYSTEM.model_dir={tmp_path / 'run'}",
    ]
    _phantom(tiny_ini, overrides)
    args = [
        str(Path(sys.executable).with_name("tfuq")),
        "train",
        str(tiny_ini),
        "--set",
        "SYSTEM.strategy=multi_worker",
    ]
    for item in overrides:
        args += ["--set", item]
    for code, out, err in _two_workers(lambda i: args):
        assert code == 0, (out + err)[-3000:]
        assert "CollectiveAllReduceStrategy with 2 replica(s)" in out + err
    run = tmp_path / "run"
    assert (run / "model.keras").is_file() and len(
        (run / "logs" / "training.csv").read_text().splitlines()
    ) == 4


def test_mirrored_over_cpu_devices_from_the_command_line(tiny_ini: Path, tmp_path: Path) -> None:
    """[SYSTEM] cpu_devices = 2 with strategy = mirrored: two replicas from `tfuq train`, no wrapper."""
    overrides = [*EXACT, "NETWORK.batch_size=2", f"SYSTEM.model_dir={tmp_path / 'run'}"]
    _phantom(tiny_ini, overrides)
    args = [str(Path(sys.executable).with_name("tfuq")), "train", str(tiny_ini)]
    for item in (*overrides, "SYSTEM.strategy=mirrored", "SYSTEM.cpu_devices=2"):
        args += ["--set", item]
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "MirroredStrategy with 2 replica(s), global batch 2" in proc.stdout + proc.stderr
