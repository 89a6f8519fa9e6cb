"""Output maps: target units vs the normalisation formulas, NIfTI geometry, atomic refusal, QC vs NumPy."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tfuq.data import NormalisationParams, denormalise, load_volume, save_volume, volume_from_array
from tfuq.errors import UserError
from tfuq.inference.outputs import (
    OUTPUT_MAPS,
    STD_MAPS,
    output_paths,
    qc_summary,
    to_target_units,
    write_outputs,
)

SHAPE = (6, 5, 4)
PARAMS = NormalisationParams("window", -1024.0, 4095.0)


def _decomposition(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    epi = rng.gamma(2.0, 1e-4, size=SHAPE).astype(np.float32)
    alea = rng.gamma(2.0, 4e-4, size=SHAPE).astype(np.float32)
    return {
        "mean": rng.uniform(0, 1, size=SHAPE).astype(np.float32),
        "epistemic_var": epi,
        "aleatoric_var": alea,
        "total_var": epi + alea,
    }


@pytest.fixture
def reference(tmp_path):
    """A reference file stored L-P-S with a 2 x 1.5 x 3 mm grid and an offset origin."""
    affine = np.array([[-2.0, 0, 0, 40.0], [0, -1.5, 0, 30.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])
    path = tmp_path / "ref_ct.nii.gz"
    save_volume(np.zeros(SHAPE, np.float32), volume_from_array(np.zeros(SHAPE), affine), path)
    vol = load_volume(path)  # read back in RAS: arrays are flipped relative to the file
    assert vol.axcodes == ("R", "A", "S")
    return vol


def test_target_units_follow_the_normalisation():
    dec = _decomposition()
    maps = to_target_units(dec, PARAMS)
    assert tuple(maps) == OUTPUT_MAPS
    np.testing.assert_array_equal(maps["mean"], denormalise(dec["mean"], PARAMS))
    np.testing.assert_allclose(maps["mean"], dec["mean"] * 4095.0 - 1024.0, rtol=1e-6)
    for std, var in zip(STD_MAPS, ("epistemic_var", "aleatoric_var", "total_var")):
        np.testing.assert_array_equal(maps[std], np.sqrt(dec[var]) * PARAMS.scale)  # scale only, no offset
        np.testing.assert_allclose(maps[std] / np.sqrt(dec[var]), PARAMS.scale, rtol=1e-6)
        assert maps[std].dtype == np.float32
    # identity normalisation leaves the maps as sqrt of the variances
    ident = to_target_units(dec, NormalisationParams("none", 0.0, 1.0))
    np.testing.assert_array_equal(ident["total_std"], np.sqrt(dec["total_var"]))


def test_round_off_negative_variance_is_clipped_and_nan_refused():
    dec = _decomposition()
    dec["epistemic_var"][0, 0, 0] = -1e-12
    assert to_target_units(dec, PARAMS)["epistemic_std"][0, 0, 0] == 0.0
    dec["total_var"][1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        to_target_units(dec, PARAMS)
    with pytest.raises(ValueError, match="missing"):
        to_target_units({"mean": dec["mean"]}, PARAMS)


def test_qc_summary_matches_numpy_on_the_mask():
    maps = to_target_units(_decomposition(1), PARAMS)
    mask = np.zeros(SHAPE, bool)
    mask[1:5, 1:4, 1:3] = True
    qc = qc_summary(maps, mask)
    assert qc["mask_voxels"] == 4 * 3 * 2 and qc["flagged"] is False
    for key in STD_MAPS:
        inside = maps[key].astype(np.float64)[mask]
        assert qc[key]["mean"] == pytest.approx(np.mean(inside), rel=1e-12)
        assert qc[key]["median"] == pytest.approx(np.median(inside), rel=1e-12)
        assert qc[key]["p95"] == pytest.approx(np.percentile(inside, 95), rel=1e-12)
    whole = qc_summary(maps)
    assert whole["mask_voxels"] == np.prod(SHAPE)
    assert whole["total_std"]["mean"] == pytest.approx(maps["total_std"].astype(np.float64).mean(), rel=1e-12)
    # a 0/1 mask means the same as the boolean one
    assert qc_summary(maps, mask.astype(np.uint8)) == qc


def test_flagged_logic():
    maps = to_target_units(_decomposition(2), PARAMS)
    mean_total = float(maps["total_std"].astype(np.float64).mean())
    assert qc_summary(maps, threshold=mean_total * 0.99)["flagged"] is True
    assert qc_summary(maps, threshold=mean_total * 1.01)["flagged"] is False
    assert qc_summary(maps, threshold=0.0)["flagged"] is False  # 0 disables flagging
    with pytest.raises(ValueError, match="threshold"):
        qc_summary(maps, threshold=-1.0)
    with pytest.raises(UserError, match="no voxel"):
        qc_summary(maps, np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="mask of shape"):
        qc_summary(maps, np.ones((2, 2, 2), bool))


def test_files_in_reference_geometry(tmp_path, reference):
    dec = _decomposition(3)
    extras = {"alpha": np.full(SHAPE, 7.5, np.float32), "lower95": np.arange(np.prod(SHAPE)).reshape(SHAPE)}
    out = tmp_path / "out"
    paths = write_outputs(out, "sub01", dec, reference, PARAMS, extra_maps=extras, threshold=1.0)
    expected_names = {f"sub01_{n}.nii.gz" for n in (*OUTPUT_MAPS, "alpha", "lower95")} | {"sub01_qc.json"}
    assert {p.name for p in paths.values()} == expected_names == {p.name for p in out.iterdir()}
    ref_image = nib.load(reference.path)
    maps = to_target_units(dec, PARAMS)
    for name in (*OUTPUT_MAPS, "alpha", "lower95"):
        image = nib.load(paths[name])
        np.testing.assert_array_equal(image.affine, ref_image.affine)
        assert image.shape == ref_image.shape
        assert int(image.header["sform_code"]) == int(ref_image.header["sform_code"])
        back = load_volume(paths[name]).array  # RAS again: must equal what was written
        np.testing.assert_array_equal(back, maps[name] if name in maps else extras[name].astype(np.float32))
    # on disk the array is in the file's L-P-S order: flipped along the first two axes
    np.testing.assert_array_equal(np.asarray(nib.load(paths["mean"]).dataobj), maps["mean"][::-1, ::-1, :])
    qc = json.loads(paths["qc"].read_text())
    assert qc["subject"] == "sub01" and qc["normalisation"] == PARAMS.to_dict()
    assert qc["total_std"]["mean"] == pytest.approx(float(maps["total_std"].astype(np.float64).mean()))
    assert qc["flagged"] is True  # mean total std is ~100 HU here, far above 1 HU


def test_refuses_to_overwrite_and_writes_nothing(tmp_path, reference):
    dec = _decomposition(4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub01_qc.json").write_text("{}")  # only the last file of the set exists
    with pytest.raises(UserError, match="refusing to overwrite"):
        write_outputs(out, "sub01", dec, reference, PARAMS)
    assert sorted(p.name for p in out.iterdir()) == ["sub01_qc.json"]  # nothing partial was written
    paths = write_outputs(out, "sub01", dec, reference, PARAMS, overwrite=True)
    assert json.loads(paths["qc"].read_text())["subject"] == "sub01"
    dec2 = _decomposition(5)
    write_outputs(out, "sub01", dec2, reference, PARAMS, overwrite=True)
    np.testing.assert_array_equal(load_volume(paths["mean"]).array, to_target_units(dec2, PARAMS)["mean"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_invalid_names_and_shapes(tmp_path, reference):
    dec = _decomposition()
    with pytest.raises(UserError, match="subject"):
        write_outputs(tmp_path, "../evil", dec, reference, PARAMS)
    with pytest.raises(UserError, match="reserved"):
        write_outputs(tmp_path, "s", dec, reference, PARAMS, extra_maps={"mean": dec["mean"]})
    with pytest.raises(UserError, match="map name"):
        write_outputs(tmp_path, "s", dec, reference, PARAMS, extra_maps={"a/b": dec["mean"]})
    with pytest.raises(ValueError, match="reference grid"):
        write_outputs(tmp_path, "s", dec, reference, PARAMS, extra_maps={"beta": np.zeros((2, 2, 2))})
    assert not list(tmp_path.glob("s_*"))
    assert output_paths(tmp_path, "s", ("mean",))["qc"] == tmp_path / "s_qc.json"


def test_real_reference_geometry(tmp_path, tcga_dir):
    """The real glioma T2 is stored L-P-S: maps must land on its grid exactly."""
    ref_path = tcga_dir / "TCGA-DU-7294" / "TCGA-DU-7294_t2.nii.gz"
    reference = load_volume(ref_path)
    rng = np.random.default_rng(6)
    mean = rng.uniform(0, 1, size=reference.shape).astype(np.float32)
    var = np.full(reference.shape, 1e-4, np.float32)
    dec = {"mean": mean, "epistemic_var": var, "aleatoric_var": var, "total_var": 2 * var}
    params = NormalisationParams("percentile", 10.0, 1000.0)
    brain = reference.array > 0
    paths = write_outputs(tmp_path, "TCGA-DU-7294", dec, reference, params, mask=brain, threshold=10.0)
    ref_image = nib.load(ref_path)
    assert nib.aff2axcodes(ref_image.affine) == ("L", "P", "S")
    for name in OUTPUT_MAPS:
        image = nib.load(paths[name])
        np.testing.assert_array_equal(image.affine, ref_image.affine)
        assert image.shape == ref_image.shape
    np.testing.assert_array_equal(
        load_volume(paths["mean"]).array, mean * np.float32(1000.0) + np.float32(10.0)
    )
    qc = json.loads(paths["qc"].read_text())
    assert qc["mask_voxels"] == int(brain.sum())
    assert qc["total_std"]["median"] == pytest.approx(np.sqrt(2e-4) * 1000.0, rel=1e-5)
    assert qc["flagged"] is True  # 14.1 > 10
