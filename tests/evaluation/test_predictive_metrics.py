from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tfuq.calibration import IsotonicRecalibrator, SigmaScaling
from tfuq.distributions import family as fam
from tfuq.evaluation.predictive_metrics import (
    coverage_key,
    gaussian_params,
    interval_coverage,
    predictive_scores,
    select_params,
)


def _normal_case(n, scale_error=1.0, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(40.0, 100.0, size=n)
    std = rng.uniform(5.0, 50.0, size=n)
    y = mean + scale_error * std * rng.standard_normal(n)
    return mean, std, y


def test_coverage_key_names():
    assert coverage_key(0.9) == "coverage_90"
    assert coverage_key(0.5) == "coverage_50"
    assert coverage_key(0.975) == "coverage_97_5"


def test_gaussian_params_round_trip_and_floor():
    params = gaussian_params([1.0, 2.0], [3.0, 0.0])
    constrained = fam.constrain("normal", params)
    np.testing.assert_allclose(constrained["loc"].numpy(), [1.0, 2.0])
    np.testing.assert_allclose(constrained["scale"].numpy(), [3.0, 2 * fam.SCALE_EPS], rtol=1e-9)
    with pytest.raises(ValueError, match=">= 0"):
        gaussian_params([1.0], [-1.0])


def test_select_params_layouts():
    selector = np.array([[True, False], [False, True]])
    params = np.arange(8.0).reshape(2, 2, 2)
    np.testing.assert_array_equal(select_params(params, selector).numpy(), [[0, 1], [6, 7]])
    stacked = np.stack([params, params + 10])
    assert select_params(stacked, selector, mixture=True).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="layout"):
        select_params(params, np.ones((3, 2), bool))


def test_interval_coverage_with_infinite_bounds():
    assert interval_coverage([-np.inf, 0.0], [np.inf, 1.0], [5.0, 2.0]) == 0.5


def test_perfectly_calibrated_normal_scores_near_ideal():
    mean, std, y = _normal_case(20000)
    scores, curves = predictive_scores("normal", gaussian_params(mean, std), y)
    assert scores["calibration_rms_error"] < 0.01
    assert scores["miscalibration_area"] < 0.01
    for c in (0.5, 0.9, 0.95):
        assert scores[coverage_key(c)] == pytest.approx(c, abs=0.01)
    # NLL and sharpness against scipy / NumPy.
    assert scores["nll"] == pytest.approx(-np.mean(stats.norm.logpdf(y, mean, std)), rel=1e-9)
    assert scores["sharpness"] == pytest.approx(math.sqrt(np.mean(std**2)), rel=1e-9)
    assert math.isnan(scores["calibration_rms_error_recalibrated"])
    assert curves["observed_recalibrated"] is None
    np.testing.assert_allclose(curves["observed"], curves["expected"], atol=0.02)


@pytest.mark.parametrize("kind", ["isotonic", "sigma"])
def test_recalibration_repairs_overconfident_predictions(kind):
    # Errors twice as large as the predicted std: 90 % intervals cover ~ 59 %.
    mean_c, std_c, y_c = _normal_case(20000, 2.0, seed=1)
    mean, std, y = _normal_case(20000, 2.0, seed=2)
    if kind == "isotonic":
        pit = stats.norm.cdf(y_c, mean_c, std_c)
        recalibrator = IsotonicRecalibrator().fit(pit)
    else:
        recalibrator = SigmaScaling().fit_moments(mean_c, std_c, y_c)
    scores, curves = predictive_scores("normal", gaussian_params(mean, std), y, recalibrator=recalibrator)
    assert scores["coverage_90"] == pytest.approx(2 * stats.norm.cdf(stats.norm.ppf(0.95) / 2) - 1, abs=0.01)
    assert scores["calibration_rms_error"] > 0.08
    assert scores["calibration_rms_error_recalibrated"] < 0.015
    assert scores["miscalibration_area_recalibrated"] < scores["miscalibration_area"] / 5
    for c in (0.5, 0.9, 0.95):
        assert scores[f"{coverage_key(c)}_recalibrated"] == pytest.approx(c, abs=0.015)
    # Both recalibrations double the spread.
    assert scores["sharpness_recalibrated"] == pytest.approx(2 * scores["sharpness"], rel=0.05)
    assert curves["observed_recalibrated"].shape == (100,)
    if kind == "sigma":
        assert scores["nll_recalibrated"] < scores["nll"]
    else:
        assert math.isnan(scores["nll_recalibrated"])


def test_given_intervals_replace_the_distribution_ones():
    mean, std, y = _normal_case(1000)
    lower, upper = mean - 1e9, mean + 1e9
    scores, _ = predictive_scores("normal", gaussian_params(mean, std), y, intervals={0.9: (lower, upper)})
    assert scores["coverage_90"] == 1.0
    assert scores["coverage_50"] == pytest.approx(0.5, abs=0.06)


def test_mixture_and_generalized_normal_run():
    rng = np.random.default_rng(3)
    n = 500
    loc = rng.normal(size=(4, n))
    params = fam.unconstrain("normal", loc, np.full((4, n), 1.0)).numpy()
    y = loc.mean(0) + rng.normal(size=n) * math.sqrt(1.0 + loc.var(0).mean())
    scores, _ = predictive_scores("normal", params, y, mixture=True)
    # Mixture std = sqrt(var of member means + 1).
    assert scores["sharpness"] == pytest.approx(math.sqrt(np.mean(loc.var(0) + 1.0)), rel=1e-6)
    ggd = fam.unconstrain("generalized_normal", np.zeros(n), np.ones(n), np.full(n, 2.0))
    y = rng.normal(size=n) / math.sqrt(2.0)  # beta = 2, alpha = 1 is N(0, 1/2)
    scores, _ = predictive_scores("generalized_normal", ggd, y)
    assert scores["nll"] == pytest.approx(-np.mean(stats.norm.logpdf(y, 0, math.sqrt(0.5))), rel=1e-4)
    with pytest.raises(ValueError, match="point"):
        predictive_scores("point", np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="recalibrator"):
        predictive_scores("normal", gaussian_params([0.0], [1.0]), [0.0], recalibrator=object())
