"""Replica rows of dropout noise: R replicas together draw the masks of one device.

A real ``MirroredStrategy`` needs logical devices set before TensorFlow
starts (see ``tests/training/test_distributed_training.py``, which trains
with dropout on); here a stand-in replica context tells the layers which
replica they run on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfuq.layers import (
    ConcreteDropout,
    ConcreteSpatialDropout3D,
    MCDropout,
    MCSpatialDropout2D,
    MCSpatialDropout3D,
)
from tfuq.layers.replica_noise import replica_count, replica_rows

REPLICAS, ROWS = 2, 2  # a global batch of 4 windows over 2 replicas


class _Replica:
    """The replica context of replica ``index`` of ``replicas``, as tf.distribute gives it."""

    def __init__(self, replicas: int, index: int) -> None:
        self.num_replicas_in_sync = replicas
        self.replica_id_in_sync_group = tf.constant(index)


def _on_replica(monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: _Replica(REPLICAS, index))


def test_replica_rows_are_the_rows_of_the_global_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    def draw(shape: tuple[Any, ...]) -> Any:
        return keras.random.uniform(shape, seed=keras.random.SeedGenerator(5))

    assert replica_count() == 1
    np.testing.assert_array_equal(replica_rows(draw, (3, 2)), draw((3, 2)))  # no strategy: a plain draw
    one_device = np.asarray(draw((REPLICAS * ROWS, 1, 7)))
    for index in range(REPLICAS):
        _on_replica(monkeypatch, index)
        assert replica_count() == REPLICAS
        part = replica_rows(draw, (ROWS, 1, 7))
        np.testing.assert_array_equal(part, one_device[index * ROWS : (index + 1) * ROWS])


LAYERS: dict[str, tuple[Callable[[], keras.layers.Layer], tuple[int, ...]]] = {
    "mc": (lambda: MCDropout(0.4, seed=3), (6,)),
    "mc_spatial_2d": (lambda: MCSpatialDropout2D(0.4, seed=3), (3, 3, 5)),
    "mc_spatial_3d": (lambda: MCSpatialDropout3D(0.4, seed=3), (3, 3, 3, 5)),
    "concrete": (lambda: ConcreteDropout(keras.layers.Dense(2), seed=3), (6,)),
    "concrete_spatial_3d": (
        lambda: ConcreteSpatialDropout3D(keras.layers.Conv3D(2, 1), seed=3),
        (3, 3, 3, 5),
    ),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_replicas_drop_like_one_device(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, window = LAYERS[name]
    x = np.random.default_rng(0).normal(size=(REPLICAS * ROWS, *window)).astype("float32")

    def layer() -> keras.layers.Layer:
        keras.utils.set_random_seed(1)  # the same weights and seed state for every replica
        built = make()
        built.build((None, *window))
        return built

    one_device = np.asarray(layer()(x, training=True))
    parts = []
    for index in range(REPLICAS):
        replica = layer()
        _on_replica(monkeypatch, index)
        rows = slice(index * ROWS, (index + 1) * ROWS)
        parts.append(np.asarray(replica(x[rows], training=True)))
        np.testing.assert_allclose(parts[-1], one_device[rows], rtol=1e-6, atol=1e-7)
        if name.startswith("mc"):  # the kept units are x / (1 - rate) either way: bit for bit
            np.testing.assert_array_equal(parts[-1], one_device[rows])
    if name.startswith("mc"):  # each replica has its own masks (a plain draw repeats replica 0's)
        assert np.any((parts[0] == 0) != (parts[1] == 0))
