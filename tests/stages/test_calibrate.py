"""tfuq calibrate on the tiny phantom with an analytic, deliberately over-confident model.

Oracles: PIT values and the closed-form sigma-scaling factor computed here with scipy from the
phantom files; the calibration error of the held-out (Inference) subject before and after."""

from __future__ import annotations

import json
import logging
import shutil
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
from tfuq.stages.calibrate import calibrate, run_calibration

SCALE = 0.05  # normalised units: 205 HU, far below the identity model's error


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("calibrate_job")
    config = tiny_config(tmp)
    prepare_data(config)
    split = read_split(config.system.dataset_split_file)
    phases = {p: next(i for i, q in split.items() if q == p) for p in ("Validation", "Inference")}
    return {"tmp": tmp, "split": split, "phantom": next((tmp / "phantom").iterdir()), **phases}


def _model(job: dict, name: str, overrides: tuple[str, ...] = (), split: dict | None = None):
    model_dir = job["tmp"] / name
    save_analytic_model(model_dir, base=SCALE)
    write_split(model_dir / "dataset_split.csv", split or job["split"], overwrite=True)
    return tiny_config(job["tmp"], ("UNCERTAINTY.mc_samples=1", *overrides), model_dir=model_dir)


def _z(job: dict, subject: str) -> np.ndarray:
    """Standardised errors of the identity model in normalised CT units (every voxel: the mask is full)."""
    x = normalised_mr(job["phantom"] / f"{subject}_mr.nii.gz")
    ct = np.asarray(nib.load(job["phantom"] / f"{subject}_ct.nii.gz").dataobj, dtype=np.float64)
    body = np.asarray(nib.load(job["phantom"] / f"{subject}_mask.nii.gz").dataobj) > 0
    return (((ct + 1024.0) / 4095.0 - x) / SCALE)[body]


def _rms(pit: np.ndarray, bins: int = 100) -> float:
    grid = np.linspace(0.0, 1.0, bins)
    observed = np.array([np.mean(pit <= p) for p in grid])
    return float(np.sqrt(np.mean((observed - grid) ** 2)))


def test_calibrate_stores_both_recalibrators_and_a_summary(job: dict) -> None:
    config = _model(job, "both")
    calibrate(config)
    folder = config.model_dir / "calibration"
    iso = IsotonicRecalibrator.load(folder / "isotonic.json")
    sigma = SigmaScaling.load(folder / "sigma_scaling.json")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dataset"] == "Validation" and summary["subjects"] == [job["Validation"]]
    z = _z(job, job["Validation"])
    assert summary["num_voxels"] == summary["num_fitted"] == z.size
    pit = stats.norm.cdf(z)
    assert summary["before"]["calibration_rms_error"] == pytest.approx(_rms(pit), abs=1e-9)
    assert summary["before"]["coverage_90"] == pytest.approx(
        np.mean(np.abs(z) <= stats.norm.ppf(0.95)), abs=1e-9
    )
    assert summary["isotonic"]["calibration_rms_error"] < 0.01 < summary["before"]["calibration_rms_error"]
    # Closed form of the sigma-scaling NLL optimum without epistemic spread: s^2 = mean(z^2).
    assert sigma.scale_factor == pytest.approx(np.sqrt(np.mean(z**2)), rel=1e-5)
    assert summary["sigma_scaling"]["scale_factor"] == sigma.scale_factor
    np.testing.assert_allclose(iso.transform(pit), iso.transform(pit))  # fitted and usable


@pytest.mark.parametrize("method", ["isotonic", "sigma_scaling"])
def test_calibration_lowers_the_held_out_calibration_error(job: dict, method: str) -> None:
    """Fitted on the Validation subject, checked on the Inference subject (independent PIT values)."""
    config = _model(job, f"held_out_{method}")
    run_calibration(config)
    z = _z(job, job["Inference"])
    before = _rms(stats.norm.cdf(z))
    folder = config.model_dir / "calibration"
    if method == "isotonic":
        after = _rms(IsotonicRecalibrator.load(folder / "isotonic.json").transform(stats.norm.cdf(z)))
    else:
        after = _rms(stats.norm.cdf(z / SigmaScaling.load(folder / "sigma_scaling.json").scale_factor))
    assert before > 0.1
    # One scale factor cannot undo the identity model's bias: sigma scaling helps, isotonic much more.
    assert after < (0.5 if method == "isotonic" else 0.9) * before


