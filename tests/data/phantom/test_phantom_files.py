"""write_phantom: documented file names, NIfTI headers, round trip, refusals."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tfuq.data.phantom import (
    LABELS,
    PHANTOM_FORMAT_VERSION,
    PhantomSpec,
    make_subject,
    phantom_files,
    write_phantom,
)
from tfuq.errors import UserError

WHOLEBODY = {"kind": "wholebody", "shape": (24, 18, 36), "voxel_size": (17.0, 16.0, 19.0)}
BRAIN = {"kind": "brain", "shape": (16, 16, 12), "voxel_size": (12.0, 14.0, 16.0)}


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_wholebody_files_round_trip(tmp_path):
    paths = write_phantom(tmp_path, num_subjects=2, seed=3, **WHOLEBODY)
    expected = [
        f"phantom00{i}_{role}.nii.gz"
        for i in range(2)
        for role in ("mr", "ct", "mask", "labels", "noise_std")
    ]
    assert sorted(p.name for p in paths) == sorted([*expected, "phantom.json"])
    assert _names(tmp_path) == sorted([*expected, "phantom.json"])  # no temporary files left
    spec = PhantomSpec(seed=3, **WHOLEBODY)
    subject = make_subject(spec, 1)
    arrays = {
        "mr": subject.images["mr"],
        "ct": subject.images["ct"],
        "mask": subject.mask,
        "labels": subject.labels,
        "noise_std": subject.noise_std["ct"],
    }
    for role, array in arrays.items():
        image = nib.load(tmp_path / f"phantom001_{role}.nii.gz")
        data = np.asanyarray(image.dataobj)
        assert data.dtype == array.dtype, role
        np.testing.assert_array_equal(data, array)
        np.testing.assert_allclose(image.affine, spec.affine)
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        header = image.header
        assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
        np.testing.assert_allclose(header.get_qform(), spec.affine, atol=1e-5)
        assert header.get_xyzt_units()[0] == "mm"
    description = json.loads((tmp_path / "phantom.json").read_text())
    assert description["version"] == PHANTOM_FORMAT_VERSION
    assert description["seed"] == 3
    assert description["spec"]["shape"] == list(WHOLEBODY["shape"])
    assert description["labels"] == dict(LABELS)
    assert description["tissues"][str(LABELS["liver"])]["ct"] == 60.0
    assert description["subjects"]["phantom000"] == phantom_files("wholebody", "phantom000")


def test_brain_files_with_anomaly(tmp_path):
    write_phantom(tmp_path, num_subjects=1, anomaly="cube", anomaly_size=3, **BRAIN)
    roles = ["t1", "t2", "ct", "mask", "labels", "t1_noise_std", "t2_noise_std", "ct_noise_std", "noise_std"]
    expected = sorted([*(f"phantom000_{r}.nii.gz" for r in [*roles, "anomaly_mask"]), "phantom.json"])
    assert _names(tmp_path) == expected
    load = lambda role: np.asanyarray(nib.load(tmp_path / f"phantom000_{role}.nii.gz").dataobj)  # noqa: E731
    np.testing.assert_array_equal(load("noise_std"), load("t2_noise_std"))
    cube = load("anomaly_mask").astype(bool)
    assert cube.sum() == 27 and np.all(load("ct")[cube] == 0) and np.all(load("t1")[cube] == 0)
    subject = make_subject(PhantomSpec(anomaly="cube", anomaly_size=3, **BRAIN), 0)
    np.testing.assert_array_equal(load("ct_noise_std"), subject.noise_std["ct"])


def test_existing_files_are_refused_before_anything_is_written(tmp_path):
    write_phantom(tmp_path, num_subjects=1, **WHOLEBODY)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match="already exists"):
        write_phantom(tmp_path, num_subjects=2, seed=9, **WHOLEBODY)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # phantom001 not written either
    write_phantom(tmp_path, num_subjects=2, seed=9, overwrite=True, **WHOLEBODY)
    assert (tmp_path / "phantom001_ct.nii.gz").exists()
    assert (tmp_path / "phantom000_ct.nii.gz").read_bytes() != before["phantom000_ct.nii.gz"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"kind": "spine"}, r"kind must be one of \('wholebody', 'brain'\). Received: kind='spine'"),
        ({"num_subjects": 0}, r"num_subjects must be an integer in \[1, 1000\]. Received: num_subjects=0"),
        ({"num_subjects": 2.0}, r"num_subjects must be an integer"),
        ({"shape": (8, 8, 600)}, r"shape must be 3 integers in \[8, 512\]. Received: shape=\(8, 8, 600\)"),
        ({"anomaly": "cube", "anomaly_size": 0}, r"anomaly_size must be an integer in \[1, 8\]"),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, options, match):
    folder = tmp_path / "out"
    arguments = {"shape": (8, 8, 8), **options}
    with pytest.raises(ValueError, match=match):
        write_phantom(folder, **arguments)
    assert not folder.exists()


def test_output_must_be_a_folder(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        write_phantom(target, num_subjects=1, **WHOLEBODY)
