"""tfuq evaluate on the tiny phantom with an analytic over-confident model: files, summary keys,
and metrics against values computed here from the phantom files (scipy PITs, coverage, MAE)."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats
from uq_job_setup import normalised_mr, save_analytic_model, tiny_config

from tfuq.calibration import IsotonicRecalibrator, SigmaScaling
from tfuq.data import read_split, write_split
from tfuq.data.prepare import prepare_data
from tfuq.errors import UserError
from tfuq.evaluation.report import SUMMARY_KEYS
from tfuq.evaluation.viewer import decode_payload
from tfuq.stages.calibrate import run_calibration
from tfuq.stages.evaluate import evaluate, run_evaluation

SCALE = 0.05


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("evaluate_job")
    config = tiny_config(tmp)
    prepare_data(config)
    split = read_split(config.system.dataset_split_file)
    subject = next(i for i, p in split.items() if p == "Inference")
    return {"tmp": tmp, "split": split, "subject": subject, "phantom": next((tmp / "phantom").iterdir())}


def _config(job: dict, name: str, overrides: tuple[str, ...] = ()):
    model_dir = job["tmp"] / name
    save_analytic_model(model_dir, base=SCALE)
    write_split(model_dir / "dataset_split.csv", job["split"], overwrite=True)
    return tiny_config(job["tmp"], ("UNCERTAINTY.mc_samples=1", *overrides), model_dir=model_dir)


def _truth(job: dict) -> dict[str, np.ndarray]:
    s, folder = job["subject"], job["phantom"]
    ct = np.asarray(nib.load(folder / f"{s}_ct.nii.gz").dataobj, dtype=np.float64)
    body = np.asarray(nib.load(folder / f"{s}_mask.nii.gz").dataobj) > 0
    mean = normalised_mr(folder / f"{s}_mr.nii.gz") * 4095.0 - 1024.0
    return {"ct": ct[body], "mean": mean[body], "z": (ct - mean)[body] / (SCALE * 4095.0)}


def _rms(pit: np.ndarray, bins: int = 100) -> float:
    grid = np.linspace(0.0, 1.0, bins)
    return float(np.sqrt(np.mean((np.array([np.mean(pit <= p) for p in grid]) - grid) ** 2)))


def test_evaluate_infers_missing_maps_and_writes_the_report(
    job: dict, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(job, "report")
    run_calibration(config)
    with caplog.at_level(logging.INFO, logger="tfuq"):
        summary = run_evaluation(config)
    assert f"no inference maps for {job['subject']}: running tfuq infer" in caplog.text
    out = Path(config.evaluation.save_csv_dir)
    for name in (
        "metrics.csv",
        "summary.json",
        "calibration.png",
        "rmse_vs_retained.png",
        "error_histograms.png",
    ):
        assert (out / name).stat().st_size > 0
    montage = out / "montages" / f"{job['subject']}_montage.png"
    assert montage.stat().st_size > 0
    html = (out / "report.html").read_text()
    assert all(name in html for name in ("calibration.png", "rmse_vs_retained.png", montage.name))
    written = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(written) and written["units"] == "HU"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["subject"] for r in rows] == [job["subject"]]
    truth = _truth(job)
    assert summary["mae"] == pytest.approx(np.mean(np.abs(truth["ct"] - truth["mean"])), rel=1e-5)
    pit = stats.norm.cdf(truth["z"])
    assert summary["calibration_rms_error"] == pytest.approx(_rms(pit), abs=1e-6)
    assert summary["coverage_90"] == pytest.approx(
        np.mean(np.abs(truth["z"]) <= stats.norm.ppf(0.95)), abs=1e-4
    )
    assert summary["sharpness"] == pytest.approx(SCALE * 4095.0, rel=1e-4)
    iso = IsotonicRecalibrator.load(config.model_dir / "calibration" / "isotonic.json")
    assert summary["calibration_rms_error_recalibrated"] == pytest.approx(_rms(iso.transform(pit)), abs=1e-6)
    assert summary["calibration_rms_error_recalibrated"] < summary["calibration_rms_error"]
    # the trivial baselines and the correlation, against NumPy on the phantom files
    assert summary["pearson"] == pytest.approx(stats.pearsonr(truth["ct"], truth["mean"])[0], rel=1e-5)
    median = np.median(truth["ct"])
    assert summary["baseline_constant_mae"] == pytest.approx(np.mean(np.abs(truth["ct"] - median)), rel=1e-5)
    assert summary["mae_over_constant"] == pytest.approx(
        summary["mae"] / summary["baseline_constant_mae"], rel=1e-6
    )
    assert summary["excluded_zero_target_voxels"] == 0
    assert written["calibration"]["in_sample"] is False and written["calibration"]["dataset"] == "Validation"
    assert "Recalibration fitted on the held-out Validation subject(s)" in html
    assert "MAE / best constant" in html
    # the slice viewer holds the subject: the truth it shows is the CT file's at the voxel it names
    assert "<h2>Slice viewer</h2>" in html and f'<option value="0">{job["subject"]}</option>' in html
    payload = json.loads(re.search(r'id="tfuq-viewer-subject-0">(.*?)</script>', html, re.S).group(1))
    ct = np.asarray(nib.load(job["phantom"] / f"{job['subject']}_ct.nii.gz").dataobj, dtype=np.float64)
    assert payload["subject"] == job["subject"] and payload["source_shape"] == list(ct.shape)
    grids = np.meshgrid(*(np.asarray(i) for i in payload["source_index"]), indexing="ij")
    stored = [grids[payload["source_axis"].index(axis)] for axis in range(3)]
    step = next(p["step"] for p in payload["panels"] if p["name"] == "target")
    assert np.max(np.abs(decode_payload(payload)["target"] - ct[tuple(stored)])) <= step / 2 * (1 + 1e-9)


def test_sigma_scaling_scores_scale_the_aleatoric_std(job: dict) -> None:
    config = _config(job, "sigma", ("CALIBRATION.method=sigma_scaling",))
    run_calibration(config)
    summary = run_evaluation(config)
    s = SigmaScaling.load(config.model_dir / "calibration" / "sigma_scaling.json").scale_factor
    z = _truth(job)["z"]
    assert summary["calibration_rms_error_recalibrated"] == pytest.approx(
        _rms(stats.norm.cdf(z / s)), abs=1e-6
    )
    assert summary["coverage_90_recalibrated"] == pytest.approx(
        np.mean(np.abs(z / s) <= stats.norm.ppf(0.95)), abs=1e-4
    )
    assert summary["sharpness_recalibrated"] == pytest.approx(s * SCALE * 4095.0, rel=1e-4)


def test_existing_outputs_are_refused_unless_overwrite(job: dict) -> None:
    config = _config(job, "again")
    evaluate(config)
    with pytest.raises(UserError, match=r"summary.json|metrics.csv"):
        evaluate(config)
    evaluate(_config(job, "again", ("EVALUATION.overwrite=true",)))


def test_evaluation_needs_the_target(job: dict) -> None:
    config = _config(job, "notarget", ("CT.filename_contains=_no_such_file",))
    with pytest.raises(UserError, match=r"\[CT\] no target file"):
        evaluate(config)


def test_a_target_zero_in_over_1_percent_of_the_mask_is_left_out_with_a_warning(
    job: dict, caplog: pytest.LogCaptureFixture
) -> None:
    s, folder = job["subject"], job["phantom"]
    path = folder / f"{s}_ct.nii.gz"
    original = path.read_bytes()
    image = nib.load(path)
    ct = np.asarray(image.dataobj, dtype=np.float32)
    body = np.asarray(nib.load(folder / f"{s}_mask.nii.gz").dataobj) > 0
    zero = np.zeros(ct.shape, bool)
    zero[: ct.shape[0] // 4] = True
    zero &= body
    assert zero.sum() > 0.01 * body.sum()
    try:
        nib.save(nib.Nifti1Image(np.where(zero, 0.0, ct).astype(np.float32), image.affine), path)
        config = _config(job, "zeros", ("EVALUATION.overwrite=true",))
        with caplog.at_level(logging.WARNING, logger="tfuq"):
            summary = run_evaluation(config)
    finally:
        path.write_bytes(original)
    assert f"the target is 0 in {100 * zero.sum() / body.sum():.1f} % of the mask" in caplog.text
    assert summary["excluded_zero_target_voxels"] == int(zero.sum())
    kept = body & ~zero
    mean = normalised_mr(folder / f"{s}_mr.nii.gz") * 4095.0 - 1024.0
    assert summary["mae"] == pytest.approx(np.mean(np.abs(ct - mean)[kept]), rel=1e-5)


def test_an_in_sample_calibration_is_a_warning_in_the_log_summary_and_report(
    job: dict, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(job, "insample", ("CALIBRATION.dataset=Training",))
    run_calibration(config)
    with caplog.at_level(logging.WARNING, logger="tfuq"):
        summary = run_evaluation(config)
    assert "fitted on Training subjects (in-sample)" in caplog.text
    assert summary["calibration"]["in_sample"] is True and summary["calibration"]["dataset"] == "Training"
    html = (Path(config.evaluation.save_csv_dir) / "report.html").read_text()
    assert "<b>Warning:</b> the recalibration was fitted on Training subjects" in html


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_evaluation_folder_that_is_a_file_is_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    from export_setup import load, make_app, save_trained
    from refusal_setup import cli_error, tree_state

    ini = make_app(tmp_path)
    save_trained(load(ini))  # no maps yet: evaluate would infer them first
    occupied = tmp_path / "occupied"
    occupied.write_text("a file, not a folder")
    folder = occupied if where == "a file" else occupied / "evaluation"
    before = tree_state(tmp_path)
    line = cli_error(["evaluate", str(ini), "--set", f"EVALUATION.save_csv_dir={folder}"], capsys)
    assert "[EVALUATION] save_csv_dir" in line and "file" in line
    assert tree_state(tmp_path) == before  # no inference maps written either


def test_an_evaluation_folder_outside_model_dir_is_logged(
    job: dict, caplog: pytest.LogCaptureFixture
) -> None:
    outside = job["tmp"] / "evaluation_elsewhere"
    config = _config(job, "outside", (f"EVALUATION.save_csv_dir={outside}",))
    with caplog.at_level(logging.INFO, logger="tfuq"):
        run_evaluation(config)
    assert caplog.text.count(f"writing outside model_dir: {outside}") == 1
    assert (outside / "summary.json").is_file()
