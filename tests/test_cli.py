"""tfuq.cli: lazy imports, exit codes, one-line errors, pending commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = str(REPO_ROOT / "configs" / "demo_mr2ct.ini")


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(args)
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def test_help_does_not_import_tensorflow() -> None:
    heavy = ("tensorflow", "keras", "tensorflow_probability", "nibabel", "scipy")
    code = (
        "import sys, tfuq.cli; tfuq.cli.cli.main(['--help'], standalone_mode=False); "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert "Commands:" in out and "validate-uq" in out


def test_other_keras_backend_is_refused() -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", "import tfuq"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "tfuq needs the Keras TensorFlow backend, but Keras is set to 'jax'" in proc.stderr


@pytest.mark.parametrize("command", ["infer", "calibrate", "evaluate", "validate-uq", "export"])
def test_stages_without_a_trained_model_exit_2_in_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = [f"SYSTEM.model_dir={tmp_path}", "PHANTOM.num_subjects=4", "PHANTOM.shape=24, 16, 32"]
    args = [command, DEMO] + [x for o in overrides for x in ("--set", o)]
    code, _, err = run_main(args, capsys)
    errors = [line for line in err.splitlines() if line.startswith("tfuq: error:")]
    assert code == 2 and len(errors) == 1
    assert "no trained model in" in errors[0] and "run tfuq train first" in errors[0]


def test_config_error_is_one_line_and_debug_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["train", DEMO, "--set", "TRAINING.lrr=1"], capsys)
    assert code == 2
    assert err == f"tfuq: error: {DEMO}: [TRAINING] unknown key 'lrr' (did you mean 'lr'?)\n"
    code, _, err = run_main(["--debug", "train", DEMO, "--set", "TRAINING.lrr=1"], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err


def test_missing_config_and_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["infer", str(tmp_path / "nope.ini")], capsys)
    assert code == 2 and "nope.ini: no such config file" in err
    code, _, err = run_main(["train"], capsys)
    assert code == 2 and "Missing argument 'CONFIG'" in err
    code, _, err = run_main(["nonsense"], capsys)
    assert code == 2 and "No such command 'nonsense'" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.startswith("tfuq, version ")


def test_phantom_command_writes_and_refuses_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "ph"
    args = ["phantom", str(out_dir), "--subjects", "2", "--seed", "3", "--shape", "24", "16", "32"]
    code, out, _ = run_main(args, capsys)
    assert code == 0 and "wrote 11 files for 2 wholebody subjects" in out
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    assert "phantom001_noise_std.nii.gz" in before
    code, _, err = run_main(args, capsys)
    error_lines = [line for line in err.splitlines() if line.startswith("tfuq: error:")]
    assert code == 2 and len(error_lines) == 1
    assert "already exists" in error_lines[0] and "--overwrite" in error_lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == before
    code, _, err = run_main(["phantom", str(tmp_path / "x"), "--kind", "liver"], capsys)
    assert code == 2 and "Invalid value for '--kind'" in err
    code, _, err = run_main(["phantom", str(tmp_path / "y"), "--contrast-variability", "2"], capsys)
    assert code == 2 and "Invalid value for '--contrast-variability'" in err
    assert not (tmp_path / "y").exists()


def test_phantom_command_contrast_variability(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The MR of a varied subject is the plain one's rendering times the subject's factor per tissue."""
    from tfuq.data.phantom import PhantomSpec, mr_tissue_scale

    args = ["phantom", "--subjects", "1", "--shape", "24", "16", "32"]
    assert run_main([*args[:1], str(tmp_path / "a"), *args[1:]], capsys)[0] == 0
    varied = [*args[:1], str(tmp_path / "b"), *args[1:], "--contrast-variability", "0.2"]
    assert run_main(varied, capsys)[0] == 0
    meta = json.loads((tmp_path / "b" / "phantom.json").read_text())
    assert meta["spec"]["contrast_variability"] == 0.2
    ct_a = nib.load(tmp_path / "a" / "phantom000_ct.nii.gz").get_fdata()
    ct_b = nib.load(tmp_path / "b" / "phantom000_ct.nii.gz").get_fdata()
    np.testing.assert_array_equal(ct_a, ct_b)
    mr_a = nib.load(tmp_path / "a" / "phantom000_mr.nii.gz").get_fdata()
    mr_b = nib.load(tmp_path / "b" / "phantom000_mr.nii.gz").get_fdata()
    # same noise draws: in each tissue the median MR ratio is the subject's factor (Rician bias aside)
    labels = np.asarray(nib.load(tmp_path / "a" / "phantom000_labels.nii.gz").dataobj).astype(int)
    factors = mr_tissue_scale(PhantomSpec(shape=(24, 16, 32), contrast_variability=0.2), 0)
    checked = 0
    for label in np.unique(labels[mr_a > 200]):
        inside = (labels == label) & (mr_a > 200)  # well above the Rician sigma (20)
        if inside.sum() >= 50:
            np.testing.assert_allclose(np.median(mr_b[inside] / mr_a[inside]), factors[label], rtol=0.03)
            checked += 1
    assert checked >= 3


