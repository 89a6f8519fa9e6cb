from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tfuq.data.nifti import Volume, load_volume, read_geometry, save_volume, volume_from_array
from tfuq.errors import UserError

SHAPE = (5, 6, 7)


def _affine(matrix: np.ndarray, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


def _oblique() -> np.ndarray:
    rotation = Rotation.from_euler("xyz", [20.0, -15.0, 35.0], degrees=True).as_matrix()
    return _affine(rotation @ np.diag([1.2, 0.9, 2.0]))


AFFINES = {
    "RAS": _affine(np.eye(3)),
    "LPS": _affine(np.diag([-1.0, -1.0, 1.0])),
    "PIR": _affine(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])),
    "oblique": _oblique(),
    "anisotropic": _affine(np.diag([0.8, 1.0, 3.0])),
}


def _write(
    path: Path,
    affine: np.ndarray,
    *,
    data: np.ndarray | None = None,
    dtype=np.float32,
    qcode: int = 1,
    scode: int = 2,
    slope_inter: tuple[float, float] | None = None,
) -> np.ndarray:
    """Write a NIfTI file with distinct voxel values; returns the stored (unscaled) data."""
    if data is None:
        data = np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE) - 50.0
    data = data.astype(dtype)
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm", "sec")
    image = nib.Nifti1Image(data, affine, header=header)
    image.set_qform(affine, code=qcode)
    image.set_sform(affine, code=scode)
    if slope_inter is not None:
        image.header.set_slope_inter(*slope_inter)
    nib.save(image, path)
    return data


def _header_fields(header: nib.Nifti1Header) -> dict[str, np.ndarray]:
    keys = [
        "qform_code",
        "sform_code",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "qoffset_y",
        "qoffset_z",
        "srow_x",
        "srow_y",
        "srow_z",
        "pixdim",
        "xyzt_units",
        "dim",
    ]
    return {key: np.asarray(header[key]).copy() for key in keys}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_load_reorients_to_ras_keeping_world_coordinates(tmp_path, name):
    affine = AFFINES[name]
    path = tmp_path / f"{name}.nii.gz"
    data = _write(path, affine)
    vol = load_volume(path)
    assert vol.axcodes == ("R", "A", "S")
    assert vol.array.dtype == np.float32
    assert sorted(vol.shape) == sorted(SHAPE)
    norms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if name == "oblique":
        assert sorted(vol.spacing) == pytest.approx(sorted(norms))
    else:
        expected = np.empty(3)
        expected[np.argmax(np.abs(affine[:3, :3]), axis=0)] = norms
        assert vol.spacing == pytest.approx(expected)
    # Oracle: the original affine says where every stored voxel is in the world.
    rng = np.random.default_rng(0)
    for index in rng.integers(0, SHAPE, size=(12, 3)):
        world = affine @ np.append(index, 1.0)
        new_index = np.linalg.solve(vol.affine, world)[:3]
        np.testing.assert_allclose(new_index, np.round(new_index), atol=1e-5)
        j = tuple(int(k) for k in np.round(new_index))
        assert vol.array[j] == data[tuple(index)]


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_is_exact(tmp_path, name):
    affine = AFFINES[name]
    src = tmp_path / "in.nii.gz"
    _write(src, affine, qcode=1, scode=2)
    vol = load_volume(src)
    out = save_volume(vol.array, vol, tmp_path / "out.nii.gz")
    original, written = nib.load(src), nib.load(out)
    np.testing.assert_array_equal(written.get_fdata(), original.get_fdata())
    np.testing.assert_array_equal(written.affine, original.affine)
    # Same dtype: the whole header block is byte-identical.
    assert written.header.binaryblock == original.header.binaryblock
    again = load_volume(out)
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_array_equal(again.affine, vol.affine)


def test_pixdim_spacing_anisotropic(tmp_path):
    path = tmp_path / "a.nii"
    _write(path, AFFINES["anisotropic"])
    assert load_volume(path).spacing == pytest.approx((0.8, 1.0, 3.0))
    lps = tmp_path / "b.nii"
    _write(lps, _affine(np.array([[0.0, 0.0, -3.0], [-0.8, 0.0, 0.0], [0.0, 1.0, 0.0]])))
    # Axes (P, S, L) with sizes (0.8, 1.0, 3.0) become (R, A, S) with (3.0, 0.8, 1.0).
    assert load_volume(lps).spacing == pytest.approx((3.0, 0.8, 1.0))


