from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from tfuq.calibration import CENTRAL_COVERAGES, central_interval, central_intervals, predictive_quantile

SHIFT = np.log((2.0 - 0.1) / (10.0 - 2.0))


def _raw_scale(scale):
    s = np.asarray(scale, dtype=np.float64) - 1e-5
    return s + np.log(-np.expm1(-s))


def _raw_beta(beta):
    u = (np.asarray(beta, dtype=np.float64) - 0.1) / 9.9
    return np.log(u / (1.0 - u)) - SHIFT


LOC = np.array([0.0, 10.0, -3.0])
SCALE = np.array([1.0, 0.2, 5.0])
BETA = np.array([0.8, 2.0, 5.0])


@pytest.mark.parametrize("p", [0.025, 0.3, 0.5, 0.975])
def test_quantiles_match_scipy(p):
    normal = np.stack([LOC, _raw_scale(SCALE)], -1)
    laplace = normal
    ggd = np.stack([LOC, _raw_scale(SCALE), _raw_beta(BETA)], -1)
    np.testing.assert_allclose(
        predictive_quantile("normal", normal, p), stats.norm.ppf(p, LOC, SCALE), rtol=1e-9
    )
    np.testing.assert_allclose(
        predictive_quantile("laplace", laplace, p), stats.laplace.ppf(p, LOC, SCALE), rtol=1e-9
    )
    np.testing.assert_allclose(
        predictive_quantile("generalized_normal", ggd, p), stats.gennorm.ppf(p, BETA, LOC, SCALE), rtol=1e-5
    )


def test_point_quantile_is_loc():
    np.testing.assert_allclose(predictive_quantile("point", LOC[:, None], 0.9), LOC)


@pytest.mark.parametrize("p", [0.01, 0.25, 0.5, 0.9])
def test_mixture_quantile_inverts_the_mixture_cdf(p):
    loc = np.array([[-2.0, 0.0], [1.0, 0.5], [4.0, 0.2]])  # (T=3, 2 voxels)
    scale = np.array([[1.0, 2.0], [0.5, 2.0], [2.0, 2.0]])
    params = np.stack([loc, _raw_scale(scale)], -1)
    q = predictive_quantile("normal", params, p, mixture=True).numpy()
    for v in range(2):
        cdf = lambda x, v=v: stats.norm.cdf(x, loc[:, v], scale[:, v]).mean() - p  # noqa: E731
        root = optimize.brentq(cdf, -50, 50, xtol=1e-13)
        assert q[v] == pytest.approx(root, abs=1e-9)


def test_mixture_quantile_extremes_and_single_member():
    params = np.stack([np.array([[0.0], [1.0]]), _raw_scale([[1.0], [1.0]])], -1)
    q = predictive_quantile("normal", params, np.array([0.0, 1.0])[:, None][:, 0], mixture=True)
    assert np.isneginf(q.numpy()[0]) and np.isposinf(q.numpy()[1])
    single = params[:1]
    np.testing.assert_allclose(
        predictive_quantile("normal", single, 0.8, mixture=True),
        predictive_quantile("normal", single[0], 0.8),
        rtol=1e-9,
    )


def test_central_intervals():
    params = np.stack([LOC, _raw_scale(SCALE)], -1)
    lower, upper = central_interval("normal", params, 0.95)
    np.testing.assert_allclose(lower, LOC - stats.norm.ppf(0.975) * SCALE, rtol=1e-9)
    np.testing.assert_allclose(upper, LOC + stats.norm.ppf(0.975) * SCALE, rtol=1e-9)
    table = central_intervals("laplace", params)
    assert tuple(table) == CENTRAL_COVERAGES == (0.5, 0.9, 0.95)
    lo50, hi50 = table[0.5]
    np.testing.assert_allclose(hi50 - lo50, 2 * np.log(2.0) * SCALE, rtol=1e-9)
    with pytest.raises(ValueError, match="coverage"):
        central_interval("normal", params, 1.0)
