from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from tfuq.config.sections import EvaluationSection
from tfuq.evaluation.report import SUMMARY_KEYS, write_report
from tfuq.evaluation.selection import METRIC_GROUPS, metric_group, select_metrics
from tfuq.evaluation.subject_metrics import evaluate_subject


def _row(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shape = (10, 10, 8)
    mean = rng.normal(0.0, 100.0, shape)
    epi, ale = rng.uniform(1.0, 10.0, shape), rng.uniform(5.0, 20.0, shape)
    target = mean + np.hypot(epi, ale) * rng.standard_normal(shape)
    lesion = np.zeros(shape, bool)
    lesion[2:5, 2:5, 2:5] = True
    return evaluate_subject(mean, target, epi, ale, lesion=lesion, subject=f"s{seed}")


def test_every_metric_column_belongs_to_a_group_and_the_groups_are_the_config_choices():
    row = _row()
    hand = {
        "mae": "mae",
        "mse_image": "mse",
        "rmse": "rmse",
        "nrmse_image": "nrmse",
        "nstd_aleatoric": "nrmse",
        "calibration_rms_error_recalibrated_image": "calibration",
        "miscalibration_area": "calibration",
        "coverage_95_recalibrated": "coverage",
        "spearman_epistemic_voxel": "spearman",
        "ause_aleatoric_image": "ause",
        "subject": None,
        "num_voxels": None,
        "lesion_epistemic_auroc": None,
        "nonlesion_mae": None,
    }
    assert {k: metric_group(k) for k in hand} == hand
    kept = {"subject", "num_voxels"} | {k for k in row if k.startswith(("lesion_", "nonlesion_"))}
    assert all(metric_group(k) is not None for k in row if k not in kept)  # no metric escapes selection
    field = next(f for f in dataclasses.fields(EvaluationSection) if f.name == "evaluations")
    assert set(field.metadata["choices"]) == set(METRIC_GROUPS)
    assert set(EvaluationSection().evaluations) == set(METRIC_GROUPS)  # the default reports every group


def test_select_metrics_hand_fixture():
    row = {"subject": "a", "mae": 1.0, "mae_image": 2.0, "mse": 3.0, "coverage_90": 0.9, "lesion_mae": 4.0}
    assert select_metrics(row, ["mae"]) == {"subject": "a", "mae": 1.0, "mae_image": 2.0, "lesion_mae": 4.0}
    assert list(select_metrics(row, ["coverage", "mse"])) == ["subject", "mse", "coverage_90", "lesion_mae"]
    assert select_metrics(row, METRIC_GROUPS) == row
    with pytest.raises(ValueError, match="evaluations"):
        select_metrics(row, ["dice"])


def test_write_report_leaves_unselected_groups_out(tmp_path):
    rows = [_row(0), _row(1)]
    paths = write_report(tmp_path, rows, evaluations=["mae", "coverage"], extra={"target_units": "native"})
    with open(paths["metrics"], newline="") as f:
        header = next(csv.reader(f))
    assert {metric_group(k) for k in header} == {None, "mae", "coverage"}
    assert "mae_image" in header and "coverage_50_recalibrated" in header and "ssim" not in header
    summary = json.loads(paths["summary"].read_text())
    assert summary["mae"] == pytest.approx(np.mean([r["mae"] for r in rows]))
    assert set(SUMMARY_KEYS) <= set(summary)  # required keys stay, unselected ones null
    assert summary["ssim"] is None and summary["nll"] is None and summary["coverage_90"] is not None
    assert not any(k.startswith("spearman") for k in summary)
    assert set(summary["std"]) <= {k for k in header if k != "subject"}
    assert math.isfinite(summary["lesion_epistemic_ratio"])
    assert summary["target_units"] == "native"
