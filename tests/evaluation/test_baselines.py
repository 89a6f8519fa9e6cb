"""Trivial baselines against NumPy / scipy oracles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tfuq.evaluation import image_metrics as im
from tfuq.evaluation.baselines import baseline_metrics, pearson

RNG = np.random.default_rng(7)


def test_pearson_equals_scipy_inside_the_mask_and_nan_for_a_constant() -> None:
    y, p = RNG.normal(size=(6, 5, 4)), RNG.normal(size=(6, 5, 4))
    mask = RNG.random((6, 5, 4)) > 0.3
    assert pearson(y, p, mask) == pytest.approx(stats.pearsonr(y[mask], p[mask])[0], rel=1e-12)
    assert np.isnan(pearson(y, np.ones_like(y)))


def test_constant_is_the_median_and_linear_recovers_an_exact_affine_map() -> None:
    x = RNG.normal(size=(12, 10, 8))
    y = 3.0 - 2.0 * x  # an exact (inverted) linear contrast
    mask = np.zeros(x.shape, bool)
    mask[2:10, 2:8, 1:7] = True
    out = baseline_metrics(y, x, mask)
    assert out["baseline_linear_slope"] == pytest.approx(-2.0)
    assert out["baseline_linear_intercept"] == pytest.approx(3.0)
    assert out["baseline_linear_mae"] == pytest.approx(0.0, abs=1e-9)
    assert out["baseline_linear_ssim"] == pytest.approx(1.0)
    median = np.median(y[mask])
    assert out["baseline_constant_mae"] == pytest.approx(np.abs(y[mask] - median).mean(), rel=1e-12)
    constant = np.full_like(y, median)
    assert out["baseline_constant_psnr"] == pytest.approx(im.psnr(y, constant, mask), rel=1e-12)
    floor = y[mask].min()
    assert out["baseline_constant_ssim"] == pytest.approx(
        im.ssim(y - floor, constant - floor, mask), rel=1e-12
    )
    # the median is the best constant for the MAE: any other constant does worse
    for c in (median - 0.1, median + 0.1, y[mask].mean()):
        assert np.abs(y[mask] - c).mean() >= out["baseline_constant_mae"] - 1e-12


def test_constant_input_falls_back_to_the_mean() -> None:
    y = RNG.normal(size=(5, 5, 5))
    out = baseline_metrics(y, np.zeros_like(y))
    assert out["baseline_linear_slope"] == 0.0
    assert out["baseline_linear_intercept"] == pytest.approx(y.mean())
    with pytest.raises(ValueError):
        baseline_metrics(y, np.zeros((4, 5, 5)))


def test_evaluate_rows_mae_per_label_and_ratio_by_hand() -> None:
    from tfuq.stages.evaluate import _baselines

    target = np.zeros((4, 4, 4))
    mean = np.zeros((4, 4, 4))
    labels = np.zeros((4, 4, 4), int)
    labels[0], labels[1] = 2, 4
    mean[0], mean[1] = 0.5, 3.0  # error 0.5 in label 2, 3 in label 4, 0 elsewhere
    target[3] = 1.0  # the truth is not constant
    out = _baselines(mean, target, target, None, labels, excluded=7)
    assert out["mae_label_2"] == pytest.approx(0.5) and out["mae_label_4"] == pytest.approx(3.0)
    assert set(k for k in out if k.startswith("mae_label_")) == {"mae_label_2", "mae_label_4"}
    assert out["mae_over_constant"] == pytest.approx(np.abs(target - mean).mean() / 0.25)
    assert out["excluded_zero_target_voxels"] == 7
