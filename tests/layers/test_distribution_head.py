"""DistributionHead: shapes, serialisation, initial parameters, float32 under mixed precision."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from utils import run_layer_test

from tfuq.distributions import constrain, params_size
from tfuq.layers import DistributionHead

TABLE = list(
    itertools.product(["normal", "laplace", "generalized_normal", "point"], [2, 3], ["float32", "float64"])
)


@pytest.mark.parametrize(("family", "rank", "dtype"), TABLE)
def test_layer_contract(family, rank, dtype, tmp_path):
    spatial = (5, 4, 3)[:rank]
    run_layer_test(
        DistributionHead,
        {"family": family, "rank": rank, "dtype": dtype},
        input_shape=(2, *spatial, 4),
        expected_output_shape=(2, *spatial, params_size(family)),
        tmp_path=tmp_path,
        input_dtype=dtype,
        expected_output_dtype=dtype,
        expected_weight_names={"kernel", "bias"},
    )


def test_kernel_size_three_keeps_spatial_shape(tmp_path):
    run_layer_test(
        DistributionHead,
        {"family": "normal", "rank": 3, "kernel_size": 3, "init_scale": 0.2},
        input_shape=(1, 4, 5, 6, 2),
        expected_output_shape=(1, 4, 5, 6, 2),
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("family", ["normal", "laplace", "generalized_normal"])
@pytest.mark.parametrize("init_scale", [0.1, 0.5, 1.0])
def test_initial_parameters(family, init_scale):
    head = DistributionHead(family, rank=2, init_scale=init_scale)
    params = head(np.zeros((1, 3, 3, 8), "float32"))  # zero features: bias only
    p = constrain(family, params)
    np.testing.assert_allclose(p["scale"].numpy(), init_scale, rtol=1e-5)
    np.testing.assert_array_equal(p["loc"].numpy(), 0.0)
    if family == "generalized_normal":
        np.testing.assert_allclose(p["power"].numpy(), 2.0, rtol=1e-6)


def test_initial_scales_are_moderate_on_random_features():
    head = DistributionHead("generalized_normal", rank=3, init_scale=0.5)
    features = np.random.default_rng(0).normal(size=(2, 4, 4, 4, 16)).astype("float32")
    p = constrain("generalized_normal", head(features))
    scale, power = p["scale"].numpy(), p["power"].numpy()
    assert scale.min() > 0.5 / 3 and scale.max() < 0.5 * 3
    assert power.min() > 0.8 and power.max() < 5.0


def test_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((4, 4, 3))
        features = keras.layers.Conv2D(8, 1)(inputs)
        head = DistributionHead("normal", rank=2)
        out = head(features)
        assert features.dtype == "bfloat16"
        assert out.dtype == "float32"
        assert head.compute_dtype == "float32" and head.conv.kernel.dtype == "float32"
        value = keras.Model(inputs, out)(np.ones((1, 4, 4, 3), "float32"))
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"family": "gauss"}, "family"),
        ({"family": "normal", "rank": 1}, "rank"),
        ({"family": "normal", "kernel_size": 2}, "kernel_size"),
        ({"family": "normal", "kernel_size": 1.0}, "kernel_size"),
        ({"family": "normal", "init_scale": 0.0}, "init_scale"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistributionHead(**kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="rank 5"):
        DistributionHead("normal", rank=3)(np.zeros((1, 4, 4, 2), "float32"))
