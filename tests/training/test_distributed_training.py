"""tf.distribute on CPU: MirroredStrategy over 2 logical CPUs, MultiWorkerMirroredStrategy with 2 workers.

Each test runs in fresh subprocesses, because logical devices and the
multi-worker collective runtime must be configured before TensorFlow starts.
The networks use instance normalisation so that one step is the same
function of the global batch however it is split (BatchNorm statistics are
per replica); dropout masks are (each replica draws its rows of the global
batch's masks, :mod:`tfuq.layers.replica_noise`), but the older tests below
keep dropout off.

What remains is float error: a replica differentiates its own rows and the
replicas' gradients are summed, where one device differentiates the whole
batch (other kernel paths, other summation orders). W workers and one
process over W devices run the same per-replica computations, so they agree
bit for bit; one device agrees to a stated tolerance.
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


def _tfuq_train(ini: Path, overrides: list[str]) -> list[str]:
    args = [str(Path(sys.executable).with_name("tfuq")), "train", str(ini)]
    for item in overrides:
        args += ["--set", item]
    return args


def _rows(path: Path) -> np.ndarray:
    """The numbers of a CSV log, one row per step."""
    return np.array([[float(v) for v in line.split(",")] for line in path.read_text().splitlines()[1:]])


def _weights(run: Path) -> list[np.ndarray]:
    from tfuq.model_store import load_model

    return load_model(run / "model.keras", compile=False).get_weights()


def _assert_same_training(run: Path, reference: Path, initial: list[np.ndarray]) -> None:
    """``run`` trained like ``reference`` up to the float error of splitting the batch (module notes).

    The weights' difference is measured against the update ``w - w0`` (w0:
    the seeded initial network), per element and in norm: at most 1e-5 of
    the update (measured: 6e-7 per element, 3e-6 in norm); the logged
    losses agree to 1e-6 relative.
    """
    got, want = _weights(run), _weights(reference)
    assert len(got) == len(want) == len(initial) > 0
    update = max(float(np.abs(w - w0).max()) for w, w0 in zip(want, initial, strict=True))
    assert update > 1e-3  # the steps moved the weights: the comparison is of gradients, not of w0
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * update)
    norm = np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(got, want, strict=True)))
    moved = np.sqrt(sum(float(np.sum((w - w0) ** 2)) for w, w0 in zip(want, initial, strict=True)))
    assert norm <= 1e-5 * moved
    for log in ("training.csv", "validation.csv"):
        np.testing.assert_allclose(_rows(run / "logs" / log), _rows(reference / "logs" / log), rtol=1e-6)


#: SGD: the update is lr times the gradient, so the weights differ by the gradients' float error
#: (Adam divides each component by its own running scale, which turns the relative float error of a
#: small gradient component into an update error of lr times that relative error: 1e-3 of the update
#: measured here). Four phantom subjects: 3 for training, 1 for validation.
SAME_AS_ONE = [
    "NETWORK.feature_norm=instance",  # BatchNorm statistics are per replica
    "UNCERTAINTY.dropout=mc",  # each replica draws its rows of the global batch's masks
    "UNCERTAINTY.dropout_rate=0.2",
    "TRAINING.optimiser=sgd",
    "TRAINING.lr=0.01",
    "NETWORK.batch_size=2",
    "PHANTOM.num_subjects=4",
    "TRAINING.exclude_fraction_for_validation=0.25",
    "TRAINING.validation_every_n=1",
]


@pytest.mark.slow
def test_multi_worker_from_the_command_line(tiny_ini: Path, tmp_path: Path) -> None:
    """Two real `tfuq train` processes with TF_CONFIG train like one process on the same global batches.

    The workers run 2 steps, then resume to step 3 (replaying the window
    stream), validating at every step. One `tfuq train` process over two
    CPU devices (``mirrored``: the same two per-replica batches) ends with
    the same weights and logs bit for bit; one process on one device (one
    batch of 2 windows) within the float error of splitting the batch.
    """
    import keras

    from tfuq.networks import build_model

    _phantom(tiny_ini, SAME_AS_ONE)
    runs = {name: tmp_path / name for name in ("one_device", "mirrored", "workers")}
    for name in ("one_device", "mirrored"):
        args = [
            *SAME_AS_ONE,
            "TRAINING.max_iter=3",
            f"SYSTEM.model_dir={runs[name]}",
            f"SYSTEM.strategy={name}",
        ]
        if name == "mirrored":
            args.append("SYSTEM.cpu_devices=2")
        proc = subprocess.run(
            _tfuq_train(tiny_ini, args), capture_output=True, text=True, env=_env(), timeout=600
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    for steps in (2, 3):
        workers = [
            *SAME_AS_ONE,
            f"TRAINING.max_iter={steps}",
            "TRAINING.save_every_n=2",
            f"SYSTEM.model_dir={runs['workers']}",
            "SYSTEM.strategy=multi_worker",
        ]
        for code, out, err in _two_workers(lambda i, args=workers: _tfuq_train(tiny_ini, args)):
            assert code == 0, (out + err)[-3000:]
            assert "CollectiveAllReduceStrategy with 2 replica(s)" in out + err
    assert "resuming from step 2" in out + err
    for got, want in zip(_weights(runs["workers"]), _weights(runs["mirrored"]), strict=True):
        np.testing.assert_array_equal(got, want)
    for log in ("training.csv", "validation.csv"):
        assert (runs["workers"] / "logs" / log).read_text() == (runs["mirrored"] / "logs" / log).read_text()
    config = load_config(tiny_ini, SAME_AS_ONE)
    keras.utils.set_random_seed(config.system.seed)
    initial = build_model(config).get_weights()
    _assert_same_training(runs["workers"], runs["one_device"], initial)
    _assert_same_training(runs["mirrored"], runs["one_device"], initial)


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
