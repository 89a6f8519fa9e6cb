"""propagate (tfuq.inference.derived): eq. 15-17 on in-memory samples, non-voxelwise quantities."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfuq.inference import (
    ALEATORIC_VAR,
    DECOMPOSITION_KEYS,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    propagate,
)


def region_mean(mask):
    """A derived quantity reducing over voxels: the mean of y where ``mask`` is true."""
    where = tf.constant(np.asarray(mask, dtype=bool))
    return lambda y: tf.reduce_mean(tf.boolean_mask(y, where, axis=1), axis=1)


def _params(num=6, shape=(4, 5), seed=0):
    rng = np.random.default_rng(seed)
    params = rng.normal(size=(num, *shape, 2))
    params[..., 0] = 40.0 + 3.0 * params[..., 0]
    return params


@pytest.mark.parametrize(("family", "var_factor"), [("normal", 1.0), ("laplace", 2.0)])
def test_region_mean_matches_analytic_independent_voxels(family, var_factor):
    params = _params()
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 1:4] = True
    out = propagate(family, params, region_mean(mask), draws_per_member=20_000, seed=4)
    loc = params[..., 0][:, mask]
    scale = np.logaddexp(0.0, params[..., 1][:, mask]) + 1e-5
    n = mask.sum()
    member_mean = loc.mean(axis=1)  # E[f | t]
    member_var = var_factor * (scale**2).sum(axis=1) / n**2  # Var[f | t], independent voxels
    np.testing.assert_allclose(out[MEAN], member_mean.mean(), rtol=1e-3)
    np.testing.assert_allclose(out[EPISTEMIC_VAR], member_mean.var(), rtol=0.05)
    np.testing.assert_allclose(out[ALEATORIC_VAR], member_var.mean(), rtol=0.05)
    for key in DECOMPOSITION_KEYS:
        assert out[key].shape == ()


def test_total_is_pooled_variance_of_all_draws():
    seen = []

    def fn(y):
        value = tf.reduce_sum(y**2, axis=[1, 2]) / 10.0  # nonlinear f
        seen.append(value.numpy())
        return value

    out = propagate("normal", _params(num=4, seed=1), fn, draws_per_member=50, seed=2)
    pooled = np.stack(seen)  # (T, S)
    np.testing.assert_allclose(out[TOTAL_VAR], pooled.var(), rtol=1e-10)
    np.testing.assert_allclose(out[EPISTEMIC_VAR], pooled.mean(axis=1).var(), rtol=1e-10)
    np.testing.assert_allclose(out[ALEATORIC_VAR], pooled.var(axis=1).mean(), rtol=1e-10)


def test_vector_valued_quantity_and_seed():
    params = _params(num=3, shape=(2, 6), seed=3)

    def column_means(y):
        return tf.reduce_mean(y, axis=1)  # (S, 6)

    a = propagate("generalized_normal", np.concatenate([params, params[..., :1]], -1), column_means, seed=5)
    b = propagate("generalized_normal", np.concatenate([params, params[..., :1]], -1), column_means, seed=5)
    for key in DECOMPOSITION_KEYS:
        assert a[key].shape == (6,)
        np.testing.assert_array_equal(a[key], b[key])


def test_point_family_has_no_aleatoric_part():
    params = np.random.default_rng(0).normal(size=(5, 3, 1))
    out = propagate("point", params, lambda y: tf.reduce_mean(y, axis=1), draws_per_member=4)
    np.testing.assert_allclose(out[ALEATORIC_VAR], 0.0, atol=1e-12)
    np.testing.assert_allclose(out[EPISTEMIC_VAR], params[..., 0].mean(axis=1).var(), rtol=1e-10)


def test_errors():
    params = _params(num=2)
    with pytest.raises(ValueError, match="draw axis"):
        propagate("normal", params, lambda y: tf.reduce_mean(y), draws_per_member=3)
    with pytest.raises(ValueError, match="draws"):
        propagate("normal", params, region_mean(np.ones((4, 5))), draws_per_member=0)