def test_scaling_applied_and_reset_on_write(tmp_path):
    src = tmp_path / "scaled.nii.gz"
    raw = _write(src, AFFINES["LPS"], dtype=np.int16, slope_inter=(2.0, 10.0))
    vol = load_volume(src)
    expected = nib.load(src).get_fdata()
    np.testing.assert_array_equal(expected, raw * 2.0 + 10.0)
    out = save_volume(vol.array, vol, tmp_path / "out.nii.gz", dtype=np.float32)
    written = nib.load(out)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    assert written.get_data_dtype() == np.float32
    fields_in, fields_out = _header_fields(nib.load(src).header), _header_fields(written.header)
    for key, value in fields_in.items():
        np.testing.assert_array_equal(fields_out[key], value, err_msg=key)


def test_save_integer_dtype_rounds_and_refuses_overflow(tmp_path):
    src = tmp_path / "a.nii.gz"
    _write(src, AFFINES["RAS"])
    vol = load_volume(src)
    out = save_volume(vol.array + 0.2, vol, tmp_path / "int.nii.gz", dtype=np.int16)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), vol.array)
    with pytest.raises(ValueError, match="int8"):
        save_volume(vol.array * 100, vol, tmp_path / "big.nii.gz", dtype=np.int8)


def test_axcodes_option(tmp_path):
    path = tmp_path / "a.nii.gz"
    data = _write(path, AFFINES["LPS"])
    vol = load_volume(path, axcodes=("L", "P", "S"))
    assert vol.axcodes == ("L", "P", "S")
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_array_equal(vol.affine, AFFINES["LPS"])
    pir = load_volume(path, axcodes="PIR")
    assert pir.axcodes == ("P", "I", "R")
    for bad in (("L", "R", "S"), ("X", "A", "S"), ("R", "A")):
        with pytest.raises(ValueError, match="axcodes"):
            load_volume(path, axcodes=bad)


def test_channels_and_singleton_layouts(tmp_path):
    data4 = np.random.default_rng(1).normal(size=(*SHAPE, 1)).astype(np.float32)
    single = tmp_path / "single.nii.gz"
    nib.save(nib.Nifti1Image(data4, AFFINES["LPS"]), single)
    vol = load_volume(single)
    assert vol.array.ndim == 3
    out = save_volume(vol.array, vol, tmp_path / "single_out.nii.gz")
    assert nib.load(out).shape == (*SHAPE, 1)
    np.testing.assert_array_equal(nib.load(out).get_fdata(), data4)

    data_c = np.random.default_rng(2).normal(size=(*SHAPE, 3)).astype(np.float32)
    multi = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(data_c, AFFINES["PIR"]), multi)
    vol = load_volume(multi)
    assert vol.array.ndim == 4 and vol.num_channels == 3
    out = save_volume(vol.array, vol, tmp_path / "multi_out.nii.gz")
    np.testing.assert_array_equal(nib.load(out).get_fdata(), data_c)
    # Two maps written on a 3D reference's grid as channels.
    ref = load_volume(single)
    two = np.stack([ref.array, 2 * ref.array], axis=-1)
    out = save_volume(two, ref, tmp_path / "two.nii.gz")
    np.testing.assert_array_equal(nib.load(out).get_fdata()[..., 1], 2 * data4[..., 0])


def test_save_shape_mismatch_names_both_shapes(tmp_path):
    path = tmp_path / "a.nii.gz"
    _write(path, AFFINES["RAS"])
    vol = load_volume(path)
    with pytest.raises(ValueError, match=r"\(5, 6, 7\).*\(5, 6, 8\)"):
        save_volume(np.zeros((5, 6, 8)), vol, tmp_path / "out.nii.gz")


