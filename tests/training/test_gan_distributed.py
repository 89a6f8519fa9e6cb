"""GAN trainers under MirroredStrategy over 2 logical CPUs: one step equals the one-device step.

Runs in a subprocess (logical devices must be set before TensorFlow starts).
Normalisation and dropout are off so that a step is the same function of the
global batch however it is split; SGD makes the step linear in the gradient.
"""

# ruff: noqa: E501 (the subprocess script)
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from tfuq.networks import UPGAN, PatchDiscriminator, Pix2PixGenerator
from tfuq.training.gan import GANTrainer
from tfuq.training.gan_upgan import UPGANTrainer

SHAPE = (32, 32, 1)
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (4, *SHAPE)).astype("float32")
y = np.concatenate([2 * x - 0.5, np.ones_like(x)], axis=-1)

def pix2pix(clip=0.0):
    g = Pix2PixGenerator(SHAPE, family="normal", depth=5, base_filters=4, normalization="none")
    d = PatchDiscriminator(SHAPE, condition_channels=1, base_filters=4, normalization="none")
    return GANTrainer(g, d, grad_clip_norm=clip), 1

def clipped():  # clipping the summed gradient, not each replica's half
    return pix2pix(clip=0.05)

def upgan():
    g = UPGAN(SHAPE, num_phases=2, depth=2, base_filters=4, normalization="none")
    ds = [PatchDiscriminator(SHAPE, base_filters=4, normalization="none", name=f"d{m}") for m in range(2)]
    return UPGANTrainer(g, ds, (1, 0)), 3  # step 0: phase 0 alone; step 1: fine-tuning

def sgd(count):
    return [keras.optimizers.SGD(0.1) for _ in range(count)]

out = {}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process (collective keys)
for name, make in (("pix2pix", pix2pix), ("clipped", clipped), ("upgan", upgan)):
    keras.utils.set_random_seed(1)
    with strategy.scope():
        mirrored, count = make()
        mirrored.compile(sgd(count), sgd(count), jit_compile=False)
    initial = [v.numpy() for v in mirrored.weights]
    trainable = [i for i, v in enumerate(mirrored.weights) if v.trainable]
    single, _ = make()
    single.compile(sgd(count), sgd(count))
    for a, b in zip(single.weights, initial):
        a.assign(b)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    mirrored.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    for _ in range(2):
        single.train_step((tf.constant(x), tf.constant(y)))
    out[name] = {
        "replicas": strategy.num_replicas_in_sync,
        "moved": max(float(np.max(np.abs(single.weights[i].numpy() - initial[i]))) for i in trainable),
        "diff": max(float(np.max(np.abs(single.weights[i].numpy() - mirrored.weights[i].numpy()))) for i in trainable),
    }
json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_mirrored_steps_equal_one_device_steps(tmp_path: Path) -> None:
    script, result = tmp_path / "mirrored.py", tmp_path / "result.json"
    script.write_text(SCRIPT, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, str(script), str(result)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(result.read_text(encoding="utf-8"))
    assert set(out) == {"pix2pix", "clipped", "upgan"}
    for name, values in out.items():
        assert values["replicas"] == 2, name
        assert values["moved"] > 1e-4, name  # the steps did change the weights
        assert values["diff"] < 1e-3 * values["moved"], (name, values)  # float32 summation order only
