"""MC dropout layers: contract, identity when off, mask statistics, channel sharing, seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from utils import run_layer_test

from tfuq.layers import MCDropout, MCSpatialDropout2D, MCSpatialDropout3D, set_mc_sampling

SHAPES = {MCDropout: (2, 6), MCSpatialDropout2D: (2, 5, 4, 3), MCSpatialDropout3D: (2, 4, 3, 5, 3)}
TABLE = list(itertools.product(SHAPES, ["float32", "float64"]))


@pytest.mark.parametrize(("cls", "dtype"), TABLE)
def test_layer_contract(cls, dtype, tmp_path):
    layer = run_layer_test(
        cls,
        {"rate": 0.4, "seed": 3, "dtype": dtype},
        input_shape=SHAPES[cls],
        expected_output_shape=SHAPES[cls],
        tmp_path=tmp_path,
        input_dtype=dtype,
        expected_output_dtype=dtype,
        expected_weight_names=set(),
    )
    assert layer.get_config()["seed"] == 3 and layer.get_config()["rate"] == 0.4


@pytest.mark.parametrize("cls", list(SHAPES))
def test_identity_when_not_training_and_mc_off(cls):
    x = np.random.default_rng(0).normal(size=SHAPES[cls]).astype("float32")
    layer = cls(0.5, seed=1)
    np.testing.assert_array_equal(layer(x).numpy(), x)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)


@pytest.mark.parametrize("cls", list(SHAPES))
@pytest.mark.parametrize("switch", ["training", "mc"])
def test_samples_differ_when_active(cls, switch):
    x = np.ones(SHAPES[cls], "float32") + 0.1
    layer = cls(0.5, seed=1)
    kwargs = {"training": True} if switch == "training" else {}
    if switch == "mc":
        set_mc_sampling(layer, True)
    a, b = layer(x, **kwargs).numpy(), layer(x, **kwargs).numpy()
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, x)


@pytest.mark.parametrize(
    ("cls", "shape"), [(MCSpatialDropout2D, (32, 3, 4, 16)), (MCSpatialDropout3D, (32, 2, 3, 2, 16))]
)
def test_spatial_mask_is_channel_wise_with_rate_p(cls, shape):
    rate = 0.3
    layer = cls(rate, seed=7)
    layer.mc_active = True
    x = np.ones(shape, "float32")
    dropped = []
    for _ in range(20):
        y = layer(x).numpy()
        flat = y.reshape(shape[0], -1, shape[-1])  # (B, voxels, C)
        # Every voxel of a (sample, channel) shares the draw: 0 or 1/(1-rate).
        np.testing.assert_array_equal(flat, np.broadcast_to(flat[:, :1], flat.shape))
        np.testing.assert_allclose(np.unique(flat), [0.0, 1 / (1 - rate)], rtol=1e-6)
        dropped.append(np.mean(flat[:, 0] == 0))
    # 20 x 512 channel draws: standard error ~0.0045.
    assert np.mean(dropped) == pytest.approx(rate, abs=0.02)


def test_dense_mask_is_elementwise_with_rate_p():
    layer = MCDropout(0.25, seed=5)
    y = layer(np.ones((64, 256), "float32"), training=True).numpy()
    assert np.mean(y == 0) == pytest.approx(0.25, abs=0.01)  # 16384 draws, s.e. ~0.0034
    assert np.mean(y, dtype="float64") == pytest.approx(1.0, abs=0.02)  # inverted dropout
    assert all(0 < np.mean(row == 0) < 1 for row in y[:4])  # not shared within a sample


def test_seeded_layers_repeat_and_different_seeds_differ():
    x = np.ones((4, 3, 3, 8), "float32")
    a = MCSpatialDropout2D(0.5, seed=11)(x, training=True).numpy()
    b = MCSpatialDropout2D(0.5, seed=11)(x, training=True).numpy()
    c = MCSpatialDropout2D(0.5, seed=12)(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 1.0}, "rate"),
        ({"rate": -0.1}, "rate"),
        ({"rate": True}, "rate"),
        ({"rate": 0.1, "seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MCDropout(**kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="rank 5"):
        MCSpatialDropout3D(0.1)(np.zeros((1, 4, 4, 2), "float32"))