def test_overwrite_refused_then_allowed(tmp_path):
    path = tmp_path / "a.nii.gz"
    _write(path, AFFINES["RAS"])
    vol = load_volume(path)
    out = tmp_path / "out.nii.gz"
    save_volume(vol.array, vol, out)
    with pytest.raises(UserError, match=r"out\.nii\.gz"):
        save_volume(vol.array * 2, vol, out)
    np.testing.assert_array_equal(load_volume(out).array, vol.array)
    save_volume(vol.array * 2, vol, out, overwrite=True)
    np.testing.assert_array_equal(load_volume(out).array, vol.array * 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "out.nii.gz"]
    with pytest.raises(UserError, match=r"\.nii"):
        save_volume(vol.array, vol, tmp_path / "out.png")


def _assert_one_line_user_error(path: Path, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        load_volume(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_error_missing_file(tmp_path):
    _assert_one_line_user_error(tmp_path / "missing.nii.gz", "not found")


def test_error_not_nifti(tmp_path):
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image\n" * 40)
    _assert_one_line_user_error(text, "NIfTI")
    fake_gz = tmp_path / "fake.nii.gz"
    fake_gz.write_bytes(b"plain bytes, not gzip" * 40)
    _assert_one_line_user_error(fake_gz, "NIfTI")


def test_error_truncated_gzip(tmp_path):
    path = tmp_path / "full.nii.gz"
    _write(path, AFFINES["RAS"], data=np.random.default_rng(0).normal(size=SHAPE))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _assert_one_line_user_error(cut, "cut.nii.gz")
    # An uncompressed file cut short in its data block.
    raw = tmp_path / "raw.nii"
    raw.write_bytes(gzip.decompress(path.read_bytes())[:600])
    _assert_one_line_user_error(raw, "raw.nii")


def test_error_wrong_dimensionality(tmp_path):
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.float32), np.eye(4)), flat)
    _assert_one_line_user_error(flat, r"found shape \(5, 6\)")
    five = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2, 2), np.float32), np.eye(4)), five)
    _assert_one_line_user_error(five, r"found shape \(3, 4, 5, 2, 2\)")


def test_error_nan_and_inf(tmp_path):
    data = np.zeros(SHAPE, np.float32)
    data[0, 0, :3] = np.nan
    nan_path = tmp_path / "nan.nii.gz"
    _write(nan_path, AFFINES["RAS"], data=data)
    _assert_one_line_user_error(nan_path, "contains 3 NaN voxels")
    data[:] = 0
    data[1, 1, 1] = -np.inf
    inf_path = tmp_path / "inf.nii.gz"
    _write(inf_path, AFFINES["RAS"], data=data)
    _assert_one_line_user_error(inf_path, "contains 1 infinite voxels")


def test_volume_from_array_and_on_grid(tmp_path):
    affine = AFFINES["anisotropic"]
    array = np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
    vol = volume_from_array(array, affine)
    assert isinstance(vol, Volume) and vol.path is None
    out = save_volume(array, vol, tmp_path / "mem.nii.gz")
    loaded = nib.load(out)
    np.testing.assert_array_equal(loaded.get_fdata(), array)
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-6)
    assert int(loaded.header["qform_code"]) == 1 and int(loaded.header["sform_code"]) == 1
    assert loaded.header.get_xyzt_units() == ("mm", "sec")

    # A new grid on an LPS file: written back in L-P-S order with the file's codes.
    src = tmp_path / "lps.nii.gz"
    _write(src, AFFINES["LPS"], qcode=2, scode=1)
    ref = load_volume(src)
    new_affine = ref.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    coarse = ref.on_grid(np.ones((3, 3, 4), np.float32), new_affine)
    assert coarse.original_shape == (3, 3, 4)
    out = save_volume(coarse.array, coarse, tmp_path / "coarse.nii.gz")
    written = nib.load(out)
    assert nib.aff2axcodes(written.affine) == ("L", "P", "S")
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (2, 1)
    np.testing.assert_allclose(written.header.get_zooms(), (2.0, 2.0, 2.0))
    # Voxel (0,0,0) of the written file sits where the RAS array says that corner is.
    corner = np.array([2, 2, 0, 1.0])  # index in the RAS array of the file's first voxel
    np.testing.assert_allclose(written.affine @ [0, 0, 0, 1.0], new_affine @ corner, atol=1e-6)
    with pytest.raises(ValueError, match="spatial shape"):
        ref.with_array(np.zeros((2, 2, 2)))


