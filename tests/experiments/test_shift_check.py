"""tfuq shift-check on the tiny phantom job with an analytic model (closed-form predictions)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from uq_job_setup import CT_PARAMS, normalised_mr, save_analytic_model, tiny_config

from tfuq.data import read_split, write_split
from tfuq.data.prepare import prepare_data
from tfuq.errors import UserError
from tfuq.experiments.shift import shifted_input
from tfuq.experiments.shift_check import run_shift_check
from tfuq.stages.calibrate import run_calibration


def test_cases_are_the_shifted_inputs_and_a_rescale_is_invisible_after_normalisation(tmp_path) -> None:
    config = tiny_config(tmp_path)
    prepare_data(config)
    split = read_split(config.system.dataset_split_file)
    model_dir = tmp_path / "model"
    save_analytic_model(model_dir, base=0.02, slope=0.05)
    write_split(model_dir / "dataset_split.csv", split, overwrite=True)
    config = tiny_config(tmp_path, ("UNCERTAINTY.mc_samples=1",), model_dir=model_dir)
    run_calibration(config)
    subject = next(i for i, p in split.items() if p == "Inference")
    other = next(i for i, p in split.items() if p == "Training")
    phantom = next((tmp_path / "phantom").iterdir())
    out = tmp_path / "shift"
    summary = run_shift_check(
        config.path,
        out,
        overrides=("UNCERTAINTY.mc_samples=1",),
        swaps={"ct": "_ct"},
        external={other: phantom / f"{other}_mr.nii.gz"},
    )
    cases = summary["cases"]
    assert set(cases) == {
        f"{subject}-{k}" for k in ("clean", "bias_field", "noise3x", "rescale", "swap_ct")
    } | {f"{other}-external"}
    mr = np.asarray(nib.load(phantom / f"{subject}_mr.nii.gz").dataobj, dtype=np.float32)
    body = np.asarray(nib.load(phantom / f"{subject}_mask.nii.gz").dataobj) > 0
    written = np.asarray(nib.load(out / "cases" / f"{subject}-bias_field_input.nii.gz").dataobj)
    np.testing.assert_allclose(written, shifted_input(mr, "bias_field", body), rtol=1e-6)
    # every case of a subject gets the subject's own mask file; a scan from elsewhere, input > 0
    for case in ("clean", "bias_field", "swap_ct"):
        mask = np.asarray(nib.load(out / "cases" / f"{subject}-{case}_brainmask.nii.gz").dataobj) > 0
        np.testing.assert_array_equal(mask, body)
    external_mr = np.asarray(nib.load(phantom / f"{other}_mr.nii.gz").dataobj)
    external_mask = np.asarray(nib.load(out / "cases" / f"{other}-external_brainmask.nii.gz").dataobj) > 0
    np.testing.assert_array_equal(external_mask, external_mr > 0)
    # percentile normalisation per subject undoes a global 1.3x rescale: the same prediction
    clean, rescaled = cases[f"{subject}-clean"], cases[f"{subject}-rescale"]
    assert rescaled["mean_total_std"] == pytest.approx(clean["mean_total_std"], rel=1e-4)
    assert rescaled["total_std_score"] == pytest.approx(clean["total_std_score"])
    assert cases[f"{other}-external"]["kind"] == "external"
    # error against the truth in the model's normalised units: the analytic mean is the normalised MR
    for case, sid in ((f"{subject}-clean", subject), (f"{other}-external", other)):
        ct = np.asarray(nib.load(phantom / f"{sid}_ct.nii.gz").dataobj, dtype=np.float64)
        truth = (ct - CT_PARAMS.offset) / CT_PARAMS.scale
        mask = np.asarray(nib.load(out / "cases" / f"{case}_brainmask.nii.gz").dataobj) > 0
        prediction = normalised_mr(phantom / f"{sid}_mr.nii.gz")
        assert cases[case]["mae"] == pytest.approx(np.abs(truth - prediction)[mask].mean(), rel=1e-3)
        assert cases[case]["pearson"] == pytest.approx(
            np.corrcoef(truth[mask], prediction[mask])[0, 1], abs=1e-3
        )
    assert cases[f"{subject}-rescale"]["mae"] == pytest.approx(cases[f"{subject}-clean"]["mae"], rel=1e-4)
    assert cases[f"{subject}-swap_ct"]["mae"] != pytest.approx(cases[f"{subject}-clean"]["mae"], rel=1e-2)
    stored = json.loads((out / "shift_check.json").read_text())
    assert stored["auroc"].keys() == {"total_std_score", "mean_epistemic_std"}
    assert 0.0 <= stored["auroc"]["total_std_score"] <= 1.0
    for kind in ("clean", "shifted", "external"):
        assert stored[f"{kind}_flagged"] == sum(r["flagged"] for r in cases.values() if r["kind"] == kind)
    with pytest.raises(UserError, match="not empty"):
        run_shift_check(config.path, out)
