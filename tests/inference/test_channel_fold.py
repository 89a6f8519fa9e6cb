"""T channel-dropout passes folded into one convolution: equal to the tiled suffix for the same masks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfuq.inference.channel_fold as channel_fold
from tfuq.inference.channel_fold import _plan, fold_channel_dropout
from tfuq.inference.mc import seeded_generators
from tfuq.inference.prefix import split_at_stochastic
from tfuq.layers import (
    ConcreteSpatialDropout3D,
    DilatedConv3D,
    DistributionHead,
    MCDropout,
    MCSpatialDropout2D,
    MCSpatialDropout3D,
    mc_sampling,
)
from tfuq.networks import HighRes3DNet


def _suffix_3d() -> keras.Model:
    """Dropout -> dilated 3^3 conv with bias and activation -> BN -> head (a deterministic rest)."""
    keras.utils.set_random_seed(4)
    x = keras.Input((6, 7, 5, 3))
    h = MCSpatialDropout3D(0.4, seed=1)(x)
    h = DilatedConv3D(4, 3, dilation_rate=2, padding="same", activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(x, DistributionHead("normal")(h))
    bn = model.layers[3]
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    return model


def _suffix_2d() -> keras.Model:
    keras.utils.set_random_seed(5)
    x = keras.Input((9, 8, 5))
    h = MCSpatialDropout2D(0.5, seed=2)(x)
    h = keras.layers.Conv2D(6, 1)(h)
    return keras.Model(x, DistributionHead("laplace", rank=2)(keras.layers.ReLU()(h)))


def _suffix_bn(spatial_rest: bool) -> keras.Model:
    """Dropout -> conv -> BN -> ReLU (folded into the convolution) -> [3^3 conv ->] head."""
    keras.utils.set_random_seed(6)
    x = keras.Input((5, 6, 7, 4))
    h = MCSpatialDropout3D(0.3, seed=3)(x)
    h = keras.layers.Conv3D(5, 1)(h)
    bn = keras.layers.BatchNormalization()
    h = keras.layers.ReLU()(bn(h))
    if spatial_rest:  # not pointwise: the result is transposed to (T * B, ...) first
        h = keras.layers.Conv3D(3, 3, padding="same")(h)
    model = keras.Model(x, DistributionHead("normal")(h))
    rng = np.random.default_rng(9)
    bn.gamma.assign(rng.uniform(0.5, 2, 5).astype("float32"))
    bn.beta.assign(rng.normal(size=5).astype("float32"))
    bn.moving_mean.assign(rng.normal(size=5).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.2, 3, 5).astype("float32"))
    return model


def _naive(model: keras.Model, h: np.ndarray, copies: int, seed: int) -> np.ndarray:
    with seeded_generators(model, seed), mc_sampling(model):
        return keras.ops.convert_to_numpy(model(tf.concat([h] * copies, 0), training=False))


def _folded(model: keras.Model, h: np.ndarray, copies: int, seed: int) -> np.ndarray:
    run = fold_channel_dropout(model)
    assert run is not None
    with seeded_generators(model, seed), mc_sampling(model):
        return keras.ops.convert_to_numpy(run(tf.constant(h), copies))


@pytest.mark.parametrize(
    "make, batch, copies",
    [
        (_suffix_3d, 1, 5),
        (_suffix_3d, 2, 3),
        (_suffix_2d, 3, 4),
        (lambda: _suffix_bn(False), 1, 6),
        (lambda: _suffix_bn(False), 2, 2),
        (lambda: _suffix_bn(True), 2, 3),
    ],
)
@pytest.mark.parametrize(
    "chunk_bytes", [4 << 20, 4 * 7 * 40]
)  # one voxel chunk; chunks of a few voxels + a remainder
def test_folded_passes_equal_the_tiled_suffix_for_the_same_masks(
    monkeypatch, make, batch: int, copies: int, chunk_bytes: int
) -> None:
    """Oracle: the suffix itself on the input tiled ``copies`` times, same seeded dropout stream."""
    monkeypatch.setattr(channel_fold, "_CHUNK_BYTES", chunk_bytes)
    model = make()
    shape = (batch, *model.inputs[0].shape[1:])
    h = np.random.default_rng(0).normal(size=shape).astype("float32")
    naive = _naive(model, h, copies, seed=7)
    folded = _folded(model, h, copies, seed=7)
    assert folded.shape == naive.shape == (copies * batch, *shape[1:-1], model.outputs[0].shape[-1])
    np.testing.assert_allclose(folded, naive, rtol=1e-5, atol=1e-5)
    # the rows really differ between passes (masks were drawn), and another seed draws others
    rows = naive.reshape(copies, batch, -1)
    assert np.abs(rows[0] - rows[1]).max() > 1e-3
    assert np.abs(_folded(model, h, copies, seed=8) - folded).max() > 1e-3


def test_the_head_placement_of_highres3dnet_folds() -> None:
    keras.utils.set_random_seed(0)
    model = HighRes3DNet(
        (8, 8, 8, 1), base_filters=4, blocks_per_stack=1, dropout={"kind": "mc", "rate": 0.5}
    )
    _, suffix = split_at_stochastic(model)
    assert fold_channel_dropout(suffix) is not None
    plan = _plan(suffix)  # conv -> BN -> ReLU absorbed, then a pointwise head on the (1, X, Y, Z * T, F) view
    assert plan.batch_norm is not None and plan.relu
    assert plan.pointwise == (model.layers[-1],)  # the final 1^3 convolution


def test_what_does_not_fold_gives_none() -> None:
    x = keras.Input((6, 6, 6, 2))
    # element-wise dropout: one mask per voxel, not per channel
    assert fold_channel_dropout(keras.Model(x, keras.layers.Conv3D(2, 1)(MCDropout(0.5)(x)))) is None
    # concrete dropout wraps the convolution: its rate is learnt per layer, not this pattern
    concrete = ConcreteSpatialDropout3D(keras.layers.Conv3D(2, 1), seed=0)(x)
    assert fold_channel_dropout(keras.Model(x, concrete)) is None
    # the rest reads the cut tensor again (a skip connection past the dropout)
    y = keras.layers.Conv3D(2, 1)(MCSpatialDropout3D(0.5)(x))
    assert fold_channel_dropout(keras.Model(x, keras.layers.Add()([y, x]))) is None
    # a second stochastic layer after the convolution
    z = MCSpatialDropout3D(0.5)(keras.layers.Conv3D(2, 1)(MCSpatialDropout3D(0.5)(x)))
    assert fold_channel_dropout(keras.Model(x, z)) is None
    # a strided convolution, and rate 0
    assert (
        fold_channel_dropout(keras.Model(x, keras.layers.Conv3D(2, 3, strides=2)(MCSpatialDropout3D(0.5)(x))))
        is None
    )
    assert fold_channel_dropout(keras.Model(x, keras.layers.Conv3D(2, 1)(MCSpatialDropout3D(0.0)(x)))) is None
