from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tfuq.calibration import SigmaScaling
from tfuq.evaluation import MetricSettings
from tfuq.evaluation import image_metrics as im
from tfuq.evaluation import uq_metrics as uq
from tfuq.evaluation.subject_metrics import STD_KINDS, SubjectCurves, evaluate_subject

SHAPE = (16, 16, 12)


@pytest.fixture(scope="module")
def case():
    # A calibrated synthetic prediction: y = mean + total_std * z, with a body mask.
    rng = np.random.default_rng(0)
    mean = rng.normal(0.0, 200.0, size=SHAPE)
    epistemic = rng.uniform(2.0, 20.0, size=SHAPE)
    aleatoric = rng.uniform(5.0, 40.0, size=SHAPE)
    total = np.sqrt(epistemic**2 + aleatoric**2)
    target = mean + total * rng.standard_normal(SHAPE)
    mask = np.zeros(SHAPE, bool)
    mask[2:14, 3:13, 1:11] = True
    return mean, target, epistemic, aleatoric, total, mask


def test_row_has_every_listed_metric_and_matches_the_functions(case):
    mean, target, epi, ale, total, mask = case
    row = evaluate_subject(mean, target, epi, ale, mask=mask, subject="s1")
    assert row["subject"] == "s1" and row["num_voxels"] == int(mask.sum())
    for key in (
        "mae",
        "mse",
        "rmse",
        "psnr",
        "ssim",
        "nrmse",
        "nstd",
        "nll",
        "calibration_rms_error",
        "calibration_rms_error_recalibrated",
        "miscalibration_area",
        "miscalibration_area_recalibrated",
        "coverage_50",
        "coverage_90",
        "coverage_95",
        "sharpness",
        "ause",
        "ause_epistemic",
        "ause_aleatoric",
        *(f"spearman_{k}_{lv}" for k in STD_KINDS for lv in ("voxel", "slice")),
    ):
        assert key in row and f"{key}_image" in row, key
    assert row["mae"] == pytest.approx(im.mae(target, mean, mask))
    assert row["mae_image"] == pytest.approx(im.mae(target, mean))
    assert row["psnr"] == pytest.approx(im.psnr(target, mean, mask))
    floor = target[mask].min()  # SSIM measured from the truth's minimum in the mask
    assert row["ssim"] == pytest.approx(im.ssim(target - floor, mean - floor, mask))
    assert row["nstd"] == pytest.approx(im.nstd(total, mask))
    assert row["ause"] == pytest.approx(uq.ause(target - mean, total, mask))
    assert row["spearman_aleatoric_voxel"] == pytest.approx(
        stats.spearmanr(np.abs(target - mean)[mask], ale[mask]).statistic
    )
    assert row["nll"] == pytest.approx(-np.mean(stats.norm.logpdf(target, mean, total)[mask]), rel=1e-9)
    # Calibrated by construction (12*10*10 = 1200 voxels in the mask).
    assert row["calibration_rms_error"] < 0.05
    assert row["coverage_90"] == pytest.approx(0.9, abs=0.03)
    assert math.isnan(row["calibration_rms_error_recalibrated"])
    # Errors scale with the total std: the voxel-level correlation is positive.
    assert row["spearman_total_voxel"] > 0.2


def test_total_std_default_and_no_mask(case):
    mean, target, epi, ale, total, _ = case
    row = evaluate_subject(mean, target, epi, ale, total, settings=MetricSettings(whole_image=False))
    assert "mae_image" not in row
    assert row == pytest.approx(
        evaluate_subject(mean, target, epi, ale, settings=MetricSettings(whole_image=False)), nan_ok=True
    )
    both = evaluate_subject(mean, target, epi, ale, total)
    assert both["ause_image"] == both["ause"]


def test_recalibrator_and_curves(case):
    mean, target, epi, ale, total, mask = case
    # Twice too confident; sigma scaling fitted on the same case doubles the spread back.
    scaling = SigmaScaling().fit_moments(mean, total / 2, target)
    row, curves = evaluate_subject(
        mean,
        target,
        epi / 2,
        ale / 2,
        mask=mask,
        recalibrator=scaling,
        return_curves=True,
        settings=MetricSettings(sample_size=50),
    )
    assert row["coverage_90"] < 0.7
    assert row["coverage_90_recalibrated"] == pytest.approx(0.9, abs=0.03)
    assert row["calibration_rms_error_recalibrated"] < row["calibration_rms_error"]
    assert isinstance(curves, SubjectCurves)
    assert curves.num_voxels == int(mask.sum())
    assert curves.calibration["observed_recalibrated"].shape == (100,)
    assert set(curves.sparsification) == {"fractions", "oracle", *STD_KINDS}
    assert curves.sample["abs_error"].shape == (50,)
    # Sample entries belong together: |error| and the stds of the same voxels.
    index = np.flatnonzero(np.isin(np.abs(target - mean)[mask], curves.sample["abs_error"]))
    assert index.size == 50
    np.testing.assert_allclose(curves.sample["total"], (total / 2)[mask][index])


def test_given_params_and_errors(case):
    from tfuq.distributions import family as fam

    mean, target, epi, ale, total, mask = case
    params = fam.unconstrain("laplace", mean, total / math.sqrt(2.0)).numpy()
    row = evaluate_subject(
        mean,
        target,
        epi,
        ale,
        mask=mask,
        params=params,
        settings=MetricSettings(family="laplace", whole_image=False),
    )
    laplace_nll = -np.mean(stats.laplace.logpdf(target, mean, total / math.sqrt(2.0))[mask])
    assert row["nll"] == pytest.approx(laplace_nll, rel=1e-5)
    with pytest.raises(ValueError, match="normal"):
        evaluate_subject(mean, target, epi, ale, settings=MetricSettings(family="laplace"))
    with pytest.raises(ValueError, match=">= 0"):
        evaluate_subject(mean, target, -epi, ale)
    with pytest.raises(ValueError, match="one shape"):
        evaluate_subject(mean, target[:-1], epi, ale)
    with pytest.raises(ValueError, match="Interval maps"):
        evaluate_subject(mean, target, epi, ale, intervals={0.9: (mean[:-1], mean[:-1])})
