from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import special

from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.distributions import params_size
from tfuq.export.mc_graph import mc_maps, param_maps


def _replay(stack: np.ndarray):
    """A forward() that returns stack[0], stack[1], ... on successive calls (a stateful counter)."""
    values = tf.constant(stack)
    counter = tf.Variable(0)

    def forward():
        i = counter.assign_add(1) - 1
        return tf.gather(values, i)

    return forward, counter


def _numpy_moments(family: str, stack: np.ndarray):
    """Reference: per-pass mean and variance by hand (float64), then the survey's eq. 13-14."""
    s = stack.astype(np.float64)
    loc = s[..., 0]
    if family == "point":
        var = np.zeros_like(loc)
    else:
        scale = np.logaddexp(0.0, s[..., 1]) + 1e-5
        if family == "normal":
            var = scale**2
        elif family == "laplace":
            var = 2 * scale**2
        else:
            beta = 0.1 + 9.9 / (1 + np.exp(-(s[..., 2] + np.log(1.9 / 8.0))))
            var = scale**2 * special.gamma(3 / beta) / special.gamma(1 / beta)
    return loc.mean(0), loc.var(0), var.mean(0)


@pytest.mark.parametrize("family", ["normal", "laplace", "generalized_normal", "point"])
def test_mc_maps_equal_the_decomposition_of_the_passes(family):
    rng = np.random.default_rng(0)
    T, shape = 7, (2, 3, 4)
    stack = rng.normal(0.0, 0.7, (T, *shape, params_size(family))).astype(np.float32)
    forward, counter = _replay(stack)
    out = tf.function(lambda: mc_maps(forward, family, T, tf.constant(shape)))()
    assert int(counter.numpy()) == T  # every pass ran once, in a graph
    mean, epistemic, aleatoric = _numpy_moments(family, stack)
    np.testing.assert_allclose(out["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["epistemic_std"], np.sqrt(epistemic), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["aleatoric_std"], np.sqrt(aleatoric), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["total_std"], np.sqrt(epistemic + aleatoric), rtol=1e-4, atol=1e-6)
    assert "lower95" not in out
    if family == "generalized_normal":
        np.testing.assert_allclose(out["alpha"], (np.logaddexp(0, stack[..., 1]) + 1e-5).mean(0), rtol=1e-5)
        assert out["beta"].shape == shape
    else:
        assert "alpha" not in out


def test_units_and_sigma_scaling_and_interval():
    rng = np.random.default_rng(1)
    T, shape = 5, (1, 6)
    stack = rng.normal(0.0, 0.5, (T, *shape, 2)).astype(np.float32)
    rec = MomentRecalibration(kind="sigma_scaling", aleatoric_scale=1.5)
    offset, scale = -1024.0, 4095.0
    forward, _ = _replay(stack)
    out = mc_maps(
        forward, "normal", tf.constant(T), tf.constant(shape), recalibration=rec, units=(offset, scale)
    )
    mean, epistemic, aleatoric = _numpy_moments("normal", stack)
    aleatoric = 1.5**2 * aleatoric
    total = np.sqrt(epistemic + aleatoric)
    np.testing.assert_allclose(out["mean"], mean * scale + offset, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(out["aleatoric_std"], np.sqrt(aleatoric) * scale, rtol=1e-4)
    np.testing.assert_allclose(out["total_std"], total * scale, rtol=1e-4)
    np.testing.assert_allclose(
        out["lower95"], (mean - 1.959964 * total) * scale + offset, rtol=1e-5, atol=1e-2
    )
    np.testing.assert_allclose(
        out["upper95"], (mean + 1.959964 * total) * scale + offset, rtol=1e-5, atol=1e-2
    )


def test_isotonic_constants_scale_every_std_and_shift_the_bounds():
    stack = np.random.default_rng(2).normal(0.0, 0.5, (4, 3, 2)).astype(np.float32)
    rec = MomentRecalibration(kind="isotonic", std_factor=0.8, lower_z=-1.5, upper_z=2.5)
    forward, _ = _replay(stack)
    out = mc_maps(forward, "normal", 4, tf.constant((3,)), recalibration=rec)
    mean, epistemic, aleatoric = _numpy_moments("normal", stack)
    total = np.sqrt(epistemic + aleatoric)
    np.testing.assert_allclose(out["epistemic_std"], 0.8 * np.sqrt(epistemic), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["aleatoric_std"], 0.8 * np.sqrt(aleatoric), rtol=1e-4)
    np.testing.assert_allclose(out["total_std"], 0.8 * total, rtol=1e-4)
    np.testing.assert_allclose(out["lower95"], mean - 1.5 * total, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["upper95"], mean + 2.5 * total, rtol=1e-4, atol=1e-6)


def test_mc_samples_below_one_fail_in_the_graph():
    forward, _ = _replay(np.zeros((2, 1, 2), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mc_samples must be >= 1"):
        mc_maps(forward, "normal", tf.constant(0), tf.constant((1,)))


def test_param_maps_in_target_units():
    raw = np.array([[[0.25, 0.3]]], np.float32)
    out = param_maps(tf.constant(raw), "normal", units=(-1024.0, 4095.0))
    np.testing.assert_array_equal(out["params"], raw)
    assert float(out["loc"][0, 0]) == pytest.approx(0.25 * 4095 - 1024)
    assert float(out["scale"][0, 0]) == pytest.approx((np.logaddexp(0, 0.3) + 1e-5) * 4095, rel=1e-6)
    ggd = param_maps(tf.zeros((1, 2, 3)), "generalized_normal")
    np.testing.assert_allclose(ggd["power"], 2.0, rtol=1e-6)  # raw 0 is beta = 2 by construction
    assert sorted(param_maps(tf.zeros((1, 2, 1)), "point")) == ["loc", "params"]
