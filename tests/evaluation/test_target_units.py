"""[EVALUATION] target_units: tfuq evaluate in native or normalised target units.

Oracle: maps written straight into save_seg_dir whose mean is an exact affine
transform of the subject's truth, ``gain * (ct - m) + m + shift`` (m, s: the
truth's own mean and std inside the body, computed here with NumPy), from a
model whose stored target normalisation is ``zscore(m + shift, gain * s)``.
In normalised units the prediction is then exactly the truth (MAE 0, z = 0);
in native units the error is ``(1 - gain) * (ct - m) - shift``; std maps are
divided by ``gain * s``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from uq_job_setup import save_analytic_model, tiny_config

from tfuq.calibration import IsotonicRecalibrator, SigmaScaling
from tfuq.calibration.stored import calibration_path
from tfuq.config import ConfigError, load_config
from tfuq.data import read_split, write_split
from tfuq.data.nifti import volume_from_array
from tfuq.data.normalisation import NormalisationParams
from tfuq.errors import UserError
from tfuq.evaluation.units import normalised_maps, normalised_target
from tfuq.inference.outputs import output_paths
from tfuq.stages.evaluate import evaluation_units, run_evaluation

#: Constant std maps written in native units.
EPISTEMIC, ALEATORIC = 30.0, 40.0
TOTAL = 50.0
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
TARGET_ZSCORE = ("CT.intensity_normalisation=zscore", "CT.normalise_foreground_only=true")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tfuq.data.prepare import prepare_data

    tmp = tmp_path_factory.mktemp("target_units")
    config = tiny_config(tmp)
    prepare_data(config)
    split = read_split(config.system.dataset_split_file)
    subject = next(i for i, p in split.items() if p == "Inference")
    folder = next((tmp / "phantom").iterdir())
    image = nib.load(folder / f"{subject}_ct.nii.gz")
    ct = np.asarray(image.dataobj, dtype=np.float64)
    body = np.asarray(nib.load(folder / f"{subject}_mask.nii.gz").dataobj) > 0
    return {
        "tmp": tmp,
        "split": split,
        "subject": subject,
        "ct": ct,
        "body": body,
        "affine": image.affine,
        "m": float(ct[body].mean()),
        "s": float(ct[body].std()),
    }


def _config(
    job: dict,
    name: str,
    gain: float,
    shift: float,
    overrides: tuple[str, ...] = (),
    *,
    mean: np.ndarray | None = None,
):
    """A run whose stored target normalisation is zscore(m + shift, gain * s), maps already written.

    The mean map is ``gain * (ct - m) + m + shift`` unless ``mean`` is given.
    """
    model_dir = job["tmp"] / name
    params = NormalisationParams("zscore", job["m"] + shift, gain * job["s"])
    save_analytic_model(model_dir, params)
    write_split(model_dir / "dataset_split.csv", job["split"], overwrite=True)
    config = tiny_config(job["tmp"], (*TARGET_ZSCORE, *overrides), model_dir=model_dir)
    maps = {
        "mean": gain * (job["ct"] - job["m"]) + job["m"] + shift if mean is None else mean,
        "epistemic_std": np.full(job["ct"].shape, EPISTEMIC),
        "aleatoric_std": np.full(job["ct"].shape, ALEATORIC),
        "total_std": np.full(job["ct"].shape, TOTAL),
    }
    paths = output_paths(config.inference.save_seg_dir, job["subject"])
    Path(config.inference.save_seg_dir).mkdir(parents=True, exist_ok=True)
    for key, array in maps.items():
        nib.save(nib.Nifti1Image(array.astype(np.float32), job["affine"]), paths[key])
    return config


@pytest.mark.parametrize(("gain", "shift"), [(1.0, 100.0), (0.5, -300.0)])
def test_normalised_units_remove_the_scan_units_native_keep_them(
    job: dict, gain: float, shift: float
) -> None:
    name = f"g{gain}_s{shift}"
    native = run_evaluation(_config(job, f"native_{name}", gain, shift))
    normalised = run_evaluation(
        _config(job, f"normalised_{name}", gain, shift, ("EVALUATION.target_units=normalised",))
    )
    ct, body, m = job["ct"], job["body"], job["m"]
    error = (1.0 - gain) * (ct - m) - shift  # truth - mean, native units
    assert native["mae"] == pytest.approx(np.mean(np.abs(error[body])), rel=1e-5, abs=1e-3)
    assert native["sharpness"] == pytest.approx(TOTAL, rel=1e-6)
    z = error[body] / TOTAL
    assert native["nll"] == pytest.approx(np.mean(0.5 * z * z) + math.log(TOTAL) + HALF_LOG_2PI, rel=1e-4)
    scale = gain * job["s"]
    assert normalised["mae"] == pytest.approx(0.0, abs=1e-5)
    assert normalised["mae_image"] == pytest.approx(0.0, abs=1e-5)
    assert normalised["sharpness"] == pytest.approx(TOTAL / scale, rel=1e-6)
    assert normalised["nll"] == pytest.approx(math.log(TOTAL / scale) + HALF_LOG_2PI, rel=1e-4, abs=1e-5)
    assert normalised["coverage_50"] == pytest.approx(1.0)
    written = json.loads(Path(normalised["paths"]["summary"]).read_text())
    assert (written["target_units"], written["units"]) == ("normalised", "normalised")
    assert written["mae"] == pytest.approx(normalised["mae"])
    assert json.loads(Path(native["paths"]["summary"]).read_text())["target_units"] == "native"
    assert native["units"] == "HU"
    assert Path(normalised["paths"][job["subject"]]).stat().st_size > 0


def test_native_shift_alone_is_the_whole_error(job: dict) -> None:
    # Hand-computed: the mean is truth + 100 everywhere, std 50, so z = -2 and |z| > 1.96.
    native = run_evaluation(_config(job, "shift_only", 1.0, 100.0))
    assert native["mae"] == pytest.approx(100.0, rel=1e-5)
    assert native["nll"] == pytest.approx(2.0 + math.log(50.0) + HALF_LOG_2PI, rel=1e-5)
    assert native["coverage_95"] == pytest.approx(0.0)


def test_sigma_scaling_applies_in_normalised_units(job: dict) -> None:
    config = _config(
        job,
        "sigma",
        2.0,
        0.0,
        ("EVALUATION.target_units=normalised", "CALIBRATION.method=sigma_scaling"),
    )
    scaling = SigmaScaling()
    scaling.scale_factor = 3.0
    path = calibration_path(config.model_dir, "sigma_scaling")
    path.parent.mkdir(parents=True, exist_ok=True)
    scaling.save(path)
    summary = run_evaluation(config)
    expected = math.sqrt(EPISTEMIC**2 + (3.0 * ALEATORIC) ** 2) / (2.0 * job["s"])
    assert summary["sharpness_recalibrated"] == pytest.approx(expected, rel=1e-5)
    assert summary["sharpness"] == pytest.approx(TOTAL / (2.0 * job["s"]), rel=1e-6)


def test_recalibration_is_unchanged_when_truth_and_maps_get_the_same_map(job: dict) -> None:
    # Stored normalisation = the subject's own fit (as for a single training subject): PIT values,
    # coverage and the isotonic recalibration are the same in both units; NLL differs by log(s).
    rng = np.random.default_rng(0)
    mean = job["ct"] + rng.normal(0.0, 60.0, job["ct"].shape)
    iso = IsotonicRecalibrator().fit(rng.beta(2.0, 2.0, 5000))
    runs = {}
    for units in ("native", "normalised"):
        overrides = (f"EVALUATION.target_units={units}", "CALIBRATION.method=isotonic")
        config = _config(job, f"same_map_{units}", 1.0, 0.0, overrides, mean=mean)
        path = calibration_path(config.model_dir, "isotonic")
        path.parent.mkdir(parents=True, exist_ok=True)
        iso.save(path)
        runs[units] = run_evaluation(config)
    native, normalised = runs["native"], runs["normalised"]
    for key in ("calibration_rms_error", "calibration_rms_error_recalibrated", "coverage_90"):
        assert normalised[key] == pytest.approx(native[key], abs=1e-6), key
    assert native["calibration_rms_error_recalibrated"] != pytest.approx(native["calibration_rms_error"])
    assert native["nll"] - normalised["nll"] == pytest.approx(math.log(job["s"]), rel=1e-5)
    assert native["mae"] / normalised["mae"] == pytest.approx(job["s"], rel=1e-5)


def test_normalised_units_need_the_stored_normalisation(job: dict) -> None:
    config = _config(job, "no_record", 1.0, 0.0, ("EVALUATION.target_units=normalised",))
    (Path(config.model_dir) / "normalisation.json").unlink()
    with pytest.raises(UserError, match=r"normalisation\.json: missing; \[EVALUATION\] target_units") as info:
        run_evaluation(config)
    assert "\n" not in str(info.value)


def test_normalised_maps_divide_stds_by_the_scale() -> None:
    params = NormalisationParams("percentile", 200.0, 400.0)
    out = normalised_maps(
        {"mean": np.array([200.0, 600.0, 0.0]), "total_std": np.array([40.0, 0.0, 4.0])}, params
    )
    np.testing.assert_allclose(out["mean"], [0.0, 1.0, -0.5])
    np.testing.assert_allclose(out["total_std"], [0.1, 0.0, 0.01])
    with pytest.raises(ValueError, match="mean map 'mean'"):
        normalised_maps({"total_std": np.ones(2)}, params)


def test_normalised_target_fits_inside_the_mask_only_when_asked(tmp_path: Path) -> None:
    values = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    mask = values >= 12
    volume = volume_from_array(values, np.eye(4))
    config = tiny_config(tmp_path, ("CT.intensity_normalisation=minmax", "CT.normalise_foreground_only=true"))
    out, params = normalised_target(config.sources["CT"], volume, mask)
    assert (params.offset, params.scale) == (12.0, 11.0)
    np.testing.assert_allclose(out, (values - 12.0) / 11.0)
    whole = tiny_config(tmp_path, ("CT.intensity_normalisation=minmax",))
    _, params = normalised_target(whole.sources["CT"], volume, mask)
    assert (params.offset, params.scale) == (0.0, 23.0)
    constant = volume_from_array(np.ones((2, 3, 4)), np.eye(4))
    with pytest.raises(UserError, match=r"\[CT\] intensity_normalisation"):
        normalised_target(whole.sources["CT"], constant)


def test_target_units_round_trip_label_and_bad_value(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, ("EVALUATION.target_units=normalised", "EVALUATION.units=HU"))
    assert config.evaluation.target_units == "normalised"
    assert evaluation_units(config) == "normalised"
    (tmp_path / "again.ini").write_text(config.to_ini(), encoding="utf-8")
    again = load_config(tmp_path / "again.ini")
    assert again.evaluation == config.evaluation
    assert tiny_config(tmp_path).evaluation.target_units == "native"
    assert evaluation_units(tiny_config(tmp_path)) == "HU"
    with pytest.raises(ConfigError, match=r"target_units.*native.*normalised") as info:
        tiny_config(tmp_path, ("EVALUATION.target_units=kelvin",))
    assert "\n" not in str(info.value)
