"""tfuq info (tfuq.stages.info) and the data stage it shows (tfuq.data.prepare): real and synthetic data."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.config import load_config
from tfuq.data.prepare import prepare_data
from tfuq.data.split import read_split
from tfuq.errors import UserError
from tfuq.stages.info import describe


def tcga_config(tmp_path: Path, tcga_dir: Path) -> Path:
    path = tmp_path / "t1t2.ini"
    path.write_text(
        textwrap.dedent(
            f"""
            [SYSTEM]
            model_dir = {tmp_path / "model"}
            [T1]
            path_to_search = {tcga_dir / "TCGA-DU-7294"}, {tcga_dir / "TCGA-FG-6692"}
            filename_contains = _t1
            filename_not_contains = _t1c
            intensity_normalisation = percentile
            [T2]
            path_to_search = {tcga_dir / "TCGA-DU-7294"}, {tcga_dir / "TCGA-FG-6692"}
            filename_contains = _t2
            intensity_normalisation = zscore
            normalise_foreground_only = true
            [TRAINING]
            exclude_fraction_for_inference = 0.5
            [GAN]
            conditioning = T1
            image = T2
            """
        )
    )
    return path


def test_prepare_data_on_real_cases(tmp_path: Path, tcga_dir: Path) -> None:
    config = load_config(tcga_config(tmp_path, tcga_dir))
    summary = prepare_data(config)
    assert sorted(summary.phases["Training"] + summary.phases["Inference"]) == [
        "TCGA-DU-7294",
        "TCGA-FG-6692",
    ]
    assert len(summary.phases["Training"]) == 1 and len(summary.phases["Inference"]) == 1
    assert read_split(summary.split_file) == {
        **dict.fromkeys(summary.phases["Training"], "Training"),
        **dict.fromkeys(summary.phases["Inference"], "Inference"),
    }
    # Oracle: the file itself, read with nibabel into RAS.
    image = nib.as_closest_canonical(nib.load(tcga_dir / summary.example / f"{summary.example}_t2.nii.gz"))
    t2 = image.get_fdata()
    assert summary.shapes["T2"] == t2.shape == (240, 240, 155)
    assert summary.value_ranges["T2"] == pytest.approx((t2.min(), t2.max()))
    assert summary.spacing == pytest.approx((1.0, 1.0, 1.0))
    fg = t2[t2 > t2.min()]
    assert summary.normalisation["T2"]["offset"] == pytest.approx(fg.mean())
    assert summary.normalisation["T2"]["scale"] == pytest.approx(fg.std(), rel=1e-6)
    text = describe(config)
    assert "application: GAN: T1 -> T2" in text and "Inference: 1 subject(s)" in text


def test_describe_does_not_write_the_split(tmp_path: Path, tcga_dir: Path) -> None:
    config = load_config(tcga_config(tmp_path, tcga_dir))
    describe(config)
    assert not Path(config.system.dataset_split_file).exists()


def write_nifti(path: Path, shape: tuple[int, int, int], spacing: float = 1.0) -> None:
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32) + 10
    nib.save(nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0])), path)


def grid_config(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "d").mkdir(exist_ok=True)
    path = tmp_path / "app.ini"
    text = f"[A]\npath_to_search = d\nfilename_contains = _a\n{extra}\n"
    text += "[B]\npath_to_search = d\nfilename_contains = _b\n[REGRESSION]\nimage = A\noutput = B\n"
    path.write_text(text)
    return path


def test_different_grids_error_names_both_files_and_pixdim_resamples(tmp_path: Path) -> None:
    path = grid_config(tmp_path)
    write_nifti(tmp_path / "d" / "s1_a.nii.gz", (10, 12, 14))
    write_nifti(tmp_path / "d" / "s1_b.nii.gz", (20, 24, 28), spacing=0.5)
    with pytest.raises(
        UserError, match=r"s1_a\.nii\.gz \(shape .*is not on the grid of \[B\] .*s1_b\.nii\.gz"
    ):
        prepare_data(load_config(path))
    assert not (tmp_path / "dataset_split.csv").exists()  # refused: nothing written
    summary = prepare_data(load_config(path, ["B.pixdim=1, 1, 1", "SYSTEM.model_dir=m2"]))
    assert summary.shapes == {"A": (10, 12, 14), "B": (10, 12, 14)}


def test_constant_image_is_a_user_error(tmp_path: Path) -> None:
    path = grid_config(tmp_path, "intensity_normalisation = minmax")
    for name in ("s1_a", "s1_b"):
        nib.save(
            nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.eye(4)), tmp_path / "d" / f"{name}.nii.gz"
        )
    with pytest.raises(UserError, match=r"s1_a\.nii\.gz: \[A\] intensity_normalisation"):
        prepare_data(load_config(path))


def test_describe_without_data_still_describes(tmp_path: Path) -> None:
    path = grid_config(tmp_path)
    (tmp_path / "d").rmdir()
    text = describe(load_config(path))
    assert "application: REGRESSION: A -> B" in text
    assert "data: not available:" in text and "does not exist" in text
