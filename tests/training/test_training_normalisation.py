"""The stored target normalisation: pooled fits against NumPy, the record, and the pipeline using it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.config import load_config
from tfuq.data.normalisation import NormalisationParams, normalise
from tfuq.errors import UserError
from tfuq.model_store.normalisation import (
    normalisation_record,
    read_target_normalisation,
    write_normalisation,
)
from tfuq.training.normalisation import fit_pooled_normalisation, fit_target_normalisation

RNG = np.random.default_rng(3)
A = RNG.normal(10.0, 2.0, size=(6, 5, 4))
B = RNG.normal(-3.0, 5.0, size=(4, 4, 4))


def test_pooled_fits_equal_numpy_on_the_concatenated_voxels() -> None:
    pooled = np.concatenate([A.ravel(), B.ravel()])
    z = fit_pooled_normalisation([A, B], "zscore")
    assert (z.offset, z.scale) == pytest.approx((pooled.mean(), pooled.std()), rel=1e-12)
    mm = fit_pooled_normalisation([A, B], "minmax")
    assert (mm.offset, mm.offset + mm.scale) == pytest.approx((pooled.min(), pooled.max()), rel=1e-12)
    pc = fit_pooled_normalisation([A, B], "percentile", cutoff=(0.05, 0.9))
    low, high = np.percentile(pooled, [5, 90])
    assert (pc.offset, pc.offset + pc.scale) == pytest.approx((low, high), rel=1e-12)
    mask = A > 10.0
    masked = fit_pooled_normalisation([A, B], "zscore", masks=[mask, None])
    both = np.concatenate([A[mask], B.ravel()])
    assert (masked.offset, masked.scale) == pytest.approx((both.mean(), both.std()), rel=1e-12)
    assert fit_pooled_normalisation([], "window", window=(0.0, 10.0)) == NormalisationParams(
        "window", 0.0, 10.0
    )
    assert fit_pooled_normalisation([A], "none") == NormalisationParams("none", 0.0, 1.0)


def test_pooled_fit_errors() -> None:
    with pytest.raises(ValueError, match="no volume given"):
        fit_pooled_normalisation([], "zscore")
    with pytest.raises(ValueError, match="constant"):
        fit_pooled_normalisation([np.ones(4), np.ones(3)], "zscore")
    with pytest.raises(ValueError, match="one mask per volume"):
        fit_pooled_normalisation([A, B], "minmax", masks=[None])
    with pytest.raises(ValueError, match="NaN"):
        fit_pooled_normalisation([np.array([1.0, np.nan])], "zscore")


@pytest.fixture
def folder_ini(tmp_path: Path) -> Path:
    data = tmp_path / "d"
    data.mkdir()
    for s, (ct, mr) in enumerate([(A, A + 1), (B, B * 2)]):
        shape = ct.shape
        nib.save(nib.Nifti1Image(mr.astype(np.float32), np.eye(4)), data / f"s{s}_mr.nii.gz")
        nib.save(nib.Nifti1Image(ct.astype(np.float32), np.eye(4)), data / f"s{s}_ct.nii.gz")
        nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4)), data / f"s{s}_mask.nii.gz")
    path = tmp_path / "app.ini"
    path.write_text(
        "[MR]\npath_to_search = d\nfilename_contains = _mr\nspatial_window_size = 4, 4, 4\n"
        "intensity_normalisation = zscore\n"
        "[CT]\npath_to_search = d\nfilename_contains = _ct\nintensity_normalisation = zscore\n"
        "[BODY]\npath_to_search = d\nfilename_contains = _mask\ninterp_order = 0\n"
        "[NETWORK]\nbatch_size = 1\nqueue_length = 1\n"
        "[REGRESSION]\nimage = MR\noutput = CT\nmask = BODY\n"
    )
    return path


def test_target_fit_record_and_pipeline_use_the_same_parameters(folder_ini: Path, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from tfuq.data.pipeline import make_training_dataset, make_validation_dataset

    config = load_config(folder_ini)
    params = fit_target_normalisation(config, ["s0", "s1"])
    pooled = np.concatenate([A.astype(np.float32).ravel(), B.astype(np.float32).ravel()]).astype(np.float64)
    assert params.method == "zscore"
    assert (params.offset, params.scale) == pytest.approx((pooled.mean(), pooled.std()), rel=1e-6)
    only_b = fit_target_normalisation(config, ["s1"])
    assert only_b.offset == pytest.approx(float(B.astype(np.float32).mean()), rel=1e-6)
    with pytest.raises(UserError, match="no files for training subject s9"):
        fit_target_normalisation(config, ["s9"])

    write_normalisation(tmp_path / "run", config, params)
    record = json.loads((tmp_path / "run" / "normalisation.json").read_text())
    assert record == normalisation_record(config, params)
    assert record["inputs"]["MR"]["method"] == "zscore" and record["target"]["section"] == "CT"
    assert read_target_normalisation(tmp_path / "run") == params
    assert read_target_normalisation(tmp_path / "nothing") is None
    (tmp_path / "run" / "normalisation.json").write_text("{}")
    with pytest.raises(UserError, match="not a valid tfuq normalisation record"):
        read_target_normalisation(tmp_path / "run")

    # every subject's target windows use the pooled parameters (inputs stay per subject)
    mr = (2 * B).astype(np.float32)
    mr_params = NormalisationParams(
        "zscore", float(mr.astype(np.float64).mean()), float(mr.astype(np.float64).std())
    )
    targets = {}
    for make in (make_training_dataset, make_validation_dataset):
        x, y = (
            np.asarray(t)[0, ..., 0] for t in next(iter(make(config, ["s1"], target_normalisation=params)))
        )
        raw_mr = 2 * (y.astype(np.float64) * params.scale + params.offset)  # the MR of s1 is 2 x its CT
        np.testing.assert_allclose(x, normalise(raw_mr, mr_params), rtol=1e-4, atol=1e-4)
        targets[make.__name__] = y
    per_subject = np.asarray(next(iter(make_training_dataset(config, ["s1"])))[1])[0, ..., 0]
    assert not np.allclose(per_subject, targets["make_training_dataset"], atol=1e-3)
    del tf


def test_per_subject_target_is_the_identity_record_and_each_subject_own_map(
    folder_ini: Path, tmp_path: Path
) -> None:
    """target_normalisation = per_subject: stored map = identity (maps in normalised units), and
    each subject's training target is z-scored with its own statistics (oracle: NumPy on the file)."""
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from tfuq.data.pipeline import make_training_dataset
    from tfuq.training.inputs import prepare_inputs

    overrides = ["CT.target_normalisation=per_subject", "EVALUATION.target_units=normalised"]
    config = load_config(folder_ini, [*overrides, f"SYSTEM.model_dir={tmp_path / 'run'}"])
    assert config.per_subject_target
    assert fit_target_normalisation(config, ["s0", "s1"]) == NormalisationParams("none", 0.0, 1.0)
    inputs = prepare_inputs(config, tf.distribute.get_strategy())
    assert inputs.target_normalisation == NormalisationParams("none", 0.0, 1.0)
    record = json.loads((tmp_path / "run" / "normalisation.json").read_text())
    assert record["target"]["per_subject"] is True and record["target"]["method"] == "none"
    b = B.astype(np.float32).astype(np.float64)
    for subject, ct in (("s1", b),):
        _, y = (np.asarray(t)[0, ..., 0] for t in next(iter(make_training_dataset(config, [subject]))))
        own = (ct - ct.mean()) / ct.std()
        # a 4^3 window of the subject's own z-scores: every value is one of them
        assert np.min(np.abs(y.ravel()[:, None] - own.ravel()[None, :]), axis=1).max() < 1e-4
    # a pooled record says so too
    pooled = load_config(folder_ini)
    record = normalisation_record(pooled, NormalisationParams("none", 0.0, 1.0))
    assert record["target"]["per_subject"] is False
