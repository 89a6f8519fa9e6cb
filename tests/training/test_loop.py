"""``distributed_fit``: the multi-worker training loop, driven here under the default strategy.

The loop is strategy-agnostic (``strategy.run`` and replica means), so its
logic is tested in-process; tests/training/test_distributed_training.py runs
it with two real workers (slow).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfuq.networks import UPGAN, PatchDiscriminator
from tfuq.training.gan_upgan import UPGANTrainer
from tfuq.training.loop import distributed_fit

SHAPE = (32, 32, 1)


def _upgan() -> UPGANTrainer:
    generator = UPGAN(SHAPE, num_phases=2, depth=2, base_filters=4, normalization="none")
    discriminators = [
        PatchDiscriminator(SHAPE, base_filters=4, normalization="none", name=f"d{m}") for m in range(2)
    ]
    trainer = UPGANTrainer(
        generator, discriminators, (1, 1)
    )  # step 0: phase 0; step 1: phase 1; then fine-tuning
    trainer.compile(
        [keras.optimizers.SGD(0.1) for _ in range(3)], [keras.optimizers.SGD(0.1) for _ in range(3)]
    )
    return trainer


class _Stages(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.stages: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.stages.append(float(logs["stage"]))


def test_distributed_fit_traces_a_step_per_upgan_stage_and_equals_eager_steps() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (2, *SHAPE)).astype("float32")
    y = np.concatenate([2.0 * x - 0.5, np.ones_like(x)], axis=-1)
    keras.utils.set_random_seed(1)
    looped = _upgan()
    eager = _upgan()
    looped(x[:1])  # build both, then give them the same weights
    eager(x[:1])
    for a, b in zip(eager.weights, looped.weights, strict=True):
        a.assign(b)
    initial = [v.numpy() for v in looped.weights]
    stages = _Stages()
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    # Three steps cross both stage boundaries (a step traced once would fail at the first one).
    distributed_fit(
        looped,
        tf.distribute.get_strategy(),
        data,
        epochs=1,
        initial_epoch=0,
        steps_per_epoch=3,
        callbacks=[stages],
    )
    assert stages.stages == [0.0, 1.0, 2.0]
    for _ in range(3):  # oracle: the same three steps, eagerly
        eager.train_step((tf.constant(x), tf.constant(y)))
    moved = max(float(np.abs(v.numpy() - w).max()) for v, w in zip(looped.weights, initial, strict=True))
    assert moved > 1e-4
    for a, b in zip(looped.weights, eager.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
