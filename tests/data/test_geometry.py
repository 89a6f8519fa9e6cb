from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tfuq.data.geometry import align_pair, resample_to_grid, resample_to_pixdim, same_grid
from tfuq.data.nifti import load_volume, save_volume, volume_from_array
from tfuq.errors import UserError

GRADIENT = np.array([0.7, -1.3, 2.1])
INTERCEPT = 5.0


def _ramp_volume(affine: np.ndarray, shape=(12, 10, 9), path=None):
    """Volume whose value is a linear function of the world coordinate."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    return volume_from_array((world @ GRADIENT + INTERCEPT).astype(np.float64), affine, path=path)


def _ramp_at(affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    return world @ GRADIENT + INTERCEPT, world


def _inside(source, world: np.ndarray) -> np.ndarray:
    """Mask of world points strictly inside the source grid's index range."""
    inv = np.linalg.inv(source.affine)
    idx = world @ inv[:3, :3].T + inv[:3, 3]
    return np.all((idx >= 1e-6) & (idx <= np.asarray(source.shape) - 1 - 1e-6), axis=-1)


def _affine(matrix, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


SOURCE_AFFINE = _affine(np.diag([1.5, 1.0, 2.0]), (-8.0, 3.0, 1.0))


@pytest.mark.parametrize(
    "target_affine",
    [
        _affine(np.diag([1.5, 1.0, 2.0]), (-7.3, 3.4, 1.9)),  # shifted by a sub-voxel amount
        _affine(
            Rotation.from_euler("zyx", [25, -10, 15], degrees=True).as_matrix() * 0.9,
            (-2.0, 6.0, 5.0),
        ),  # rotated, finer voxels
    ],
    ids=["shifted", "rotated"],
)
def test_linear_ramp_resampled_exactly(target_affine):
    source = _ramp_volume(SOURCE_AFFINE)
    shape = (8, 7, 6)
    out = resample_to_grid(source, target_affine, shape, order=1)
    expected, world = _ramp_at(target_affine, shape)
    inside = _inside(source, world)
    assert inside.sum() > 50
    np.testing.assert_allclose(out.array[inside], expected[inside], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(out.affine, target_affine)
    # Outside the source field of view: the source minimum.
    np.testing.assert_array_equal(out.array[~inside & ~_near(source, world)], source.array.min())


def _near(source, world):
    inv = np.linalg.inv(source.affine)
    idx = world @ inv[:3, :3].T + inv[:3, 3]
    return np.all((idx > -1) & (idx < np.asarray(source.shape)), axis=-1)


def test_cubic_reproduces_ramp_in_the_interior():
    source = _ramp_volume(SOURCE_AFFINE, shape=(30, 30, 26))
    # Output voxels map to source indices >= 10 from every border.
    target = _affine(np.diag([1.5, 1.0, 2.0]), (-8.0 + 15.4, 3.0 + 10.3, 1.0 + 21.1))
    out = resample_to_grid(source, target, (6, 6, 5), order=3)
    expected, _ = _ramp_at(target, (6, 6, 5))
    # Cubic B-splines reproduce linear functions; the mirror boundary of the
    # spline prefilter perturbs them by a factor ~0.27 per voxel from the edge.
    np.testing.assert_allclose(out.array, expected, atol=1e-4)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_identity_resampling_returns_input(order):
    rng = np.random.default_rng(0)
    vol = volume_from_array(rng.normal(size=(6, 7, 5)).astype(np.float32), SOURCE_AFFINE)
    out = resample_to_grid(vol, vol.affine, vol.shape, order=order)
    assert out.array.dtype == np.float32
    np.testing.assert_allclose(out.array, vol.array, atol=1e-5)
    assert same_grid(out, vol)


def test_multichannel_and_cval():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(5, 5, 5, 2))
    vol = volume_from_array(data, np.eye(4))
    shifted = _affine(np.eye(3), (2.0, 0.0, 0.0))
    out = resample_to_grid(vol, shifted, (5, 5, 5), order=0, cval=-7.0)
    np.testing.assert_array_equal(out.array[:3], data[2:])
    np.testing.assert_array_equal(out.array[3:], -7.0)


def test_same_grid():
    a = volume_from_array(np.zeros((4, 4, 4)), SOURCE_AFFINE)
    b = volume_from_array(np.ones((4, 4, 4)), SOURCE_AFFINE + 1e-5 * (np.arange(16).reshape(4, 4) < 12))
    c = volume_from_array(np.zeros((4, 4, 5)), SOURCE_AFFINE)
    d = volume_from_array(np.zeros((4, 4, 4)), _affine(np.eye(3), (0.0, 0.0, 0.01)))
    assert same_grid(a, b)
    assert not same_grid(a, c)
    assert not same_grid(a, d)
    assert not same_grid(volume_from_array(np.zeros((4, 4, 4)), np.eye(4)), d)


def test_resample_to_pixdim_keeps_field_of_view():
    source = _ramp_volume(SOURCE_AFFINE, shape=(12, 10, 9))
    out = resample_to_pixdim(source, (1.0, 2.0, 1.5), order=1)
    assert out.spacing == pytest.approx((1.0, 2.0, 1.5))
    assert out.shape == (18, 5, 12)  # round(12*1.5/1), round(10*1/2), round(9*2/1.5)
    centre_in = source.affine @ np.append((np.asarray(source.shape) - 1) / 2, 1)
    centre_out = out.affine @ np.append((np.asarray(out.shape) - 1) / 2, 1)
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-9)
    expected, world = _ramp_at(out.affine, out.shape)
    inside = _inside(source, world)
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-9)
    assert resample_to_pixdim(source, (1.5, 1.0, 2.0)) is source
    with pytest.raises(ValueError, match="pixdim"):
        resample_to_pixdim(source, (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="order"):
        resample_to_pixdim(source, 1.0, order=7)


def test_resampled_volume_writes_back_in_file_orientation(tmp_path):
    lps = _affine(np.diag([-1.0, -1.0, 1.0]), (20.0, 30.0, -5.0))
    data = np.arange(6 * 6 * 4, dtype=np.float32).reshape(6, 6, 4)
    src = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(data, lps), src)
    vol = load_volume(src)
    coarse = resample_to_pixdim(vol, 2.0, order=1)
    out = save_volume(coarse.array, coarse, tmp_path / "coarse.nii.gz")
    written = nib.load(out)
    assert nib.aff2axcodes(written.affine) == ("L", "P", "S")
    reloaded = load_volume(out)
    np.testing.assert_allclose(reloaded.affine, coarse.affine, atol=1e-5)
    np.testing.assert_array_equal(reloaded.array, coarse.array)