def test_no_held_out_subject_is_a_one_line_error(job: dict) -> None:
    """Never in-sample by default: without Calibration or Validation subjects, name what to set."""
    split = {i: ("Training" if p == "Validation" else p) for i, p in job["split"].items()}
    config = _model(job, "noheldout", split=split)
    with pytest.raises(UserError, match=r"no Validation subject .*list held-out subjects as Calibration"):
        run_calibration(config)
    assert not (config.model_dir / "calibration").exists()


def test_training_only_when_asked_and_flagged_in_sample(job: dict, caplog: pytest.LogCaptureFixture) -> None:
    split = {i: ("Training" if p == "Validation" else p) for i, p in job["split"].items()}
    config = _model(job, "insample", ("CALIBRATION.dataset=Training",), split=split)
    with caplog.at_level(logging.WARNING, logger="tfuq"):
        summary = run_calibration(config)
    assert "calibrating in-sample on the training subjects" in caplog.text
    assert summary["dataset"] == "Training" and summary["in_sample"] is True
    assert summary["subjects"] == sorted(i for i, p in split.items() if p == "Training")
    stored = json.loads((config.model_dir / "calibration" / "summary.json").read_text())
    assert stored["in_sample"] is True


def test_the_reliability_reference_is_fitted_on_the_same_subjects(job: dict) -> None:
    config = _model(job, "qcref")
    summary = run_calibration(config)
    stored = json.loads((config.model_dir / "calibration" / "qc_reference.json").read_text())
    assert stored == summary["qc_reference"]
    assert sorted(stored["subjects"]) == summary["subjects"] and stored["in_sample"] is False
    assert stored["flag_score"] >= 0.1 and all(v <= stored["flag_score"] for v in stored["subjects"].values())
    assert "held-out" in stored["how"]


def test_calibration_phase_is_preferred_to_validation(job: dict) -> None:
    """A split with Calibration subjects fits on them, not on the Validation ones (early stopping's)."""
    split = dict(job["split"])
    split[job["Inference"]] = "Calibration"
    summary = run_calibration(_model(job, "calphase", split=split))
    assert summary["dataset"] == "Calibration" and summary["in_sample"] is False
    assert summary["subjects"] == [job["Inference"]]


def test_max_voxels_subsamples_the_calibration_set(job: dict) -> None:
    summary = run_calibration(_model(job, "subsample", ("CALIBRATION.max_voxels=100",)))
    assert summary["num_fitted"] == 100 < summary["num_voxels"]
    iso = IsotonicRecalibrator.load(Path(job["tmp"] / "subsample" / "calibration" / "isotonic.json"))
    assert iso.num_fitted == 100


def test_calibrate_needs_a_split_and_a_model(job: dict) -> None:
    config = _model(job, "nosplit")
    Path(config.system.dataset_split_file).unlink()
    with pytest.raises(UserError, match=r"no dataset split file .*run tfuq train first"):
        run_calibration(config)
    empty = job["tmp"] / "nomodel"
    empty.mkdir()
    shutil.copy(job["tmp"] / "run" / "dataset_split.csv", empty / "dataset_split.csv")
    with pytest.raises(UserError, match=r"^no trained model in .*nomodel; run tfuq train first$"):
        run_calibration(tiny_config(job["tmp"], model_dir=empty))


def test_cross_validation_scores_each_subject_with_the_others_fit() -> None:
    """Oracle: the recalibrators fitted on one subject scored on the other, by hand."""
    from tfuq.calibration.fitting import calibration_scores, cross_validated_errors, fit_recalibrators

    rng = np.random.default_rng(0)

    def subject(spread: float) -> dict[str, np.ndarray]:
        n = 20_000
        y = rng.normal(0.0, spread, n)
        return {"mean": np.zeros(n), "epistemic_var": np.zeros(n), "aleatoric_var": np.ones(n), "target": y}

    parts = [subject(2.0), subject(0.5)]  # over- and under-confident: a fit on one hurts the other
    out = cross_validated_errors(parts, "nll", 100, seed=0)
    for i, row in enumerate(out["per_subject"]):
        iso, sigma = fit_recalibrators(parts[1 - i], objective="nll", num_bins=100)
        assert row["none"] == pytest.approx(calibration_scores(parts[i])["calibration_rms_error"])
        assert row["isotonic"] == pytest.approx(calibration_scores(parts[i], iso)["calibration_rms_error"])
        assert row["sigma_scaling"] == pytest.approx(
            calibration_scores(parts[i], sigma)["calibration_rms_error"]
        )
    assert out["mean"]["none"] < out["mean"]["isotonic"]
    assert cross_validated_errors(parts[:1], "nll", 100, seed=0) == {"mean": {}, "per_subject": []}


