"""Tests for tfuq.networks.upgan."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from scipy import special
from test_unet import unet_count
from utils import assert_keras_roundtrip

from tfuq.distributions import BETA_MAX, BETA_MIN, SCALE_EPS
from tfuq.layers import mc_sampling
from tfuq.networks.unet import UNet
from tfuq.networks.upgan import UPGAN, UncertaintyAttention, uncertainty_attention

BETA_SHIFT = np.log((2.0 - BETA_MIN) / (BETA_MAX - 2.0))


def reference_phase_input(params, image):
    """NumPy/scipy oracle of UP-GAN eq. 3-4 for generalized-normal head channels."""
    params = params.astype("float64")
    mu = params[..., 0]
    alpha = np.logaddexp(0.0, params[..., 1]) + SCALE_EPS
    beta = BETA_MIN + (BETA_MAX - BETA_MIN) * special.expit(params[..., 2] + BETA_SHIFT)
    sigma = alpha * np.sqrt(special.gamma(3.0 / beta) / special.gamma(1.0 / beta))
    axes = tuple(range(1, mu.ndim))
    f = mu * sigma / sigma.sum(axis=axes, keepdims=True)
    return np.concatenate([f[..., None], image], axis=-1)


@pytest.mark.parametrize("shape", [(2, 6, 5), (1, 4, 3, 5)])
def test_phase_input_matches_numpy_reference(shape):
    rng = np.random.default_rng(0)
    params = rng.normal(size=(*shape, 3)).astype("float32")
    image = rng.normal(size=(*shape, 2)).astype("float32")
    got = keras.ops.convert_to_numpy(uncertainty_attention("generalized_normal", params, image))
    np.testing.assert_allclose(got, reference_phase_input(params, image), rtol=2e-5, atol=1e-7)
    # per image, the weights sigma / sum(sigma) sum to one: sum(f / mu) == 1
    mu = params[..., 0].astype("float64")
    share = got[..., 0] / mu
    np.testing.assert_allclose(share.reshape(shape[0], -1).sum(axis=1), 1.0, rtol=1e-4)


def test_phase_input_for_a_normal_family_uses_its_std():
    rng = np.random.default_rng(1)
    params = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    sigma = np.logaddexp(0.0, params[..., 1].astype("float64")) + SCALE_EPS
    expected = params[..., 0] * sigma / sigma.sum()
    got = keras.ops.convert_to_numpy(uncertainty_attention("normal", params, np.zeros((1, 4, 4, 1))))
    np.testing.assert_allclose(got[..., 0], expected, rtol=2e-5)
    with pytest.raises(ValueError, match="scale"):
        uncertainty_attention("point", params[..., :1], params)
    with pytest.raises(ValueError, match="scale"):
        UncertaintyAttention("point")


def test_cascade_feeds_each_phase_the_attention_of_the_previous_one():
    net = UPGAN((8, 8, 1), num_phases=3, depth=1, base_filters=4, output_all_phases=True)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 1)).astype("float32")
    phases = [keras.ops.convert_to_numpy(p) for p in net(x)]
    assert len(phases) == 3 and all(p.shape == (2, 8, 8, 3) for p in phases)
    for m in (1, 2):
        a_m = reference_phase_input(phases[m - 1], x).astype("float32")
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(net.generators[m](a_m)), phases[m], rtol=1e-4, atol=1e-5
        )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(net.generators[0](x)), phases[0], rtol=1e-6)


def test_counts_and_shapes():
    net = UPGAN((8, 8, 2), num_phases=2, depth=1, base_filters=4)
    assert net.output_shape == (None, 8, 8, 3)
    k = {"depth": 1, "base": 4, "k_body": 9, "k_edge": 9, "k_up": 9}
    assert net.count_params() == unet_count(2, 3, **k) + unet_count(3, 3, **k)
    assert all(isinstance(g, UNet) for g in net.generators)
    assert [g.input_shape[-1] for g in net.generators] == [2, 3]
    net3d = UPGAN((8, 8, 8, 1), num_phases=1, depth=1, base_filters=2, family="laplace")
    assert net3d.output_shape == (None, 8, 8, 8, 2)


def test_mc_sampling_and_determinism():
    net = UPGAN(
        (8, 8, 1), num_phases=2, depth=1, base_filters=4, dropout={"kind": "mc", "rate": 0.3, "seed": 0}
    )
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 1)).astype("float32")
    a, b = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    with mc_sampling(net):
        c, d = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    assert np.abs(c - d).max() > 1e-5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"family": "point"}, "scale"),
        ({"num_phases": 0}, "num_phases"),
        ({"image_shape": (12, 8, 1)}, "axis 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"image_shape": (8, 8, 1), **kwargs}
    with pytest.raises(ValueError, match=match):
        UPGAN(**kwargs)


def test_config_and_keras_round_trip(tmp_path):
    net = UPGAN(
        (8, 8, 1), num_phases=2, depth=1, base_filters=4, output_all_phases=True, dropout={"kind": "concrete"}
    )
    clone = UPGAN.from_config(json.loads(json.dumps(net.get_config())))
    assert clone.get_config() == net.get_config()
    x = np.random.default_rng(4).normal(size=(1, 8, 8, 1)).astype("float32")
    assert_keras_roundtrip(net, x, tmp_path)
