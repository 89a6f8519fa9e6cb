from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tfuq.calibration import (
    calibration_curve,
    mean_absolute_calibration_error,
    miscalibration_area,
    rms_calibration_error,
    sharpness,
)


def test_pit_uniform_on_a_matching_grid_has_zero_error():
    # N = (B - 1) * m midpoints: exactly j*m of them lie below p_j = j/(B-1).
    num_bins, m = 101, 7
    n = (num_bins - 1) * m
    pit = (np.arange(n) + 0.5) / n
    expected, observed = calibration_curve(pit, num_bins)
    np.testing.assert_allclose(expected, np.linspace(0, 1, num_bins))
    np.testing.assert_allclose(observed, expected, atol=1e-15)
    assert rms_calibration_error(pit, num_bins) < 1e-15
    assert mean_absolute_calibration_error(pit, num_bins) < 1e-15
    assert miscalibration_area(pit, num_bins) < 1e-15


def test_point_mass_at_one_half_hand_computed():
    pit = np.full(10, 0.5)
    j = np.arange(101)
    gap = np.where(j < 50, -j / 100, 1 - j / 100)
    # sum_{0..49} j^2 + sum_{0..50} k^2 = 40425 + 42925, over 100^2 * 101 points.
    assert rms_calibration_error(pit, 101) == pytest.approx(np.sqrt((40425 + 42925) / 1e4 / 101), rel=1e-12)
    assert rms_calibration_error(pit, 101) == pytest.approx(np.sqrt(np.mean(gap**2)), rel=1e-12)
    assert mean_absolute_calibration_error(pit, 101) == pytest.approx(2500 / 10100, rel=1e-12)
    # [0, .49]: triangle .49^2/2; [.5, 1]: triangle 1/8; [.49, .5] crosses the diagonal.
    crossing = 0.5 * 0.01 * (0.49**2 + 0.5**2) / 0.99
    assert miscalibration_area(pit, 101) == pytest.approx(0.49**2 / 2 + 0.125 + crossing, rel=1e-12)


def test_all_mass_at_zero_gives_half_area():
    pit = np.zeros(5)
    p = np.linspace(0, 1, 100)
    assert miscalibration_area(pit) == pytest.approx(0.5, rel=1e-12)
    assert rms_calibration_error(pit) == pytest.approx(np.sqrt(np.mean((1 - p) ** 2)), rel=1e-12)


def test_miscalibration_area_matches_fine_numerical_integral():
    pit = stats.beta.rvs(0.6, 1.7, size=5000, random_state=0)
    expected, observed = calibration_curve(pit, 50)
    fine = np.linspace(0, 1, 2_000_001)
    gap = np.abs(np.interp(fine, expected, observed) - fine)
    oracle = np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(fine))
    assert miscalibration_area(pit, 50) == pytest.approx(oracle, rel=1e-6)
    # ... and approaches the mean absolute error with many bins.
    assert miscalibration_area(pit, 2000) == pytest.approx(
        mean_absolute_calibration_error(pit, 2000), abs=2e-3
    )


def test_observed_proportions_against_direct_count():
    pit = stats.uniform.rvs(size=1000, random_state=1) ** 2
    expected, observed = calibration_curve(pit, 30)
    direct = np.array([(pit <= p).mean() for p in expected])
    np.testing.assert_array_equal(observed, direct)


def test_calibrated_and_overconfident_normal():
    rng = np.random.default_rng(0)
    z = rng.normal(size=200_000)
    assert rms_calibration_error(stats.norm.cdf(z)) < 0.01
    assert rms_calibration_error(stats.norm.cdf(z / 0.5)) > 0.1


def test_sharpness_hand_value():
    assert sharpness([3.0, 4.0]) == pytest.approx(np.sqrt(12.5))
    assert sharpness(np.full((2, 2), 7.0)) == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("pit", "num_bins", "match"),
    [
        ([], 10, "empty"),
        ([0.1, np.nan], 10, "NaN"),
        ([0.1, 1.2], 10, r"\[0, 1\]"),
        ([0.1, 0.2], 1, "num_bins"),
    ],
)
def test_errors(pit, num_bins, match):
    with pytest.raises(ValueError, match=match):
        rms_calibration_error(pit, num_bins)


def test_sharpness_errors():
    with pytest.raises(ValueError, match=">= 0"):
        sharpness([-1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        sharpness([])