def test_demo_runs_every_stage_on_a_tiny_phantom(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [
        f"SYSTEM.model_dir={tmp_path}",
        "PHANTOM.num_subjects=4",
        "PHANTOM.shape=24, 24, 32",  # the demo's 24^3 training window fits
        "TRAINING.max_iter=4",
        "TRAINING.save_every_n=2",
        "UNCERTAINTY.mc_samples=2",
    ]
    args = ["demo", DEMO] + [x for o in overrides for x in ("--set", o)]
    code, out, err = run_main(args, capsys)
    assert code == 0, err[-2000:]
    assert list((tmp_path / "export").glob("*/1/saved_model.pb"))
    assert "[CT] shape (24, 24, 32)" in out and "normalised by window (offset -1024, scale 4095)" in out
    from tfuq.stages.demo import DEMO_STAGES

    for stage, _ in DEMO_STAGES:
        assert f"== {stage}" in out
    assert "== validate-uq" not in out  # the papers' checks are `make validate`
    report = tmp_path / "evaluation" / "report.html"
    assert f"report {report}" in out and report.is_file()
    headline = out.strip().splitlines()[-1]
    assert headline.startswith("demo: MAE ") and "recalibrated" in headline and "Spearman" in headline
    assert (tmp_path / "dataset_split.csv").is_file() and (tmp_path / "model.keras").is_file()
    assert list((tmp_path / "logs").glob("demo-*.log"))
    # A second run resumes the finished training and replaces its own maps and report.
    code, out, err = run_main(args, capsys)
    assert code == 0, err[-2000:]
    assert list((tmp_path / "export").glob("*/2/saved_model.pb"))


def test_info_ends_with_parameter_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["info", str(REPO_ROOT / "applications" / "wholebody_mr2ct.ini")], capsys)
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("parameters: ")
    assert abs(int(last.split()[1]) - 2.61e6) / 2.61e6 < 0.05  # Klaser Table 1, MultiRes with sigma branch


