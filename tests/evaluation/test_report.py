from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from tfuq.calibration import SigmaScaling
from tfuq.errors import UserError
from tfuq.evaluation.report import (
    REPORT_FILES,
    SUMMARY_KEYS,
    pool_curves,
    summarise,
    write_report,
    write_subject_montage,
)
from tfuq.evaluation.subject_metrics import evaluate_subject

SHAPE = (12, 12, 10)


def _subject(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 100.0, size=SHAPE)
    epi = rng.uniform(1.0, 10.0, SHAPE) * scale
    ale = rng.uniform(5.0, 20.0, SHAPE) * scale
    target = mean + np.sqrt(epi**2 + ale**2) * rng.standard_normal(SHAPE)
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 2:10, 1:9] = True
    return mean, target, epi, ale, mask


@pytest.fixture(scope="module")
def evaluated():
    rows, curves, volumes = [], [], {}
    for i, scale in enumerate((1.0, 1.5, 2.0)):
        mean, target, epi, ale, mask = _subject(i, scale)
        scaling = SigmaScaling().fit_moments(mean[mask], np.sqrt(epi**2 + ale**2)[mask], target[mask])
        row, curve = evaluate_subject(
            mean, target, epi, ale, mask=mask, subject=f"s{i}", recalibrator=scaling, return_curves=True
        )
        rows.append(row)
        curves.append(curve)
        volumes[f"s{i}"] = (mean, target, epi, ale)
    return rows, curves, volumes


def test_summary_means_and_volume_spearman(evaluated):
    rows, _, _ = evaluated
    summary = summarise(rows)
    assert summary["num_subjects"] == 3 and summary["subjects"] == ["s0", "s1", "s2"]
    assert summary["mae"] == pytest.approx(np.mean([r["mae"] for r in rows]))
    assert summary["std"]["mae"] == pytest.approx(np.std([r["mae"] for r in rows]))
    for key in SUMMARY_KEYS:
        assert key in summary
    # Volume nRMSE grows with the noise scale, as does nSTD: rank correlation 1.
    assert summary["spearman_total_volume"] == pytest.approx(1.0)
    assert math.isnan(summarise(rows[:2])["spearman_total_volume"])
    # NaN-only metrics stay NaN; absent required keys are NaN.
    only = summarise([{"subject": "a", "mae": 1.0, "x": math.nan}])
    assert math.isnan(only["x"]) and math.isnan(only["ause"])


def test_pooled_calibration_equals_the_curve_of_all_voxels(evaluated):
    from tfuq.calibration import calibration_curve

    _, curves, volumes = evaluated
    pooled = pool_curves(curves)
    # Rebuild all PIT values (normal N(mean, total std)) and compare with the weighted mean.
    from scipy import stats

    pits = []
    for mean, target, epi, ale in volumes.values():
        mask = _subject(0)[4]
        pits.append(stats.norm.cdf(target, mean, np.sqrt(epi**2 + ale**2))[mask])
    _, observed = calibration_curve(np.concatenate(pits))
    np.testing.assert_allclose(pooled["calibration"]["observed"], observed, atol=1e-12)
    assert pooled["sample"]["abs_error"].size == sum(c.sample["abs_error"].size for c in curves)
    small = pool_curves(curves, max_sample=100)
    assert small["sample"]["total"].size == 100


def test_write_report_outputs(tmp_path, evaluated):
    rows, curves, volumes = evaluated
    montages = {}
    for subject, (mean, target, epi, ale) in list(volumes.items())[:2]:
        montages[subject] = write_subject_montage(
            tmp_path,
            subject,
            input_image=target * 0.1,
            target=target,
            mean=mean,
            epistemic_std=epi,
            aleatoric_std=ale,
            units="HU",
        )
    paths = write_report(tmp_path, rows, curves, montages=montages, units="HU")
    assert set(paths) == set(REPORT_FILES)
    for name in ("calibration", "sparsification", "histograms"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["metrics"].open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["subject"] for r in table] == ["s0", "s1", "s2"]
    assert float(table[1]["mae"]) == rows[1]["mae"]  # full precision round trip
    assert float(table[0]["coverage_90_recalibrated"]) == pytest.approx(rows[0]["coverage_90_recalibrated"])
    summary = json.loads(paths["summary"].read_text())
    for key in SUMMARY_KEYS:
        assert key in summary, key
    assert summary["calibration_rms_error_recalibrated"] is not None
    assert summary["units"] == "HU"
    page = paths["html"].read_text()
    for name in ("calibration", "sparsification", "histograms"):
        assert f'src="{paths[name].name}"' in page
    for subject in montages:
        assert f'src="montages/{subject}_montage.png"' in page
    assert 'href="metrics.csv"' in page and "<table>" in page
    # All-or-nothing refusal, then overwrite.
    with pytest.raises(UserError, match="already exists"):
        write_report(tmp_path, rows, curves)
    write_report(tmp_path, rows, curves, montages=montages, embed_images=True, overwrite=True)
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 5 and 'src="calibration.png"' not in page


def test_report_without_curves_and_nan_metrics(tmp_path):
    rows = [{"subject": "a", "mae": 2.0, "calibration_rms_error_recalibrated": math.nan}]
    paths = write_report(tmp_path, rows)
    assert set(paths) == {"metrics", "summary", "html"}
    summary = json.loads(paths["summary"].read_text())  # strict JSON: NaN became null
    assert summary["calibration_rms_error_recalibrated"] is None and summary["mae"] == 2.0
    with pytest.raises(UserError, match="subject"):
        write_subject_montage(
            tmp_path,
            "../x",
            input_image=np.zeros((2, 2, 2)),
            target=np.zeros((2, 2, 2)),
            mean=np.zeros((2, 2, 2)),
            epistemic_std=np.zeros((2, 2, 2)),
            aleatoric_std=np.zeros((2, 2, 2)),
        )


def test_report_html_has_the_slice_viewer_only_when_given_payloads(tmp_path, evaluated):
    from tfuq.evaluation.viewer import viewer_payload

    rows, curves, volumes = evaluated
    payloads = [
        viewer_payload(
            subject,
            input_image=target * 0.1,
            target=target,
            mean=mean,
            epistemic_std=epi,
            aleatoric_std=ale,
            units="HU",
        )
        for subject, (mean, target, epi, ale) in volumes.items()
    ]
    page = write_report(tmp_path / "with", rows, curves, units="HU", viewers=payloads)["html"].read_text()
    assert "<h2>Slice viewer</h2>" in page and 'id="tfuq-viewer"' in page
    assert all(f'id="tfuq-viewer-subject-{i}"' in page for i in range(3))
    assert page.index("<h2>Per subject</h2>") < page.index("<h2>Slice viewer</h2>")  # the tables stay
    assert "://" not in page and "<script src" not in page
    page = write_report(tmp_path / "without", rows, curves, units="HU")["html"].read_text()
    assert "<script" not in page and "Slice viewer" not in page
