"""tfuq infer end to end on the tiny phantom: analytic models with exact outputs, a trained model
against a direct mc_predict_volume oracle, geometry, qc flag, ensembles, GGD maps, intervals, refusals."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pytest
from scipy import special, stats
from uq_job_setup import CT_PARAMS, normalised_mr, save_analytic_model, tiny_config

from tfuq.calibration import IsotonicRecalibrator, SigmaScaling
from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.calibration.qc_reference import load_qc_reference, slice_statistics
from tfuq.cli import main
from tfuq.data import NormalisationParams, load_volume, read_split
from tfuq.data.prepare import prepare_data
from tfuq.errors import UserError
from tfuq.inference import mc_predict_volume, to_target_units
from tfuq.stages.infer import infer, run_inference


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny phantom with its split; the Inference subject and its phantom files."""
    tmp = tmp_path_factory.mktemp("infer_job")
    config = tiny_config(tmp)
    prepare_data(config)
    split = read_split(config.system.dataset_split_file)
    subject = next(i for i, p in split.items() if p == "Inference")
    folder = next((tmp / "phantom").iterdir())
    return {"tmp": tmp, "subject": subject, "phantom": folder, "split": split}


def _config(job: dict, name: str, overrides: tuple[str, ...] = ()):
    model_dir = job["tmp"] / name
    shutil.copy(job["tmp"] / "run" / "dataset_split.csv", model_dir / "dataset_split.csv")
    return tiny_config(job["tmp"], overrides, model_dir=model_dir)