def test_align_pair_without_pixdim_names_both_files(tmp_path):
    mr = _ramp_volume(SOURCE_AFFINE, path=tmp_path / "sub01_mr.nii.gz")
    ct = _ramp_volume(np.diag([1.0, 1.0, 1.0, 1.0]), shape=(8, 8, 8), path=tmp_path / "sub01_ct.nii.gz")
    with pytest.raises(UserError, match="set pixdim") as info:
        align_pair({"MR": mr, "CT": ct}, target="MR")
    message = str(info.value)
    assert "sub01_mr.nii.gz" in message and "sub01_ct.nii.gz" in message
    assert "(12, 10, 9)" in message and "(8, 8, 8)" in message
    assert "(1.5, 1, 2)" in message
    same = align_pair({"MR": mr, "CT": mr.with_array(mr.array * 2)}, target="MR")
    assert same["MR"] is mr
    with pytest.raises(ValueError, match="target"):
        align_pair({"MR": mr}, target="CT")


def test_align_pair_with_pixdim_and_orders():
    mr = _ramp_volume(SOURCE_AFFINE)
    labels = np.zeros((7, 7, 7))
    labels[2:5, 2:5, 2:5] = 4.0
    seg = volume_from_array(labels, _affine(np.eye(3), (-6.0, 4.0, 3.0)))
    out = align_pair({"MR": mr, "SEG": seg}, target="MR", pixdim=1.0, order_by_name={"SEG": 0, "MR": 1})
    assert list(out) == ["MR", "SEG"]
    assert same_grid(out["MR"], out["SEG"])
    assert out["MR"].spacing == pytest.approx((1.0, 1.0, 1.0))
    # Nearest neighbour keeps the label set; cubic would not.
    assert set(np.unique(out["SEG"].array)) <= {0.0, 4.0}
    assert (out["SEG"].array == 4.0).sum() > 0
    expected, world = _ramp_at(out["MR"].affine, out["MR"].shape)
    inside = _inside(mr, world)
    np.testing.assert_allclose(out["MR"].array[inside], expected[inside], atol=1e-9)


def test_tcga_contrasts_share_a_grid(tcga_dir):
    case = tcga_dir / "TCGA-FG-6692"
    t1 = load_volume(case / "TCGA-FG-6692_t1.nii.gz")
    t2 = load_volume(case / "TCGA-FG-6692_t2.nii.gz")
    out = align_pair({"T1": t1, "T2": t2}, target="T1")
    assert out["T1"] is t1 and out["T2"] is t2