def test_auto_method_is_stored_and_applied(job: dict) -> None:
    from tfuq.calibration import chosen_method, load_calibration

    config = _model(job, "auto", ("CALIBRATION.method=auto",))
    summary = run_calibration(config)
    # one Validation subject: nothing to cross-validate, so auto keeps the isotonic map
    assert summary["cross_validation"] == {"mean": {}, "per_subject": []}
    assert summary["chosen_method"] == chosen_method(config.model_dir) == "isotonic"
    assert isinstance(load_calibration(config.model_dir, "auto"), IsotonicRecalibrator)
    assert chosen_method(job["tmp"] / "nowhere") == "none"


def test_feature_reference_uses_every_held_out_subject(job: dict) -> None:
    """The feature-distance reference takes the Validation subjects too (inputs only); never Training."""
    from uq_job_setup import CT_PARAMS

    from tfuq.networks.factory import build_model

    split = dict(job["split"])
    split[job["Inference"]] = "Calibration"
    model_dir = job["tmp"] / "features"
    config = tiny_config(job["tmp"], ("UNCERTAINTY.mc_samples=1",), model_dir=model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    build_model(config).save(model_dir / "model.keras")
    record = {"target": {"section": "CT", **CT_PARAMS.to_dict()}, "inputs": {}}
    (model_dir / "normalisation.json").write_text(json.dumps(record), encoding="utf-8")
    write_split(model_dir / "dataset_split.csv", split, overwrite=True)
    summary = run_calibration(config)
    assert summary["subjects"] == [job["Inference"]]
    assert sorted(summary["qc_reference"]["subjects"]) == [job["Inference"]]
    held_out = sorted(i for i, p in split.items() if p in ("Calibration", "Validation"))
    assert sorted(summary["qc_reference_features"]["subjects"]) == held_out
    assert len(held_out) >= 2 and "leave one subject out" in summary["qc_reference_features"]["how"]


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("NETWORK.base_filters=8", "[NETWORK] base_filters = 8 (trained with 4)"),
        ("UNCERTAINTY.family=laplace", "[UNCERTAINTY] family = laplace (trained with normal)"),
        ("MR.spatial_window_size=8, 8, 8", "[MR] spatial_window_size = 8, 8, 8 (trained with 16, 16, 16)"),
    ],
)
def test_a_config_contradicting_the_stored_model_is_one_line_and_writes_nothing(
    job: dict, capsys: pytest.CaptureFixture[str], override: str, phrase: str
) -> None:
    from refusal_setup import cli_error, tree_state

    config = _model(job, "contract")
    (config.model_dir / "training_config.ini").write_text(config.to_ini(), encoding="utf-8")
    before = tree_state(config.model_dir)
    line = cli_error(
        ["calibrate", str(config.path), "--set", f"SYSTEM.model_dir={config.model_dir}", "--set", override],
        capsys,
    )
    assert line.startswith("tfuq: error: tfuq calibrate: ") and phrase in line
    assert tree_state(config.model_dir) == before


def test_a_locked_model_dir_is_one_line_and_nothing_is_calibrated(job: dict) -> None:
    """Another process holding the model_dir's writer lock: calibrate refuses at once."""
    from lock_setup import assert_refused_while_locked

    config = _model(job, "locked")
    assert_refused_while_locked(config.model_dir, lambda: calibrate(config))
    assert not (config.model_dir / "calibration").exists()


def test_held_out_pools_the_calibration_and_validation_subjects(job: dict) -> None:
    split = dict(job["split"])
    split[job["Inference"]] = "Calibration"
    summary = run_calibration(_model(job, "heldout", ("CALIBRATION.dataset=held_out",), split=split))
    assert summary["dataset"] == "held_out" and summary["in_sample"] is False
    assert summary["subjects"] == sorted([job["Inference"], job["Validation"]])
    # oracle: the PIT values of both subjects pooled
    z = np.concatenate([_z(job, job["Inference"]), _z(job, job["Validation"])])
    assert summary["num_voxels"] == z.size
    assert summary["before"]["calibration_rms_error"] == pytest.approx(_rms(stats.norm.cdf(z)), abs=1e-9)
