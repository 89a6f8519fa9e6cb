from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfuq.inference import (
    ALEATORIC_VAR,
    DECOMPOSITION_KEYS,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    decompose,
    decompose_moments,
)

SIZES = {"normal": 2, "laplace": 2, "generalized_normal": 3, "point": 1}


def _softplus(x):
    return np.logaddexp(0.0, x) + 1e-5


def _beta(raw):
    shift = np.log((2.0 - 0.1) / (10.0 - 2.0))
    return 0.1 + 9.9 / (1.0 + np.exp(-(raw + shift)))


def _oracle_moments(family, params):
    """Member means and variances from scipy.stats, independent of tfuq."""
    loc = params[..., 0]
    if family == "point":
        return loc, np.zeros_like(loc)
    scale = _softplus(params[..., 1])
    if family == "normal":
        var = stats.norm(loc, scale).var()
    elif family == "laplace":
        var = stats.laplace(loc, scale).var()
    else:
        var = stats.gennorm(_beta(params[..., 2]), loc, scale).var()
    return loc, var


def _random_params(family, shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = rng.normal(size=(*shape, SIZES[family]))
    params[..., 0] = 3.0 * params[..., 0] + 10.0
    return params.astype(dtype)


@pytest.mark.parametrize("family", sorted(SIZES))
def test_decompose_matches_numpy_oracle(family):
    params = _random_params(family, (7, 3, 4))
    out = decompose(family, params)
    means, variances = _oracle_moments(family, params)
    assert set(out) == set(DECOMPOSITION_KEYS)
    np.testing.assert_allclose(out[MEAN], means.mean(0), rtol=1e-12)
    np.testing.assert_allclose(out[EPISTEMIC_VAR], means.var(0), rtol=1e-10)
    # family.py casts its beta bounds through float32 (tf.cast of a Python float),
    # which limits the GGD variance to ~1e-7 relative accuracy even in float64.
    rtol = 1e-6 if family == "generalized_normal" else 1e-10
    np.testing.assert_allclose(out[ALEATORIC_VAR], variances.mean(0), rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(out[TOTAL_VAR], means.var(0) + variances.mean(0), rtol=rtol)
    for value in out.values():
        assert value.shape == (3, 4)
        assert value.dtype == tf.float64


def test_point_family_has_no_aleatoric_part():
    out = decompose("point", _random_params("point", (5, 6)))
    np.testing.assert_array_equal(out[ALEATORIC_VAR], 0.0)
    np.testing.assert_allclose(out[TOTAL_VAR], out[EPISTEMIC_VAR])


def test_total_var_is_variance_of_the_mixture():
    # Draw from the equal-weight mixture of 4 normals and compare variances.
    params = _random_params("normal", (4, 1), seed=3)
    loc, scale = params[:, 0, 0], _softplus(params[:, 0, 1])
    rng = np.random.default_rng(4)
    member = rng.integers(0, 4, size=400_000)
    draws = rng.normal(loc[member], scale[member])
    out = decompose("normal", params)
    np.testing.assert_allclose(float(out[TOTAL_VAR][0]), draws.var(), rtol=0.01)


def test_dtypes_and_tensor_input():
    params32 = tf.constant(_random_params("laplace", (3, 2, 2), dtype=np.float32))
    out = decompose("laplace", params32)
    assert out[TOTAL_VAR].dtype == tf.float32
    out_int = decompose("point", np.arange(6).reshape(3, 2, 1))
    assert out_int[MEAN].dtype == tf.float32
    np.testing.assert_allclose(out_int[EPISTEMIC_VAR], np.var([[0, 1], [2, 3], [4, 5]], axis=0))


def test_single_sample_has_zero_epistemic():
    out = decompose("normal", _random_params("normal", (1, 4)))
    np.testing.assert_array_equal(out[EPISTEMIC_VAR], 0.0)


def test_works_inside_tf_function():
    params = tf.constant(_random_params("generalized_normal", (5, 3), seed=2))
    graph_out = tf.function(lambda p: decompose("generalized_normal", p))(params)
    eager_out = decompose("generalized_normal", params)
    for key in DECOMPOSITION_KEYS:
        np.testing.assert_allclose(graph_out[key], eager_out[key], rtol=1e-12)


def test_decompose_moments_hand_fixture():
    out = decompose_moments([[1.0, 0.0], [3.0, 0.0]], [[0.5, 2.0], [1.5, 4.0]])
    np.testing.assert_allclose(out[MEAN], [2.0, 0.0])
    np.testing.assert_allclose(out[EPISTEMIC_VAR], [1.0, 0.0])
    np.testing.assert_allclose(out[ALEATORIC_VAR], [1.0, 3.0])
    np.testing.assert_allclose(out[TOTAL_VAR], [2.0, 3.0])


@pytest.mark.parametrize(
    ("family", "shape", "match"),
    [
        ("normal", (5, 3), "channels"),
        ("normal", (2,), "sample axis"),
        ("normal", (0, 4, 2), "no samples"),
        ("gamma", (3, 2), "Unknown distribution family"),
    ],
)
def test_bad_input_raises(family, shape, match):
    with pytest.raises(ValueError, match=match):
        decompose(family, np.zeros(shape))


def test_decompose_moments_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        decompose_moments(np.zeros((3, 2)), np.zeros((3, 4)))
