"""Recalibration of the moment-matched normal: PIT, intervals and sigma scaling against scipy oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from tfuq.calibration import IsotonicRecalibrator, SigmaScaling
from tfuq.calibration.moment_matched import (
    fit_moment_sigma_scaling,
    moment_pit,
    recalibrated_interval,
    recalibrated_variance,
)


def _maps(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 3.0, n)
    epi = rng.uniform(0.0, 0.5, n)
    ale = rng.uniform(0.1, 2.0, n)
    return mean, epi, ale


def test_moment_pit_is_the_normal_cdf_of_the_total_variance() -> None:
    mean, epi, ale = _maps()
    y = mean + np.random.default_rng(1).normal(0.0, 1.0, mean.size)
    expected = stats.norm.cdf(y, loc=mean, scale=np.sqrt(epi + ale))
    np.testing.assert_allclose(moment_pit(mean, epi, ale, y), expected, rtol=1e-12, atol=1e-15)


def test_interval_without_recalibration_is_the_normal_interval() -> None:
    mean, epi, ale = _maps()
    lower, upper = recalibrated_interval(None, mean, epi, ale, 0.9)
    lo, hi = stats.norm.interval(0.9, loc=mean, scale=np.sqrt(epi + ale))
    np.testing.assert_allclose(lower, lo, rtol=1e-10)
    np.testing.assert_allclose(upper, hi, rtol=1e-10)


def test_sigma_scaling_scales_only_the_aleatoric_part() -> None:
    mean, epi, ale = _maps()
    scaling = SigmaScaling()
    scaling.scale_factor = 1.7
    np.testing.assert_allclose(recalibrated_variance(scaling, epi, ale), epi + 1.7**2 * ale)
    lower, upper = recalibrated_interval(scaling, mean, epi, ale, 0.95)
    lo, hi = stats.norm.interval(0.95, loc=mean, scale=np.sqrt(epi + 1.7**2 * ale))
    np.testing.assert_allclose(lower, lo, rtol=1e-10)
    np.testing.assert_allclose(upper, hi, rtol=1e-10)


def test_isotonic_interval_uses_the_inverse_map() -> None:
    """Oracle: a model whose PITs are Phi(z/2) (std too large by 2) -> R^-1 maps back, interval halves."""
    z = np.random.default_rng(3).normal(0.0, 1.0, 200_000)
    rec = IsotonicRecalibrator().fit(stats.norm.cdf(z / 2.0))
    mean, epi, ale = np.zeros(3), np.zeros(3), np.full(3, 4.0)  # predicted std 2, truth std 1
    lower, upper = recalibrated_interval(rec, mean, epi, ale, 0.95)
    np.testing.assert_allclose(upper, stats.norm.ppf(0.975), rtol=0.02)
    np.testing.assert_allclose(lower, -stats.norm.ppf(0.975), rtol=0.02)


def test_sigma_factor_without_epistemic_is_the_rms_of_z() -> None:
    rng = np.random.default_rng(4)
    ale = rng.uniform(0.5, 2.0, 50_000)
    y = rng.normal(0.0, 1.0, ale.size) * np.sqrt(ale) * 3.0
    scaling = fit_moment_sigma_scaling(np.zeros_like(y), np.zeros_like(y), ale, y)
    assert scaling.scale_factor == pytest.approx(math.sqrt(np.mean(y**2 / ale)), rel=1e-6)


@pytest.mark.parametrize("objective", ["nll", "calibration"])
def test_sigma_factor_with_epistemic_matches_a_brute_force_search(objective: str) -> None:
    mean, epi, ale = _maps(20_000, seed=5)
    y = mean + np.random.default_rng(6).normal(0.0, 1.0, mean.size) * np.sqrt(epi + 2.5**2 * ale)
    scaling = fit_moment_sigma_scaling(mean, epi, ale, y, objective=objective, num_bins=50)

    def loss(s: float) -> float:
        sd = np.sqrt(epi + s * s * ale)
        if objective == "nll":
            return -float(np.mean(stats.norm.logpdf(y, mean, sd)))
        pit = stats.norm.cdf(y, mean, sd)
        grid = np.linspace(0, 1, 50)
        return float(np.sqrt(np.mean((np.array([np.mean(pit <= p) for p in grid]) - grid) ** 2)))

    grid = np.exp(np.linspace(math.log(1.5), math.log(4.0), 400))
    best = grid[np.argmin([loss(s) for s in grid])]
    assert scaling.scale_factor == pytest.approx(best, rel=0.02)
    if objective == "nll":
        reference = optimize.minimize_scalar(loss, bounds=(1.5, 4.0), method="bounded").x
        assert scaling.scale_factor == pytest.approx(reference, rel=1e-4)
        assert scaling.scale_factor == pytest.approx(2.5, rel=0.03)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        moment_pit([0.0, 1.0], [0.0], [1.0], [0.0])
    with pytest.raises(ValueError, match=">= 0"):
        recalibrated_interval(None, [0.0], [-1.0], [1.0])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        recalibrated_interval(None, [0.0], [0.0], [1.0], 1.0)
    with pytest.raises(ValueError, match="0 everywhere"):
        fit_moment_sigma_scaling([0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.5])
    with pytest.raises(ValueError, match="not fitted"):
        recalibrated_variance(SigmaScaling(), [0.0], [1.0])
