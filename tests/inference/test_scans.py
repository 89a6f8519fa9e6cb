"""`tfuq infer MODEL_DIR --image SECTION=FILE` / `--input-dir`: your scans with the model's stored config.

Oracle: the analytic identity model (loc = normalised MR, scale 0.02) gives mean = MR_norm * 4095 - 1024
HU on any file, whatever its name or folder; the normalisation is the stored config's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from uq_job_setup import normalised_mr, save_analytic_model, tiny_config

from tfuq.cli import main
from tfuq.data import read_split
from tfuq.data.prepare import prepare_data
from tfuq.errors import UserError
from tfuq.inference.scans import image_subject, model_config


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(args)
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model_dir holding an analytic model and the tiny config (trained elsewhere), and user scans."""
    tmp = tmp_path_factory.mktemp("scans")
    config = tiny_config(tmp, model_dir=tmp / "trained_there")
    prepare_data(config)
    phantom = next((tmp / "phantom").iterdir())
    model_dir = tmp / "moved model"
    save_analytic_model(model_dir, base=0.02)
    shutil.copy(tmp / "tiny.ini", model_dir / "training_config.ini")
    mine = tmp / "my scans"
    mine.mkdir()
    split = read_split(config.system.dataset_split_file)
    ids = sorted(split)[:2]
    for k, subject in enumerate(ids):
        shutil.copy(phantom / f"{subject}_mr.nii.gz", mine / f"patient{k}_mr.nii.gz")
    return {"tmp": tmp, "model_dir": model_dir, "mine": mine}


def _error_lines(err: str) -> int:
    """Error lines on stderr; a traceback would add many."""
    assert "Traceback" not in err
    return sum(line.startswith(("tfuq: error", "Error:")) for line in err.splitlines())


def _mean(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def test_image_from_a_model_dir_uses_the_stored_config(scans: dict, capsys) -> None:
    scan = scans["mine"] / "patient0_mr.nii.gz"
    out = scans["tmp"] / "out_image"
    code, stdout, err = _run(
        ["infer", str(scans["model_dir"]), "--image", f"MR={scan}", "--output-dir", str(out)], capsys
    )
    assert code == 0, err
    assert "1 subject(s) written" in stdout
    expected = normalised_mr(scan) * 4095.0 - 1024.0
    np.testing.assert_allclose(_mean(out / "patient0_mean.nii.gz"), expected, atol=0.02, rtol=1e-6)
    np.testing.assert_allclose(_mean(out / "patient0_total_std.nii.gz"), 0.02 * 4095.0, rtol=1e-4)
    assert (out / "patient0_qc.json").is_file()
    # the phantom of the stored config is never generated for --image
    assert not (scans["tmp"] / "moved model" / "phantom").exists()

    before = (out / "patient0_mean.nii.gz").stat().st_mtime_ns
    code, _, err = _run(
        ["infer", str(scans["model_dir"]), "--image", f"MR={scan}", "--output-dir", str(out)], capsys
    )
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert _error_lines(err) == 1
    assert (out / "patient0_mean.nii.gz").stat().st_mtime_ns == before
    args = ["infer", str(scans["model_dir"]), "--image", f"MR={scan}", "--output-dir", str(out)]
    code, _, err = _run([*args, "--overwrite", "--subject", "renamed"], capsys)
    assert code == 0, err
    assert (out / "renamed_mean.nii.gz").is_file()


def test_input_dir_infers_every_subject_in_the_folder(scans: dict, capsys) -> None:
    out = scans["tmp"] / "out_folder"
    code, stdout, err = _run(
        ["infer", str(scans["model_dir"]), "--input-dir", str(scans["mine"]), "--output-dir", str(out)],
        capsys,
    )
    assert code == 0, err
    assert "2 subject(s) written" in stdout
    for k in range(2):
        expected = normalised_mr(scans["mine"] / f"patient{k}_mr.nii.gz") * 4095.0 - 1024.0
        np.testing.assert_allclose(_mean(out / f"patient{k}_mean.nii.gz"), expected, atol=0.02, rtol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image", "MR={scan}"], "need --output-dir"),
        (["--image", "MRI={scan}", "--output-dir", "{out}"], "no section [MRI]"),
        (["--image", "MR={missing}", "--output-dir", "{out}"], "no such file"),
        (["--image", "MR", "--output-dir", "{out}"], "expected SECTION=FILE"),
        (["--image", "BODY={scan}", "--output-dir", "{out}"], "add --image MR=FILE"),
        (["--image", "MR={scan}", "--image", "MR={scan}", "--output-dir", "{out}"], "given twice"),
        (["--image", "MR={scan}", "--input-dir", "{mine}", "--output-dir", "{out}"], "not both"),
        (["--subject", "x"], "give --image too"),
    ],
)
def test_bad_command_lines_are_one_line_errors_and_write_nothing(scans: dict, capsys, extra, message) -> None:
    out = scans["tmp"] / "out_bad"
    names = {
        "scan": scans["mine"] / "patient0_mr.nii.gz",
        "missing": scans["mine"] / "nope_mr.nii.gz",
        "out": out,
        "mine": scans["mine"],
    }
    args = ["infer", str(scans["model_dir"]), *(a.format(**names) for a in extra)]
    code, _, err = _run(args, capsys)
    assert code == 2
    assert message in err
    assert _error_lines(err) == 1
    assert not out.exists()


def test_model_config_errors(scans: dict) -> None:
    with pytest.raises(UserError, match="not a model directory"):
        model_config(scans["mine"])
    with pytest.raises(UserError, match="no such config file or model directory"):
        model_config(scans["tmp"] / "nowhere")
    config = model_config(scans["model_dir"])
    assert config.model_dir == scans["model_dir"].resolve()


def test_a_mask_reading_the_input_files_gets_the_input(scans: dict) -> None:
    # [BODY] defined as the MR's own files (as configs/brats_t1t2.ini defines [BRAIN] from the T1).
    config = model_config(scans["model_dir"], ["BODY.filename_contains=_mr", "BODY.path_to_search=phantom:"])
    scan = scans["mine"] / "patient1_mr.nii.gz"
    name, files = image_subject(config, [f"MR={scan}"])
    assert name == "patient1"
    assert files["BODY"] == scan.absolute()
    assert "CT" not in files and "NOISE" not in files


def test_a_moved_model_dir_keeps_its_outputs_inside(scans: dict, tmp_path: Path) -> None:
    """training_config.ini holds resolved paths; after a move they follow the model_dir, others stay."""
    from tfuq.config import load_config
    from tfuq.inference.scans import model_config

    trained = tmp_path / "trained here"
    elsewhere = tmp_path / "shared" / "maps"
    config = load_config(
        scans["tmp"] / "tiny.ini", [f"SYSTEM.model_dir={trained}", f"EVALUATION.save_csv_dir={elsewhere}"]
    )
    moved = tmp_path / "moved there"
    moved.mkdir()
    (moved / "training_config.ini").write_text(config.to_ini(), encoding="utf-8")
    assert str(trained / "inference") in config.to_ini()  # the stored path is absolute
    again = model_config(moved)
    assert Path(again.model_dir) == moved.resolve()
    assert Path(again.inference.save_seg_dir) == moved.resolve() / "inference"
    assert Path(again.system.dataset_split_file).parent == moved.resolve()
    assert Path(again.evaluation.save_csv_dir) == elsewhere  # outside the trained model_dir: kept
