from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special, stats
from utils import raw_beta, raw_scale

from tfuq.calibration import (
    coverage,
    crps,
    crps_laplace,
    crps_normal,
    crps_samples,
    interval_score,
    nll,
)


def _crps_quad(cdf, y, lo, hi):
    """integral (F(x) - 1{x >= y})^2 dx, split at y."""
    left, _ = integrate.quad(lambda x: cdf(x) ** 2, lo, y, limit=200)
    right, _ = integrate.quad(lambda x: (1.0 - cdf(x)) ** 2, y, hi, limit=200)
    return left + right


CASES = [(0.0, 1.0, 0.3), (5.0, 2.0, -1.0), (-3.0, 0.1, -2.5), (100.0, 30.0, 160.0)]


@pytest.mark.parametrize(("mu", "sigma", "y"), CASES)
def test_crps_normal_matches_numerical_integral(mu, sigma, y):
    oracle = _crps_quad(stats.norm(mu, sigma).cdf, y, mu - 40 * sigma, mu + 40 * sigma)
    assert crps_normal([mu], [sigma], [y]) == pytest.approx(oracle, rel=1e-7)


@pytest.mark.parametrize(("mu", "b", "y"), CASES)
def test_crps_laplace_matches_numerical_integral(mu, b, y):
    oracle = _crps_quad(stats.laplace(mu, b).cdf, y, mu - 60 * b, mu + 60 * b)
    assert crps_laplace([mu], [b], [y]) == pytest.approx(oracle, rel=1e-7)


def test_crps_samples_equals_naive_pair_sums():
    rng = np.random.default_rng(0)
    draws, y = rng.normal(size=(7, 3)), rng.normal(size=3)
    pair = np.abs(draws[:, None] - draws[None]).sum(axis=(0, 1))
    first = np.abs(draws - y).mean(axis=0)
    np.testing.assert_allclose(crps_samples(draws, y, reduce=False), first - 0.5 * pair / 49, rtol=1e-12)
    np.testing.assert_allclose(
        crps_samples(draws, y, fair=True, reduce=False), first - 0.5 * pair / 42, rtol=1e-12
    )


def test_crps_samples_converges_to_closed_form():
    rng = np.random.default_rng(1)
    draws = rng.normal(2.0, 3.0, size=(200_000, 1))
    assert crps_samples(draws, [0.5]) == pytest.approx(crps_normal([2.0], [3.0], [0.5]), rel=5e-3)


def test_crps_dispatch_closed_forms_and_point():
    loc, scale, y = np.array([0.0, 2.0]), np.array([1.0, 0.5]), np.array([0.4, 3.0])
    params = np.stack([loc, raw_scale(scale)], -1)
    assert crps("normal", params, y) == pytest.approx(crps_normal(loc, scale, y), rel=1e-9)
    assert crps("laplace", params, y) == pytest.approx(crps_laplace(loc, scale, y), rel=1e-9)
    np.testing.assert_allclose(crps("point", loc[:, None], y, reduce=False), np.abs(y - loc))


def test_crps_ggd_and_mixture_from_draws_match_quadrature():
    beta, alpha, mu, y = 1.3, 2.0, 1.0, 2.5
    params = np.array([[mu, raw_scale(alpha), raw_beta(beta)]])
    oracle = _crps_quad(stats.gennorm(beta, mu, alpha).cdf, y, -80, 80)
    value = crps("generalized_normal", params, [y], num_draws=100_000, seed=3)
    assert value == pytest.approx(oracle, rel=0.02)
    locs, scales = np.array([-1.0, 2.0]), np.array([0.5, 1.5])
    mixture_params = np.stack([locs, raw_scale(scales)], -1)[:, None]  # (T=2, 1, 2)

    def mixture_cdf(x):
        return stats.norm.cdf(x, locs, scales).mean()

    oracle = _crps_quad(mixture_cdf, 0.3, -40, 40)
    value = crps("normal", mixture_params, [0.3], mixture=True, num_draws=100_000, seed=1)
    assert value == pytest.approx(oracle, rel=0.02)


def test_nll_matches_scipy_and_mixture_logsumexp():
    rng = np.random.default_rng(2)
    loc, scale, y = rng.normal(size=(3, 4)), np.exp(rng.normal(size=(3, 4))), rng.normal(size=4)
    params = np.stack([loc, raw_scale(scale)], -1)
    assert nll("normal", params[0], y) == pytest.approx(
        -stats.norm.logpdf(y, loc[0], scale[0]).mean(), rel=1e-9
    )
    log_mix = special.logsumexp(stats.norm.logpdf(y, loc, scale), axis=0) - np.log(3)
    assert nll("normal", params, y, mixture=True) == pytest.approx(-log_mix.mean(), rel=1e-9)
    mask = np.array([True, False, False, True])
    np.testing.assert_allclose(
        nll("laplace", params[1], y, mask=mask, reduce=False),
        -stats.laplace.logpdf(y, loc[1], scale[1])[mask],
        rtol=1e-9,
    )
    with pytest.raises(ValueError, match="point"):
        nll("point", loc[0][:, None], y)


def test_interval_score_hand_values():
    lower, upper = np.array([0.0, 0.0, 0.0]), np.array([2.0, 2.0, 2.0])
    y = np.array([1.0, -1.0, 3.5])
    alpha = 0.1
    # width 2 everywhere; misses add 2/alpha * distance: 20 * 1 and 20 * 1.5.
    np.testing.assert_allclose(interval_score(lower, upper, y, alpha, reduce=False), [2.0, 22.0, 32.0])
    assert interval_score(lower, upper, y, alpha) == pytest.approx(56.0 / 3)


def test_coverage_hand_values_and_errors():
    assert coverage([0, 0, 0, 0], [1, 1, 1, 1], [0.0, 0.5, 1.0, 1.5]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="upper"):
        interval_score([1.0], [0.0], [0.5], 0.1)
    with pytest.raises(ValueError, match="alpha"):
        interval_score([0.0], [1.0], [0.5], 1.5)
    with pytest.raises(ValueError, match="same shape"):
        coverage([0.0], [1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        crps_normal([0.0], [1.0], [np.nan])
    with pytest.raises(ValueError, match="std"):
        crps_normal([0.0], [0.0], [1.0])
