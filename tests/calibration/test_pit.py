from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfuq.calibration import mixture_pit_values, pit_values, predictive_cdf, rms_calibration_error

SHIFT = np.log((2.0 - 0.1) / (10.0 - 2.0))


def _raw_scale(scale):
    s = np.asarray(scale, dtype=np.float64) - 1e-5
    return s + np.log(-np.expm1(-s))


def _raw_beta(beta):
    u = (np.asarray(beta, dtype=np.float64) - 0.1) / 9.9
    return np.log(u / (1.0 - u)) - SHIFT


def test_normal_pit_matches_scipy():
    rng = np.random.default_rng(0)
    loc, scale, y = rng.normal(size=(3, 4)) * 10, np.exp(rng.normal(size=(3, 4))), rng.normal(size=(3, 4))
    params = np.stack([loc, _raw_scale(scale)], -1)
    np.testing.assert_allclose(pit_values("normal", params, y), stats.norm.cdf(y, loc, scale), rtol=1e-9)


def test_laplace_and_ggd_pit_match_scipy():
    rng = np.random.default_rng(1)
    loc, scale, y = rng.normal(size=20), np.exp(rng.normal(size=20)), rng.normal(size=20) * 2
    beta = rng.uniform(0.5, 6.0, size=20)
    lap = np.stack([loc, _raw_scale(scale)], -1)
    np.testing.assert_allclose(pit_values("laplace", lap, y), stats.laplace.cdf(y, loc, scale), rtol=1e-9)
    ggd = np.stack([loc, _raw_scale(scale), _raw_beta(beta)], -1)
    np.testing.assert_allclose(
        predictive_cdf("generalized_normal", ggd, y),
        stats.gennorm.cdf(y, beta, loc, scale),
        rtol=1e-6,
        atol=1e-12,
    )


def test_mixture_pit_is_mean_of_member_cdfs():
    rng = np.random.default_rng(2)
    loc, scale = rng.normal(size=(5, 2, 3)), np.exp(rng.normal(size=(5, 2, 3)))
    y = rng.normal(size=(2, 3))
    params = np.stack([loc, _raw_scale(scale)], -1)
    expected = stats.norm.cdf(y, loc, scale).mean(axis=0)
    np.testing.assert_allclose(pit_values("normal", params, y, mixture=True), expected, rtol=1e-9)
    np.testing.assert_allclose(mixture_pit_values("normal", params, y), expected, rtol=1e-9)


def test_mask_returns_flat_selection():
    params = np.zeros((2, 3, 2))
    y = np.arange(6.0).reshape(2, 3)
    mask = np.array([[True, False, True], [False, False, True]])
    out = pit_values("normal", params, y, mask=mask)
    assert out.shape == (3,)
    full = pit_values("normal", params, y).numpy()
    np.testing.assert_array_equal(out, full[mask])


def test_ggd_sampled_from_its_own_law_is_calibrated():
    rng = np.random.default_rng(3)
    n = 200_000
    loc = rng.normal(size=n) * 50.0
    scale = np.exp(rng.normal(size=n) * 0.5)
    beta = rng.uniform(0.8, 4.0, size=n)
    y = stats.gennorm.rvs(beta, loc, scale, random_state=rng)
    params = np.stack([loc, _raw_scale(scale), _raw_beta(beta)], -1)
    pit = pit_values("generalized_normal", tf.constant(params), y)
    assert rms_calibration_error(pit) < 0.01
    overconfident = np.stack([loc, _raw_scale(0.5 * scale), _raw_beta(beta)], -1)
    assert rms_calibration_error(pit_values("generalized_normal", overconfident, y)) > 0.05


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        pit_values("normal", np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="channels"):
        pit_values("normal", np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="mask"):
        pit_values("normal", np.zeros((3, 2)), np.zeros(3), mask=np.ones(4, bool))
    with pytest.raises(ValueError, match="no MC sample"):
        pit_values("normal", np.zeros((0, 3, 2)), np.zeros(3), mixture=True)


def test_normal_with_true_sigma_is_calibrated_and_halved_sigma_is_not():
    rng = np.random.default_rng(4)
    n = 200_000
    loc, sigma = rng.normal(size=n) * 100.0, np.exp(rng.normal(size=n))
    y = loc + sigma * rng.normal(size=n)
    calibrated = pit_values("normal", np.stack([loc, _raw_scale(sigma)], -1), y)
    overconfident = pit_values("normal", np.stack([loc, _raw_scale(0.5 * sigma)], -1), y)
    assert rms_calibration_error(calibrated) < 0.01
    assert rms_calibration_error(overconfident) > 0.1