def _export_setup():
    """tests/export_setup.py (the tiny exported application)."""
    import export_setup

    return export_setup


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_infer_serving_url_writes_what_local_infer_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Deterministic network (no dropout): `tfuq infer --serving-url` with the requests answered in
    # process by the exported SavedModel must write the maps `tfuq infer` writes locally.
    import nibabel as nib
    import numpy as np

    from tfuq.export.client import saved_model_transport

    setup = _export_setup()
    ini = setup.make_app(tmp_path, "[UNCERTAINTY]", "dropout = none", "mc_samples = 2", subjects=1)
    config = setup.load(ini)
    setup.save_trained(config)
    code, out, _ = run_main(["export", str(ini)], capsys)
    assert code == 0 and out.startswith("exported ")
    version = config.model_dir / "export" / "app" / "1"
    code, _, err = run_main(["infer", str(ini)], capsys)
    assert code == 0, err
    local_dir = Path(config.inference.save_seg_dir)
    served_dir = tmp_path / "served"
    args = ["infer", str(ini), "--serving-url", "http://in-process:8501"]
    args += ["--set", f"INFERENCE.save_seg_dir={served_dir}"]
    with pytest.raises(SystemExit) as stop:
        main(args, serving_transport=saved_model_transport(version))
    out, err = capsys.readouterr()
    assert stop.value.code == 0, err
    assert out.splitlines() == ["s0: served by http://in-process:8501"]
    local = sorted(p.name for p in local_dir.glob("*.nii.gz"))
    assert sorted(p.name for p in served_dir.glob("*.nii.gz")) == local
    assert len(local) == 4  # mean, epistemic_std, aleatoric_std, total_std
    for name in local:
        ours = nib.load(served_dir / name).get_fdata()
        theirs = nib.load(local_dir / name).get_fdata()
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=0.05, err_msg=name)  # HU; float32 paths
    assert np.ptp(nib.load(served_dir / "s0_mean.nii.gz").get_fdata()) > 10.0
    assert nib.load(served_dir / "s0_epistemic_std.nii.gz").get_fdata().max() > 0.1  # windows disagree

    # An unreachable server: one line, exit 2, nothing written.
    nowhere = tmp_path / "nowhere"
    url = f"http://127.0.0.1:{_free_port()}"
    code, _, err = run_main(
        ["infer", str(ini), "--serving-url", url, "--set", f"INFERENCE.save_seg_dir={nowhere}"], capsys
    )
    errors = [line for line in err.splitlines() if line.startswith("tfuq: error:")]
    assert code == 2 and len(errors) == 1 and "cannot reach the server" in errors[0] and url in errors[0]
    assert not nowhere.exists() or not any(nowhere.iterdir())

    # [INFERENCE] border = 1: the served path drops the same window edges as local infer.
    written = {}
    for kind, extra in (("local", []), ("served", ["--serving-url", "http://in-process:8501"])):
        folder = tmp_path / f"border_{kind}"
        args = ["infer", str(ini), *extra, "--set", "INFERENCE.border=1"]
        with pytest.raises(SystemExit) as stop:
            main(
                [*args, "--set", f"INFERENCE.save_seg_dir={folder}"],
                serving_transport=saved_model_transport(version),
            )
        out, err = capsys.readouterr()
        assert stop.value.code == 0, err
        assert sorted(p.name for p in folder.glob("*.nii.gz")) == local
        written[kind] = {name: nib.load(folder / name).get_fdata() for name in local}
    for name in local:
        np.testing.assert_allclose(
            written["served"][name], written["local"][name], rtol=1e-4, atol=0.05, err_msg=name
        )
    plain = nib.load(served_dir / "s0_mean.nii.gz").get_fdata()
    assert np.abs(written["served"]["s0_mean.nii.gz"] - plain).max() > 1.0  # the border changed the maps
    # A border of half the window or more: one line naming the key, exit 2, before any request.
    code, _, err = run_main(["infer", str(ini), "--serving-url", url, "--set", "INFERENCE.border=4"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("tfuq: error:")]
    assert code == 2 and len(errors) == 1 and "[INFERENCE] border smaller than half" in errors[0]
    assert "cannot reach" not in err  # refused before the (unreachable) server is asked


def test_shift_check_refuses_bad_pairs_and_a_used_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run_main(["shift-check", DEMO, str(out), "--swap", "flair"], capsys)
    assert code == 2 and "expected NAME=VALUE, got 'flair'" in err and len(err.strip().splitlines()) == 1
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_main(["shift-check", DEMO, str(out)], capsys)
    assert code == 2 and "not empty" in err and (out / "keep.txt").read_text() == "mine"
