"""tfuq.evaluation.lesion: std, ratio, AUROC and MAE inside a lesion vs the rest of the mask,
against hand-computed values; the lesion keys in evaluate_subject rows, summaries and report.html."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tfuq.evaluation import MetricSettings, evaluate_subject, write_report
from tfuq.evaluation.lesion import LESION_KEYS, lesion_metrics
from tfuq.evaluation.report_html import render_report


def _case() -> dict[str, np.ndarray]:
    """A 2x3x1 image: mask = all but voxel (1, 2); lesion labels at (0, 0) (=1), (0, 1) (=4), (1, 2) (=2)."""
    shape = (2, 3, 1)
    return {
        "mean": np.zeros(shape),
        "target": np.array([[4.0, 2.0, 1.0], [1.0, 3.0, 9.0]])[..., None],
        "epistemic": np.array([[3.0, 1.0, 1.0], [0.5, 2.0, 7.0]])[..., None],
        "aleatoric": np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 7.0]])[..., None],
        "lesion": np.array([[1, 4, 0], [0, 0, 2]])[..., None],
        "mask": np.array([[True, True, True], [True, True, False]])[..., None],
    }


def _metrics(case: dict[str, np.ndarray], **kwargs: object) -> dict[str, float]:
    return lesion_metrics(
        case["mean"],
        case["target"],
        case["epistemic"],
        case["aleatoric"],
        case["lesion"],
        case["mask"],
        **kwargs,
    )


def test_hand_computed_values_inside_the_mask() -> None:
    out = _metrics(_case())
    assert list(out) == list(LESION_KEYS)
    # Lesion in the mask: (0,0), (0,1); the rest: (0,2), (1,0), (1,1); (1,2) is outside the mask.
    assert out["lesion_num_voxels"] == 2 and out["nonlesion_num_voxels"] == 3
    assert out["lesion_epistemic_std"] == pytest.approx(2.0)  # (3 + 1) / 2
    assert out["nonlesion_epistemic_std"] == pytest.approx(3.5 / 3)  # (1 + 0.5 + 2) / 3
    assert out["lesion_epistemic_ratio"] == pytest.approx(2.0 / (3.5 / 3))
    # Pairs (lesion, rest): 3 beats all 3; 1 ties 1 (half), beats 0.5, loses to 2 -> (3 + 1.5) / 6.
    assert out["lesion_epistemic_auroc"] == pytest.approx(4.5 / 6)
    assert out["lesion_aleatoric_std"] == pytest.approx(0.5)
    assert out["nonlesion_aleatoric_std"] == pytest.approx(4.0 / 3)
    # Lesion 0, 1 against 2, 1, 1: 0 loses all; 1 ties two (1) and loses one -> 1 / 6.
    assert out["lesion_aleatoric_auroc"] == pytest.approx(1.0 / 6)
    total_in = (3.0 + math.sqrt(2.0)) / 2
    total_out = (math.sqrt(5.0) + math.sqrt(1.25) + math.sqrt(5.0)) / 3
    assert out["lesion_total_std"] == pytest.approx(total_in)
    assert out["nonlesion_total_std"] == pytest.approx(total_out)
    assert out["lesion_total_ratio"] == pytest.approx(total_in / total_out)
    # 3 beats all; sqrt 2 = 1.414 beats sqrt 1.25 only -> 4 / 6.
    assert out["lesion_total_auroc"] == pytest.approx(4.0 / 6)
    assert out["lesion_mae"] == pytest.approx(3.0)  # (4 + 2) / 2
    assert out["nonlesion_mae"] == pytest.approx(5.0 / 3)  # (1 + 1 + 3) / 3


def test_given_total_std_is_used_and_no_mask_means_every_voxel() -> None:
    case = _case()
    total = np.arange(6, dtype=np.float64).reshape(2, 3, 1)
    out = lesion_metrics(
        case["mean"], case["target"], case["epistemic"], case["aleatoric"], case["lesion"], total_std=total
    )
    # Lesion (0,0)=0, (0,1)=1, (1,2)=5 against (0,2)=2, (1,0)=3, (1,1)=4: only 5 wins (3 of 9 pairs).
    assert out["lesion_num_voxels"] == 3 and out["nonlesion_num_voxels"] == 3
    assert out["lesion_total_std"] == pytest.approx(2.0) and out["nonlesion_total_std"] == pytest.approx(3.0)
    assert out["lesion_total_auroc"] == pytest.approx(3.0 / 9)
    assert out["lesion_mae"] == pytest.approx(5.0)  # (4 + 2 + 9) / 3


@pytest.mark.parametrize("where", ["none", "all"])
def test_an_empty_side_gives_counts_and_nan(where: str) -> None:
    case = _case()
    case["lesion"] = np.zeros_like(case["lesion"]) if where == "none" else case["mask"].astype(int)
    out = _metrics(case)
    assert out["lesion_num_voxels"] == (0 if where == "none" else 5)
    assert all(math.isnan(v) for k, v in out.items() if not k.endswith("num_voxels"))


def test_shape_mismatch_is_a_value_error() -> None:
    case = _case()
    case["lesion"] = case["lesion"][:, :2]
    with pytest.raises(ValueError, match="lesion of shape"):
        _metrics(case)


def test_evaluate_subject_adds_the_keys_only_with_a_lesion() -> None:
    rng = np.random.default_rng(0)
    shape = (8, 8, 4)
    target = rng.normal(size=shape)
    epi, ale = rng.uniform(0.1, 1.0, size=shape), rng.uniform(0.1, 1.0, size=shape)
    lesion = np.zeros(shape, int)
    lesion[2:4, 2:4, :] = 2
    epi[2:4, 2:4, :] += 5.0  # every lesion voxel is more uncertain
    mask = np.ones(shape, bool)
    mask[0] = False
    args = (np.zeros(shape), target, epi, ale)
    row = evaluate_subject(*args, mask=mask, lesion=lesion, settings=MetricSettings(whole_image=False))
    expected = _lesion_oracle(target, epi, lesion != 0, mask)
    assert row["lesion_epistemic_auroc"] == 1.0
    assert row["lesion_epistemic_ratio"] == pytest.approx(expected["ratio"])
    assert row["lesion_mae"] == pytest.approx(expected["lesion_mae"])
    assert row["lesion_num_voxels"] == 16
    assert not any(k.startswith(("lesion_", "nonlesion_")) for k in evaluate_subject(*args, mask=mask))


def _lesion_oracle(target: np.ndarray, std: np.ndarray, lesion: np.ndarray, mask: np.ndarray) -> dict:
    inside, outside = lesion & mask, mask & ~lesion
    return {
        "ratio": std[inside].mean() / std[outside].mean(),
        "lesion_mae": np.abs(target[inside]).mean(),
    }


def _rows() -> list[dict]:
    base = {"subject": "a", "mae": 1.0}
    with_lesion = {**base, **_metrics(_case())}
    return [with_lesion, {**base, "subject": "b", **dict.fromkeys(LESION_KEYS, math.nan)}]


def test_summary_and_report_hold_the_lesion_keys(tmp_path) -> None:
    rows = _rows()
    paths = write_report(tmp_path, rows)
    summary = json.loads(paths["summary"].read_text())
    # Subject b has no lesion voxel (NaN): the mean is subject a's value.
    assert summary["lesion_epistemic_auroc"] == pytest.approx(4.5 / 6)
    assert summary["lesion_mae"] == pytest.approx(3.0)
    header = paths["metrics"].read_text().splitlines()[0].split(",")
    assert {"lesion_epistemic_ratio", "lesion_epistemic_auroc", "nonlesion_mae"} <= set(header)
    html = paths["html"].read_text()
    assert "Lesion against the rest of the mask" in html
    assert html.count("<td>epistemic</td>") == 2  # one row per subject


def test_report_without_lesion_has_no_lesion_table(tmp_path) -> None:
    rows = [{"subject": "a", "mae": 1.0}]
    html = render_report(tmp_path, {"num_subjects": 1, "mae": 1.0}, rows, {}, {})
    assert "Lesion" not in html
    summary = json.loads(write_report(tmp_path, rows)["summary"].read_text())
    assert not any(k.startswith("lesion_") for k in summary)