def _read(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def test_missing_model_is_a_one_line_user_error(job: dict) -> None:
    config = tiny_config(job["tmp"], model_dir=job["tmp"] / "empty")
    with pytest.raises(UserError, match=r"^no trained model in .*empty; run tfuq train first$"):
        infer(config)


@pytest.mark.parametrize(
    ("window", "overlap", "blending"),
    [((24, 16, 32), 0.5, "gaussian"), ((16, 16, 16), 0.5, "gaussian"), ((16, 12, 20), 0.3, "hann")],
)
def test_identity_model_reproduces_the_input_in_target_units(job: dict, window, overlap, blending) -> None:
    """Oracle: loc = normalised MR, fixed scale -> mean = MR_norm * 4095 - 1024 HU, aleatoric 0.02 * 4095."""
    name = f"identity_{'x'.join(map(str, window))}_{blending}"
    save_analytic_model(job["tmp"] / name, base=0.02)
    overrides = (
        f"INFERENCE.spatial_window_size={', '.join(map(str, window))}",
        f"INFERENCE.window_overlap={overlap}",
        f"INFERENCE.blending={blending}",
        "UNCERTAINTY.mc_samples=1",
    )
    result = run_inference(_config(job, name, overrides))
    subject = job["subject"]
    assert list(result.qc) == [subject]
    out = Path(result.out_dir)
    mr_file = job["phantom"] / f"{subject}_mr.nii.gz"
    expected = normalised_mr(mr_file) * 4095.0 - 1024.0
    np.testing.assert_allclose(_read(out / f"{subject}_mean.nii.gz"), expected, atol=0.02, rtol=1e-6)
    np.testing.assert_allclose(_read(out / f"{subject}_aleatoric_std.nii.gz"), 0.02 * 4095.0, rtol=1e-4)
    np.testing.assert_allclose(_read(out / f"{subject}_total_std.nii.gz"), 0.02 * 4095.0, rtol=1e-4)
    assert np.abs(_read(out / f"{subject}_epistemic_std.nii.gz")).max() < 1e-3
    reference = nib.load(mr_file)
    for name_ in ("mean", "epistemic_std", "aleatoric_std", "total_std"):
        image = nib.load(out / f"{subject}_{name_}.nii.gz")
        np.testing.assert_array_equal(image.affine, reference.affine)
        assert image.shape == reference.shape
    assert not (out / f"{subject}_lower95.nii.gz").exists()  # no calibration stored


def test_qc_flag_follows_the_threshold(job: dict) -> None:
    save_analytic_model(job["tmp"] / "flag", base=0.02)
    subject, mean_std = job["subject"], 0.02 * 4095.0
    for threshold, flagged in ((mean_std * 0.99, True), (mean_std * 1.01, False), (0.0, False)):
        config = _config(job, "flag", (f"UNCERTAINTY.flag_threshold={threshold}", "INFERENCE.overwrite=true"))
        run_inference(config)
        qc = json.loads((Path(config.inference.save_seg_dir) / f"{subject}_qc.json").read_text())
        assert qc["flagged"] is flagged
        assert qc["total_std"]["mean"] == pytest.approx(mean_std, rel=1e-4)
        body = _read(job["phantom"] / f"{subject}_mask.nii.gz") > 0
        assert qc["mask_voxels"] == int(body.sum())


def test_existing_outputs_are_refused_before_any_work(job: dict) -> None:
    save_analytic_model(job["tmp"] / "refuse", base=0.02)
    config = _config(job, "refuse")
    run_inference(config)
    mean_file = Path(config.inference.save_seg_dir) / f"{job['subject']}_mean.nii.gz"
    before = mean_file.stat().st_mtime_ns
    with pytest.raises(UserError, match=r"already exists .*set \[INFERENCE\] overwrite = true"):
        run_inference(config)
    assert mean_file.stat().st_mtime_ns == before
    run_inference(_config(job, "refuse", ("INFERENCE.overwrite=true",)))
    assert mean_file.stat().st_mtime_ns >= before


def test_generalized_normal_writes_alpha_and_beta(job: dict) -> None:
    """Oracle: alpha = 0.03 * 4095 HU, beta = 1.5, aleatoric std = alpha sqrt(G(3/b)/G(1/b))."""
    save_analytic_model(job["tmp"] / "ggd", family="generalized_normal", base=0.03, power=1.5)
    config = _config(job, "ggd", ("UNCERTAINTY.family=generalized_normal", "UNCERTAINTY.mc_samples=1"))
    out = Path(run_inference(config).out_dir)
    subject = job["subject"]
    alpha = 0.03 * 4095.0
    np.testing.assert_allclose(_read(out / f"{subject}_alpha.nii.gz"), alpha, rtol=1e-4)
    np.testing.assert_allclose(_read(out / f"{subject}_beta.nii.gz"), 1.5, rtol=1e-4)
    std = alpha * math.sqrt(special.gamma(3 / 1.5) / special.gamma(1 / 1.5))
    np.testing.assert_allclose(_read(out / f"{subject}_aleatoric_std.nii.gz"), std, rtol=1e-4)


def test_deep_ensemble_mixes_members_in_target_units(job: dict) -> None:
    """Oracle: two members with other target normalisations -> mixture mean, between-member spread."""
    other = NormalisationParams("window", -1000.0, 3000.0)
    save_analytic_model(job["tmp"] / "member_a", base=0.02)
    save_analytic_model(job["tmp"] / "member_b", params=other, base=0.05)
    config = _config(job, "member_a", (f"UNCERTAINTY.ensemble={job['tmp'] / 'member_b'}",))
    out = Path(run_inference(config).out_dir)
    subject = job["subject"]
    x = normalised_mr(job["phantom"] / f"{subject}_mr.nii.gz")
    m1, m2 = x * 4095.0 - 1024.0, x * 3000.0 - 1000.0
    np.testing.assert_allclose(_read(out / f"{subject}_mean.nii.gz"), (m1 + m2) / 2, atol=0.02)
    np.testing.assert_allclose(_read(out / f"{subject}_epistemic_std.nii.gz"), np.abs(m1 - m2) / 2, atol=0.02)
    aleatoric = math.sqrt(((0.02 * 4095.0) ** 2 + (0.05 * 3000.0) ** 2) / 2)
    np.testing.assert_allclose(_read(out / f"{subject}_aleatoric_std.nii.gz"), aleatoric, rtol=1e-4)


@pytest.mark.parametrize("method", ["isotonic", "sigma_scaling"])
def test_stored_calibration_adds_the_recalibrated_interval(job: dict, method: str) -> None:
    """Oracle: identity isotonic map -> mean -+ 1.96 total std; sigma scaling s=2 -> 1.96 * 2 * aleatoric."""
    name = f"interval_{method}"
    save_analytic_model(job["tmp"] / name, base=0.02)
    folder = job["tmp"] / name / "calibration"
    folder.mkdir()
    if method == "isotonic":
        IsotonicRecalibrator().fit(np.linspace(0.0, 1.0, 10001)).save(folder / "isotonic.json")
        half = stats.norm.ppf(0.975) * 0.02 * 4095.0
    else:
        scaling = SigmaScaling()
        scaling.scale_factor = 2.0
        scaling.save(folder / "sigma_scaling.json")
        half = stats.norm.ppf(0.975) * 2.0 * 0.02 * 4095.0
    config = _config(job, name, (f"CALIBRATION.method={method}",))
    result = run_inference(config)
    out, subject = Path(result.out_dir), job["subject"]
    mean = _read(out / f"{subject}_mean.nii.gz")
    np.testing.assert_allclose(_read(out / f"{subject}_lower95.nii.gz"), mean - half, atol=0.2)
    np.testing.assert_allclose(_read(out / f"{subject}_upper95.nii.gz"), mean + half, atol=0.2)
    assert result.qc[subject]["recalibration"] == (
        "IsotonicRecalibrator" if method == "isotonic" else "SigmaScaling"
    )
    # the MC moments' own std maps are kept under _uncalibrated; the standard names are recalibrated
    # (identity isotonic map: factor 1; sigma scaling: the aleatoric std, all of the total here, x 2)
    np.testing.assert_allclose(
        _read(out / f"{subject}_total_std_uncalibrated.nii.gz"), 0.02 * 4095.0, rtol=1e-4
    )
    factor = 1.0 if method == "isotonic" else 2.0
    np.testing.assert_allclose(_read(out / f"{subject}_total_std.nii.gz"), factor * 0.02 * 4095.0, rtol=1e-3)
    np.testing.assert_allclose(
        _read(out / f"{subject}_aleatoric_std.nii.gz"), factor * 0.02 * 4095.0, rtol=1e-3
    )


def test_train_calibrate_infer_evaluate_end_to_end(job: dict, caplog: pytest.LogCaptureFixture) -> None:
    """train (2 iterations) -> calibrate -> infer -> evaluate; oracle: mc_predict_volume + to_target_units."""
    from tfuq.evaluation.report import SUMMARY_KEYS
    from tfuq.stages.calibrate import calibrate
    from tfuq.stages.evaluate import evaluate
    from tfuq.stages.train import train

    overrides = ("UNCERTAINTY.mc_samples=3", "INFERENCE.spatial_window_size=16, 16, 16")
    config = tiny_config(job["tmp"], overrides, model_dir=job["tmp"] / "trained")
    train(config)
    calibrate(config)
    with caplog.at_level(logging.INFO, logger="tfuq"):
        infer(config)
    assert "inferring 1 subject(s) with T = 3" in caplog.text
    subject = job["subject"]
    model = keras.saving.load_model(config.model_dir / "model.keras", compile=False)
    mr = load_volume(job["phantom"] / f"{subject}_mr.nii.gz")  # RAS, as the job reads it
    low, high = np.percentile(mr.array, [1.0, 99.0])
    volume = ((mr.array - low) / (high - low)).astype(np.float32)[..., None]
    maps = mc_predict_volume(model, volume, "normal", mc_samples=3, window=16, batch_size=4, seed=0)
    expected = to_target_units(maps, CT_PARAMS)
    out = Path(config.inference.save_seg_dir)
    # with a calibration stored, the standard std names are recalibrated (the isotonic map's
    # effective-std factor k, as the SavedModel serves them) and the raw ones kept as _uncalibrated
    iso = IsotonicRecalibrator.load(config.model_dir / "calibration" / "isotonic.json")
    k = MomentRecalibration.from_recalibrator(iso).std_factor
    for key in ("mean", "epistemic_std", "aleatoric_std", "total_std", "lower95", "upper95"):
        written = load_volume(out / f"{subject}_{key}.nii.gz")
        np.testing.assert_allclose(written.affine, mr.affine)
        if key == "mean":
            np.testing.assert_allclose(written.array, expected[key], rtol=1e-4, atol=0.05)
        elif key in expected:
            raw = load_volume(out / f"{subject}_{key}_uncalibrated.nii.gz").array
            np.testing.assert_allclose(raw, expected[key], rtol=1e-4, atol=0.05)
            np.testing.assert_allclose(written.array, k * expected[key], rtol=1e-4, atol=0.05)
    assert expected["epistemic_std"].max() > 0  # dropout sampled
    # the reliability score against the calibration's reference: slice means of the written
    # (recalibrated) total std over the stored slice threshold, in normalised units
    reference = load_qc_reference(config.model_dir / "calibration" / "qc_reference.json")
    qc = json.loads((out / f"{subject}_qc.json").read_text())
    total = load_volume(out / f"{subject}_total_std.nii.gz").array / CT_PARAMS.scale
    body = load_volume(job["phantom"] / f"{subject}_mask.nii.gz").array > 0
    stats_ = slice_statistics(total, body)
    scores = qc["reliability"]["scores"]
    assert scores["total_std"]["score"] == pytest.approx(np.mean(stats_ > reference.slice_threshold))
    assert scores["total_std"]["threshold"] == reference.flag_score
    # the feature distance (HighRes3DNet: one input) against its own stored reference
    assert set(scores) == {"total_std", "feature_distance"}
    assert qc["reliability"]["mode"] == "feature_distance" == qc["reliability"]["deciding"][0]
    assert qc["flagged"] == scores["feature_distance"]["flagged"] == qc["reliability"]["flagged"]
    evaluate(config)
    summary = json.loads((Path(config.evaluation.save_csv_dir) / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary) and summary["subjects"] == [subject]
    body = load_volume(job["phantom"] / f"{subject}_mask.nii.gz").array > 0
    ct = load_volume(job["phantom"] / f"{subject}_ct.nii.gz").array
    assert summary["mae"] == pytest.approx(np.abs(ct - expected["mean"])[body].mean(), rel=1e-4)


def test_pixdim_resampled_predictions_return_to_the_input_grid(job: dict) -> None:
    """[CT] pixdim halves the voxels: the model sees a 48 x 32 x 64 grid, the maps land on the MR's."""
    save_analytic_model(job["tmp"] / "pixdim", base=0.02)
    overrides = (
        "CT.pixdim=3.25, 3.0, 3.5",
        "INFERENCE.spatial_window_size=48, 32, 64",
        "UNCERTAINTY.mc_samples=1",
    )
    out = Path(run_inference(_config(job, "pixdim", overrides)).out_dir)
    subject = job["subject"]
    mr_file = job["phantom"] / f"{subject}_mr.nii.gz"
    mean = nib.load(out / f"{subject}_mean.nii.gz")
    np.testing.assert_array_equal(mean.affine, nib.load(mr_file).affine)
    expected = normalised_mr(mr_file) * 4095.0 - 1024.0
    error = np.abs(np.asarray(mean.dataobj) - expected)
    assert np.median(error) < 0.02 * 4095.0  # cubic up, linear down: close, not exact
    np.testing.assert_allclose(_read(out / f"{subject}_aleatoric_std.nii.gz"), 0.02 * 4095.0, rtol=1e-3)


def _mu_moments_closed_form(m: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """E and Var of mu_511(Y), Y ~ N(m, s^2) HU, for the clipped bilinear map (Carney 2006, 120 kVp).

    Per segment (l, u] with mu = alpha x + beta: E[X 1] and E[X^2 1] of a truncated normal
    (z = (x - m) / s): E[Z 1] = phi(a) - phi(b), E[Z^2 1] = Phi(b) - Phi(a) + a phi(a) - b phi(b).
    """
    from tfuq.inference.derived import (
        MU511_BONE_INTERCEPT,
        MU511_BONE_SLOPE,
        MU511_BREAK_HU,
        MU511_SOFT_SLOPE,
    )

    segments = (
        (-1000.0, MU511_BREAK_HU, MU511_SOFT_SLOPE, 1000.0 * MU511_SOFT_SLOPE),
        (MU511_BREAK_HU, np.inf, MU511_BONE_SLOPE, 1000.0 * MU511_BONE_SLOPE + MU511_BONE_INTERCEPT),
    )
    first, second = np.zeros_like(m), np.zeros_like(m)
    for lower, upper, alpha, beta in segments:
        a, b = (lower - m) / s, (upper - m) / s
        p = stats.norm.cdf(b) - stats.norm.cdf(a)
        finite_b = np.where(np.isinf(b), 0.0, b)
        pa, pb = stats.norm.pdf(a), np.where(np.isinf(b), 0.0, stats.norm.pdf(finite_b))
        bpb = finite_b * pb
        ez = pa - pb
        ez2 = p + a * pa - bpb
        ex = m * p + s * ez
        ex2 = m**2 * p + 2 * m * s * ez + s**2 * ez2
        first += alpha * ex + beta * p
        second += alpha**2 * ex2 + 2 * alpha * beta * ex + beta**2 * p
    return first, second - first**2


def test_derived_mu_map_matches_the_closed_form_of_the_bilinear_map(job: dict) -> None:
    """[INFERENCE] derived = mu_map_511kev, identity model: Y ~ N(MR_norm * 4095 - 1024, (0.02 * 4095)^2).

    Oracle: the exact mean and variance of the clipped bilinear map of a normal (truncated-normal
    moments per segment), against the double-sampling estimate with S = 256 draws per voxel.
    """
    save_analytic_model(job["tmp"] / "mu_map", base=0.02)
    overrides = ("UNCERTAINTY.mc_samples=1", "INFERENCE.derived=mu_map_511kev", "INFERENCE.derived_draws=256")
    out = Path(run_inference(_config(job, "mu_map", overrides)).out_dir)
    subject = job["subject"]
    m = normalised_mr(job["phantom"] / f"{subject}_mr.nii.gz") * 4095.0 - 1024.0
    expected_mean, expected_var = _mu_moments_closed_form(m, 0.02 * 4095.0)
    mean = _read(out / f"{subject}_mu_map_511kev_mean.nii.gz")
    std = _read(out / f"{subject}_mu_map_511kev_total_std.nii.gz")
    # per voxel: S = 256 draws -> standard error of the mean <= std / 16; 6 standard errors
    assert np.all(np.abs(mean - expected_mean) <= 6 * np.sqrt(expected_var) / 16 + 1e-6)
    # over the voxels the estimates average out: the mean of the errors is far below one voxel's SE
    assert abs(np.mean(mean - expected_mean)) < 0.05 * np.sqrt(expected_var).mean()
    live = expected_var > 1e-8
    ratio = std[live] ** 2 / expected_var[live]  # sample variance / truth: mean 1 - 1/S, sd sqrt(2/S)
    assert abs(ratio.mean() - (1 - 1 / 256)) < 0.01
    assert np.all(_read(out / f"{subject}_mu_map_511kev_epistemic_std.nii.gz") == 0.0)  # one pass
    np.testing.assert_allclose(_read(out / f"{subject}_mu_map_511kev_aleatoric_std.nii.gz"), std, rtol=1e-5)
    assert (mean[m < -1400] == 0).all() and mean.max() > 0.1  # air clipped at 0; bone above 0.1 cm^-1


# --- refusals that write nothing, outputs outside model_dir, kills between and during the maps ---


@pytest.fixture
def trained_app(tmp_path: Path) -> Path:
    """A tiny 2-subject NIfTI application with a "trained" U-Net and its stored training config."""
    from export_setup import load, make_app, save_trained

    ini = make_app(tmp_path, "[UNCERTAINTY]", "mc_samples = 2")
    config = load(ini)
    save_trained(config)
    (config.model_dir / "training_config.ini").write_text(config.to_ini(), encoding="utf-8")
    return ini


def _occupy(tmp_path: Path) -> Path:
    (tmp_path / "occupied").write_text("a file, not a folder")
    return tmp_path / "occupied"


@pytest.mark.parametrize(
    ("case", "settings", "phrase"),
    [
        (
            "output folder is a file",
            lambda t: [f"INFERENCE.save_seg_dir={_occupy(t)}"],
            "is a file, not a folder",
        ),
        (
            "output folder under a file",
            lambda t: [f"INFERENCE.save_seg_dir={_occupy(t) / 'maps'}"],
            "cannot be created, ",
        ),
        (
            "relative output leaving model_dir",
            lambda t: ["INFERENCE.save_seg_dir=../../outside"],
            "leads out of it",
        ),
        (
            "wider network",
            lambda t: ["NETWORK.base_filters=8"],
            "[NETWORK] base_filters = 8 (trained with 4)",
        ),
        (
            "other network",
            lambda t: ["NETWORK.name=highres3dnet"],
            "[NETWORK] name = highres3dnet (trained with",
        ),
        ("other family", lambda t: ["UNCERTAINTY.family=laplace"], "[UNCERTAINTY] family = laplace (trained"),
        (
            "other window",
            lambda t: ["MR.spatial_window_size=4, 4, 4"],
            "[MR] spatial_window_size = 4, 4, 4 (trained",
        ),
        (
            "other normalisation",
            lambda t: ["MR.intensity_normalisation=minmax"],
            "[MR] intensity_normalisation",
        ),
        ("other grid", lambda t: ["MR.pixdim=3, 3, 3"], "[MR] pixdim = 3.0, 3.0, 3.0 (trained with (empty))"),
    ],
)
def test_bad_infer_inputs_are_one_line_and_write_nothing(
    trained_app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, settings, phrase: str
) -> None:
    from refusal_setup import cli_error, tree_state

    args = ["infer", str(trained_app)] + [x for s in settings(tmp_path) for x in ("--set", s)]
    before = tree_state(tmp_path)
    assert phrase in cli_error(args, capsys), case
    assert tree_state(tmp_path) == before


def test_an_output_dir_option_that_is_a_file_is_one_line(
    trained_app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refusal_setup import cli_error, tree_state

    model_dir, scan = tmp_path / "model", tmp_path / "data" / "s0_mr.nii.gz"
    before = tree_state(tmp_path)
    for output in (_occupy(tmp_path), _occupy(tmp_path) / "maps"):
        before = tree_state(tmp_path)
        line = cli_error(
            ["infer", str(model_dir), "--image", f"MR={scan}", "--output-dir", str(output)], capsys
        )
        assert "file" in line
        assert tree_state(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_output_folder_is_one_line(
    trained_app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refusal_setup import cli_error, tree_state

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        before = tree_state(tmp_path)
        args = ["infer", str(trained_app), "--set", f"INFERENCE.save_seg_dir={locked / 'maps'}"]
        assert "not writable" in cli_error(args, capsys)
        assert tree_state(tmp_path) == before
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_an_output_folder_that_cannot_be_created_is_one_line(
    trained_app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refusal_setup import cli_error, tree_state

    before = tree_state(tmp_path)  # as root only the write itself fails: still one line, nothing written
    args = ["infer", str(trained_app), "--set", "INFERENCE.save_seg_dir=/sys/kernel/tfuq-test-maps"]
    line = cli_error(args, capsys)
    assert "/sys/kernel/tfuq-test-maps" in line and ("not writable" in line or "cannot be created" in line)
    assert tree_state(tmp_path) == before


def test_outputs_outside_model_dir_need_an_absolute_path_and_are_logged(
    trained_app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "maps_elsewhere"
    with pytest.raises(SystemExit) as stop:
        main(["infer", str(trained_app), "--set", f"INFERENCE.save_seg_dir={outside}"])
    _, err = capsys.readouterr()
    assert stop.value.code == 0, err
    assert err.count(f"writing outside model_dir: {outside}") == 1
    names = ("mean", "epistemic_std", "aleatoric_std", "total_std")
    expected = [f"s{k}_{name}.nii.gz" for k in range(2) for name in names] + ["s0_qc.json", "s1_qc.json"]
    assert sorted(p.name for p in outside.iterdir()) == sorted(expected)
    with pytest.raises(SystemExit) as stop:  # inside: not logged
        main(["infer", str(trained_app)])
    _, err = capsys.readouterr()
    assert stop.value.code == 0 and "writing outside model_dir" not in err


_KILL_SCRIPT = """
import os, sys, time
from pathlib import Path

mode, ready, *args = sys.argv[1:]


def stop_here():
    Path(ready).write_text("now")
    time.sleep(600)


if mode in ("between", "during"):  # after two maps of s0 are in its staging folder
    import tfuq.inference.outputs as outputs
    from tfuq.atomic import atomic_path

    original, written = outputs.save_volume, []

    def save_volume(values, reference, path, **kwargs):
        if len(written) == 2:
            if mode == "during":  # half of the third file's bytes in its temp file
                with atomic_path(path) as tmp:
                    tmp.write_bytes(b"half a NIfTI")
                    stop_here()
            stop_here()
        written.append(path)
        return original(values, reference, path, **kwargs)

    outputs.save_volume = save_volume
else:  # "commit": two files of the complete set moved into place, the others not yet
    original, moved = os.replace, []

    def replace(src, dst, **kwargs):
        if Path(src).parent.name.startswith(".commit-"):
            if len(moved) == 2:
                stop_here()
            moved.append(src)
        return original(src, dst, **kwargs)

    os.replace = replace
from tfuq.cli import main

main(args)
"""


def _maps(folder: Path, subject: str) -> dict[str, np.ndarray]:
    return {p.name: _read(p) for p in sorted(folder.glob(f"{subject}_*.nii.gz"))}


@pytest.mark.parametrize("point", ["between", "during", "commit"])
def test_a_killed_infer_leaves_a_whole_set_or_none_and_a_rerun_completes(
    trained_app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], point: str
) -> None:
    """SIGKILL between two maps, in the middle of a map's write, and between the moves into place."""
    from export_setup import load
    from refusal_setup import kill_when

    config = load(trained_app)
    out = Path(config.inference.save_seg_dir)
    ready = tmp_path / "ready"
    killed = kill_when(_KILL_SCRIPT, [point, str(ready), "infer", str(trained_app)], ready)
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    if point == "commit":  # the set was complete: two of its files in place, the rest in .commit-*
        assert len(visible) == 2 and [h.split("-")[0] for h in hidden] == [".commit"], killed.stderr
    else:
        assert visible == [] and [h.split("-")[0] for h in hidden] == [".staging"], killed.stderr
        staged = sorted(p.name for p in (out / hidden[0]).iterdir())
        assert len([n for n in staged if n.startswith("s0_")]) == 2  # two maps written, then the kill
        assert len([n for n in staged if ".tmp" in n]) == (point == "during")  # the half-written third
    # the rerun cleans up first: the killed subject's set is whole (or absent, then written)
    overwrite = ["--set", "INFERENCE.overwrite=true"] if point == "commit" else []
    if point == "commit":  # a whole set counts as written: refused as any existing output, but completed
        with pytest.raises(SystemExit) as stop:
            main(["infer", str(trained_app)])
        assert stop.value.code == 2 and "s0_" in capsys.readouterr()[1]
        assert len(list(out.glob("s0_*"))) == 5 and not list(out.glob(".*"))
    with pytest.raises(SystemExit) as stop:
        main(["infer", str(trained_app), *overwrite])
    _, err = capsys.readouterr()
    assert stop.value.code == 0, err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no debris
    reference = tmp_path / "uninterrupted"
    with pytest.raises(SystemExit) as stop:
        main(["infer", str(trained_app), "--set", f"INFERENCE.save_seg_dir={reference}"])
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for subject in ("s0", "s1"):
        ours, theirs = _maps(out, subject), _maps(reference, subject)
        assert list(ours) == list(theirs) and len(ours) == 4
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_shards_write_the_files_one_process_writes(job: dict) -> None:
    """[INFERENCE] num_shards / shard_index: the shards' union equals one unsharded run, file for file."""
    save_analytic_model(job["tmp"] / "shards", base=0.02, slope=0.05)
    every = ("INFERENCE.dataset_to_infer=all", "UNCERTAINTY.mc_samples=3")
    whole = job["tmp"] / "shards_whole"
    one = run_inference(_config(job, "shards", (*every, f"INFERENCE.save_seg_dir={whole}")))
    split = job["tmp"] / "shards_split"
    seen: list[set[str]] = []
    for index in range(2):
        shard = (
            *every,
            f"INFERENCE.save_seg_dir={split}",
            "INFERENCE.num_shards=2",
            f"INFERENCE.shard_index={index}",
        )
        seen.append(set(run_inference(_config(job, "shards", shard)).qc))
    assert len(one.qc) >= 3 and seen[0] | seen[1] == set(one.qc) and not seen[0] & seen[1]
    assert sorted(p.name for p in whole.iterdir()) == sorted(p.name for p in split.iterdir())
    for path in whole.glob("*.nii.gz"):
        np.testing.assert_array_equal(_read(path), _read(split / path.name), err_msg=path.name)
    with pytest.raises(UserError, match=r"shard_index = 2: expected 0 \.\. num_shards - 1 = 1"):
        run_inference(_config(job, "shards", (*every, "INFERENCE.num_shards=2", "INFERENCE.shard_index=2")))
