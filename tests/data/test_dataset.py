"""tfuq.data.dataset and tfuq.data.checks: subjects matched, split and checked before anything is written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.config import load_config
from tfuq.data.checks import check_image_values
from tfuq.data.dataset import all_subject_ids, optional_sections, plan_dataset
from tfuq.data.nifti import load_volume
from tfuq.data.split import read_split
from tfuq.data.training_windows import load_training_subject
from tfuq.errors import UserError

SHAPE = (12, 10, 8)
IDS = ["s0", "s1", "s2", "s3", "s4"]


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4) if affine is None else affine), path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "d"
    data.mkdir()
    rng = np.random.default_rng(0)
    for subject in IDS:
        _save(data / f"{subject}_mr.nii.gz", rng.uniform(1, 2, SHAPE))
        _save(data / f"{subject}_ct.nii.gz", rng.uniform(-1000, 1000, SHAPE))
        mask = np.zeros(SHAPE)
        mask[2:10, 2:8, 2:6] = 1
        _save(data / f"{subject}_mask.nii.gz", mask)
    _save(data / "s0_noise.nii.gz", np.ones(SHAPE))  # an optional section: only s0 has one
    (tmp_path / "app.ini").write_text(
        "[SYSTEM]\nmodel_dir = run\n"
        "[MR]\npath_to_search = d\nfilename_contains = _mr\nspatial_window_size = 8, 8, 8\n"
        "[CT]\npath_to_search = d\nfilename_contains = _ct\nspatial_window_size = 8, 8, 8\n"
        "intensity_normalisation = window\n"
        "[BODY]\npath_to_search = d\nfilename_contains = _mask\ninterp_order = 0\n"
        "[NOISE]\npath_to_search = d\nfilename_contains = _noise\n"
        "[TRAINING]\nexclude_fraction_for_validation = 0.2\nexclude_fraction_for_inference = 0.2\n"
        "[REGRESSION]\nimage = MR\noutput = CT\nmask = BODY\nnoise_std = NOISE\n"
    )
    return tmp_path


def _plan(folder: Path, *overrides: str):
    config = load_config(folder / "app.ini", list(overrides))
    from tfuq.data.sources import resolve_sources

    return config, plan_dataset(config, resolve_sources(config))


def test_a_new_split_is_made_but_written_only_when_asked_and_then_read(folder: Path) -> None:
    config, plan = _plan(folder)
    assert optional_sections(config) == ("NOISE",)
    assert [s.id for s in plan.subjects] == IDS and plan.new_split and plan.excluded == ()
    assert sorted(plan.split) == IDS and len(plan.ids("Training")) == 3
    assert [list(s.files) for s in plan.subjects][:2] == [["MR", "CT", "BODY", "NOISE"], ["MR", "CT", "BODY"]]
    split_file = folder / "run" / "dataset_split.csv"
    assert not split_file.exists() and not (folder / "run").exists()
    assert plan.write_split() == split_file and read_split(split_file) == plan.split
    again = _plan(folder, "TRAINING.exclude_fraction_for_validation=0.5", "SYSTEM.seed=9")[1]
    assert not again.new_split and again.split == plan.split and again.write_split() is None


def test_the_split_must_list_exactly_the_subjects_found(folder: Path) -> None:
    split_file = folder / "run" / "dataset_split.csv"
    split_file.parent.mkdir()
    split_file.write_text("".join(f"{s},Training\n" for s in IDS[:4]))
    with pytest.raises(
        UserError, match=r"does not list 1 subject\(s\) found in the data \(s4\); .*delete the file"
    ):
        _plan(folder)
    split_file.write_text("".join(f"{s},Training\n" for s in [*IDS, "ghost"]))
    with pytest.raises(
        UserError, match=r"lists 1 subject\(s\) with no files in the input sections \(ghost\)"
    ):
        _plan(folder)
    split_file.write_text("".join(f"{s},Training\n" for s in IDS[:4]) + "s4,excluded\n")
    plan = _plan(folder)[1]
    assert plan.excluded == ("s4",) and [s.id for s in plan.subjects] == IDS[:4]


def test_a_subject_lacking_a_section_is_refused_unless_excluded(folder: Path) -> None:
    (folder / "d" / "s2_ct.nii.gz").unlink()
    with pytest.raises(
        UserError, match=r"subject 's2' has \[MR\], \[BODY\] but no \[CT\] file; .*'s2,Excluded'"
    ):
        _plan(folder)
    assert not (folder / "run").exists()
    split_file = folder / "run" / "dataset_split.csv"
    split_file.parent.mkdir()
    split_file.write_text("".join(f"{s},Training\n" for s in IDS))
    with pytest.raises(
        UserError, match=r"'s2' has .* no \[CT\] file; .*in the dataset split file .*dataset_split"
    ):
        _plan(folder)
    split_file.write_text("".join(f"{s},{'Excluded' if s == 's2' else 'Training'}\n" for s in IDS))
    config, plan = _plan(folder)
    assert [s.id for s in plan.subjects] == ["s0", "s1", "s3", "s4"]
    from tfuq.data.sources import resolve_sources

    assert all_subject_ids(config, resolve_sources(config)) == IDS


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            lambda d: _save(d / "s1_mr.nii.gz", np.ones((12, 10, 7))),
            r"\[MR\] .*s1_mr.* is not on the grid of \[CT\]",
        ),
        (
            lambda d: _save(d / "s1_mask.nii.gz", np.ones(SHAPE), np.diag([1.0, 1.0, 1.002, 1.0])),
            r"subject s1: \[BODY\] .*is not on the grid",
        ),
        (
            lambda d: _save(d / "s3_mr.nii.gz", np.ones((*SHAPE, 2))),
            r"s3_mr\.nii\.gz: \[MR\] .*found 2 volumes",
        ),
        (lambda d: (d / "s4_noise.nii.gz").write_bytes(b""), r"s4_noise\.nii\.gz: empty file"),
    ],
)
def test_header_checks_cover_every_subject_and_section(folder: Path, change, pattern: str) -> None:
    change(folder / "d")
    with pytest.raises(UserError, match=pattern):
        _plan(folder)


def test_grids_within_the_tolerance_are_one_grid(folder: Path) -> None:
    _save(folder / "d" / "s1_mask.nii.gz", np.ones(SHAPE), np.diag([1.0, 1.0, 1.0005, 1.0]))
    assert len(_plan(folder)[1].subjects) == len(IDS)


def test_a_window_larger_than_a_volume_is_refused_unless_padded_or_resized(folder: Path) -> None:
    window = ("MR.spatial_window_size=16, 8, 8", "CT.spatial_window_size=16, 8, 8")
    with pytest.raises(
        UserError,
        match=r"subject s0: the training window \(16, 8, 8\) is larger than its volume \(12, 10, 8\) "
        r".* on axis 0; set spatial_window_size to at most 12, 8, 8, or pad .*volume_padding_size >= 2",
    ):
        _plan(folder, *window)
    assert _plan(folder, *window, "NETWORK.volume_padding_size=2")[1].subjects
    assert _plan(folder, *window, "NETWORK.window_sampling=resize")[1].subjects
    # with pixdim the target's resampled grid counts: 12 voxels of 1 mm are 24 of 0.5 mm
    assert _plan(folder, *window, "CT.pixdim=0.5, 1, 1")[1].subjects


def test_a_config_without_training_window_skips_the_window_check(folder: Path) -> None:
    text = (folder / "app.ini").read_text().replace("spatial_window_size = 8, 8, 8\n", "")
    (folder / "app.ini").write_text(text)
    assert len(_plan(folder)[1].subjects) == len(IDS)


def test_voxel_checks_refuse_a_zero_input_and_an_empty_mask(folder: Path) -> None:
    _save(folder / "d" / "s1_mr.nii.gz", np.zeros(SHAPE))
    _save(folder / "d" / "s2_mask.nii.gz", np.zeros(SHAPE))
    config, plan = _plan(folder)  # headers are fine
    subjects = {s.id: s for s in plan.subjects}
    with pytest.raises(UserError, match=r"s1_mr\.nii\.gz: \[MR\] the image is zero everywhere"):
        load_training_subject(config, subjects["s1"])
    with pytest.raises(UserError, match=r"s2_mask\.nii\.gz: \[BODY\] the mask is empty \(no voxel > 0\)"):
        load_training_subject(config, subjects["s2"])
    assert load_training_subject(config, subjects["s3"]).inputs.shape == (*SHAPE, 1)
    with pytest.raises(ValueError, match="role"):
        check_image_values(load_volume(folder / "d" / "s3_mr.nii.gz"), "MR", role="target")
