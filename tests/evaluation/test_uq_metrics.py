from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from tfuq.evaluation import uq_metrics as uq
from tfuq.evaluation.image_metrics import nrmse, nstd


def _brute_force_auroc(score, label):
    pos, neg = score[label], score[~label]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (pos.size * neg.size)


def _brute_force_retained(error, uncertainty, keep):
    # Integer counts only, with distinct uncertainties: keep the `keep` least uncertain voxels.
    order = np.argsort(uncertainty)
    return math.sqrt(np.mean(np.square(error[order[:keep]])))


def test_retained_curve_matches_brute_force_at_integer_counts():
    rng = np.random.default_rng(0)
    error = rng.normal(size=50)
    unc = rng.random(50)
    fractions = np.arange(1, 51) / 50
    curve = uq.retained_rmse_curve(error, unc, fractions=fractions)
    oracle = [_brute_force_retained(error, unc, k) for k in range(1, 51)]
    np.testing.assert_allclose(curve, oracle, rtol=1e-12)
    assert curve[-1] == pytest.approx(math.sqrt(np.mean(error**2)))


def test_retained_curve_splits_ties_evenly():
    # Constant uncertainty: every retained fraction has the expected RMSE of a random subset.
    error = np.array([1.0, 2.0, 3.0, 4.0])
    curve = uq.retained_rmse_curve(error, np.zeros(4), fractions=[0.25, 0.5, 1.0])
    np.testing.assert_allclose(curve, math.sqrt(7.5), rtol=1e-12)
    # Fractional counts interpolate: keep 1.5 voxels of errors [1, 3] -> (1 + 0.5 * 9) / 1.5.
    curve = uq.retained_rmse_curve([1.0, 3.0], [0.0, 1.0], fractions=[0.75])
    assert curve[0] == pytest.approx(math.sqrt(5.5 / 1.5))


def test_ause_zero_for_error_ranking_and_positive_for_random():
    rng = np.random.default_rng(1)
    error = rng.normal(size=(8, 8, 8))
    mask = rng.random(error.shape) > 0.2
    # Any strictly increasing function of |error| ranks like the oracle.
    assert uq.ause(error, np.log1p(np.abs(error)) * 3 + 1, mask) == pytest.approx(0.0, abs=1e-12)
    random_score = uq.ause(error, rng.random(error.shape), mask)
    inverse_score = uq.ause(error, -np.abs(error), mask)
    assert random_score > 0.1
    assert inverse_score > random_score
    curves = uq.sparsification_curves(error, rng.random(error.shape), mask)
    assert np.all(curves["rmse"] >= curves["oracle"] - 1e-12)
    # Oracle curve rises with the retained fraction.
    assert uq.is_monotonic(curves["oracle"], "increasing", strict=False)


def test_spearman_matches_scipy_and_drops_nan_pairs():
    rng = np.random.default_rng(2)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    assert uq.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)
    a2, b2 = a.copy(), b.copy()
    a2[:10] = np.nan
    assert uq.spearman(a2, b2) == pytest.approx(stats.spearmanr(a[10:], b[10:]).statistic, rel=1e-12)
    assert math.isnan(uq.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(uq.spearman([1.0], [2.0]))
    with pytest.raises(ValueError, match="one size"):
        uq.spearman([1.0, 2.0], [1.0])


def test_spearman_many_matches_scipy_with_ties():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 20, size=300).astype(float)
    others = {
        "b": a + rng.normal(size=300),
        "c": rng.integers(0, 5, size=300).astype(float),
        "d": np.ones(300),
    }
    result = uq.spearman_many(a, others)
    assert result["b"] == pytest.approx(stats.spearmanr(a, others["b"]).statistic, rel=1e-12)
    assert result["c"] == pytest.approx(stats.spearmanr(a, others["c"]).statistic, rel=1e-12)
    assert math.isnan(result["d"])
    assert math.isnan(uq.spearman_many(np.ones(3), {"x": [1.0, 2.0, 3.0]})["x"])
    with pytest.raises(ValueError, match="one size"):
        uq.spearman_many(a, {"short": a[:5]})


def test_error_uncertainty_pairs_levels():
    rng = np.random.default_rng(3)
    target = rng.normal(10.0, 2.0, size=(4, 5, 6))
    pred = target + rng.normal(size=target.shape)
    std = rng.random(target.shape)
    mask = np.ones(target.shape, bool)
    mask[..., 0] = False
    e, u = uq.error_uncertainty_pairs(target, pred, std, mask, level="voxel")
    np.testing.assert_allclose(e, np.abs(target - pred)[mask])
    np.testing.assert_allclose(u, std[mask])
    e, u = uq.error_uncertainty_pairs(target, pred, std, mask, level="slice", axis=-1)
    assert e.shape == u.shape == (5,)  # slice 0 holds no masked voxel
    np.testing.assert_allclose(e, nrmse(target, pred, mask, axis=-1)[1:])
    np.testing.assert_allclose(u, nstd(std, mask, axis=-1)[1:])
    e, u = uq.error_uncertainty_pairs(target, pred, std, mask, level="volume")
    assert e.shape == (1,) and e[0] == pytest.approx(nrmse(target, pred, mask))
    with pytest.raises(ValueError, match="level"):
        uq.error_uncertainty_pairs(target, pred, std, level="pixel")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    score = rng.integers(0, 6, size=60).astype(float)  # many ties
    label = rng.random(60) > 0.6
    assert uq.auroc(score, label) == pytest.approx(_brute_force_auroc(score, label), rel=1e-12)
    assert uq.auroc(score, label) == pytest.approx(
        stats.mannwhitneyu(score[label], score[~label]).statistic / (label.sum() * (~label).sum())
    )


def test_auroc_perfect_random_and_masked():
    label = np.zeros((6, 6, 6), bool)
    label[1:3, 1:3, 1:3] = True
    score = label.astype(float) + 0.1
    assert uq.auroc(score, label) == 1.0
    assert uq.auroc(-score, label) == 0.0
    rng = np.random.default_rng(4)
    big_label = rng.random(20000) > 0.5
    assert uq.auroc(rng.random(20000), big_label) == pytest.approx(0.5, abs=0.02)
    assert uq.auroc(np.ones(20000), big_label) == 0.5
    region = np.ones(label.shape, bool)
    region[4:] = False
    brute = _brute_force_auroc(score[region] * 0 + np.arange(region.sum()), label[region])
    ramp = np.zeros(label.shape)
    ramp[region] = np.arange(region.sum())
    assert uq.auroc(ramp, label, region) == pytest.approx(brute)
    with pytest.raises(ValueError, match="positive and negative"):
        uq.auroc(np.ones(4), np.zeros(4, bool))


def test_is_monotonic():
    assert uq.is_monotonic([1, 2, 3])
    assert not uq.is_monotonic([1, 2, 2])
    assert uq.is_monotonic([1, 2, 2], strict=False)
    assert uq.is_monotonic([3, 1, 0.5], "decreasing")
    assert not uq.is_monotonic([3, 1, 2], "decreasing")
    with pytest.raises(ValueError, match="at least 2"):
        uq.is_monotonic([1])
    with pytest.raises(ValueError, match="direction"):
        uq.is_monotonic([1, 2], "up")