def test_tcga_loads_as_ras_with_world_coordinates(tcga_dir, tmp_path):
    path = tcga_dir / "TCGA-DU-7294" / "TCGA-DU-7294_t1.nii.gz"
    image = nib.load(path)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    raw = image.get_fdata()
    vol = load_volume(path)
    assert vol.axcodes == ("R", "A", "S")
    assert vol.shape == (240, 240, 155) and vol.spacing == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(7)
    for index in rng.integers(0, raw.shape, size=(20, 3)):
        world = image.affine @ np.append(index, 1.0)
        j = np.linalg.solve(vol.affine, world)[:3]
        np.testing.assert_array_equal(j, np.round(j))
        assert vol.array[tuple(int(k) for k in j)] == raw[tuple(index)]
    # Written back as int16: the header block is byte-identical to the input's.
    out = save_volume(vol.array, vol, tmp_path / "t1.nii.gz", dtype=np.int16)
    written = nib.load(out)
    assert written.header.binaryblock == image.header.binaryblock
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(image.dataobj))
    # As float32 only datatype/bitpix differ; geometry fields are identical.
    out32 = save_volume(vol.array, vol, tmp_path / "t1_f32.nii.gz")
    fields_in, fields_out = _header_fields(image.header), _header_fields(nib.load(out32).header)
    for key, value in fields_in.items():
        np.testing.assert_array_equal(fields_out[key], value, err_msg=key)


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("axcodes", [None, ("L", "P", "S")])
def test_read_geometry_is_the_grid_load_volume_gives(tmp_path, name, axcodes):
    for suffix in (".nii.gz", ".nii"):
        path = tmp_path / f"{name}{suffix}"
        _write(path, AFFINES[name])
        grid, vol = read_geometry(path, axcodes=axcodes), load_volume(path, axcodes=axcodes)
        assert grid.shape == vol.shape and grid.num_channels == 1 and grid.path == path
        np.testing.assert_allclose(grid.affine, vol.affine, atol=1e-12)
        assert grid.spacing == pytest.approx(vol.spacing)
    multi = tmp_path / "multi.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 3), np.float32), AFFINES[name]), multi)
    assert read_geometry(multi).num_channels == 3


def _assert_header_error(path: Path, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        read_geometry(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match=match):
        load_volume(path)


def test_read_geometry_refuses_what_the_header_shows(tmp_path):
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    _assert_header_error(empty, r"empty file \(0 bytes\)")
    _assert_header_error(tmp_path / "missing.nii", "file not found")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.float32), np.eye(4)), flat)
    _assert_header_error(flat, r"found shape \(5, 6\)")
    hollow = tmp_path / "hollow.nii"
    nib.save(nib.Nifti1Image(np.zeros((5, 0, 4), np.float32), np.eye(4)), hollow)
    _assert_header_error(hollow, r"an image axis has no voxel; found shape \(5, 0, 4\)")
    header = nib.Nifti1Header()
    header.set_data_shape(SHAPE)
    header.set_qform(None, code=0)
    header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    flat_grid = tmp_path / "flat_grid.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), None, header=header), flat_grid)
    _assert_header_error(flat_grid, "affine is not finite and invertible")
    # An uncompressed file cut in its data block is found from its size; a cut .nii.gz only when read.
    full = tmp_path / "full.nii"
    _write(full, AFFINES["RAS"])
    cut = tmp_path / "cut.nii"
    cut.write_bytes(full.read_bytes()[:-10])
    _assert_header_error(cut, r"truncated NIfTI file \(\d+ bytes; its header describes \d+\)")
    cut_gz = tmp_path / "cut.nii.gz"
    cut_gz.write_bytes(gzip.compress(full.read_bytes())[:-40])
    assert read_geometry(cut_gz).shape == SHAPE
    with pytest.raises(UserError, match="could not read the voxel data"):
        load_volume(cut_gz)
