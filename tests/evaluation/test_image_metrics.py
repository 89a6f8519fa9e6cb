from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tfuq.errors import UserError
from tfuq.evaluation import image_metrics as im


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    target = rng.normal(100.0, 30.0, size=(6, 7, 8))
    prediction = target + rng.normal(0.0, 5.0, size=target.shape)
    mask = rng.random(target.shape) > 0.3
    return target, prediction, mask


def test_mae_mse_rmse_match_numpy_inside_mask(pair):
    target, prediction, mask = pair
    error = (target - prediction)[mask]
    assert im.mae(target, prediction, mask) == pytest.approx(np.mean(np.abs(error)), rel=1e-12)
    assert im.mse(target, prediction, mask) == pytest.approx(np.mean(error**2), rel=1e-12)
    assert im.rmse(target, prediction, mask) == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-12)
    # Without a mask: every voxel.
    assert im.mae(target, prediction) == pytest.approx(np.mean(np.abs(target - prediction)), rel=1e-12)


def test_psnr_of_a_known_mse_and_default_range():
    target = np.array([0.0, 10.0, 5.0, 5.0])
    prediction = target + np.array([1.0, -1.0, 1.0, -1.0])  # MSE = 1
    assert im.psnr(target, prediction) == pytest.approx(20.0, abs=1e-12)  # 10 log10(10^2 / 1)
    assert im.psnr(target, prediction, data_range=4095.0) == pytest.approx(
        10 * math.log10(4095.0**2), abs=1e-12
    )
    assert im.psnr(target, target) == math.inf
    # Default range is taken inside the mask: here [5, 10] -> R = 5, MSE = 1.
    mask = np.array([False, True, True, True])
    assert im.psnr(target, prediction, mask) == pytest.approx(10 * math.log10(25.0), abs=1e-12)


def test_psnr_refuses_a_constant_target_without_range():
    with pytest.raises(ValueError, match="data_range"):
        im.psnr(np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match="data_range"):
        im.psnr(np.arange(4.0), np.zeros(4), data_range=-1.0)


def test_ssim_is_one_for_identical_images_and_lower_for_noise(pair):
    target, _, _ = pair
    volume = np.random.default_rng(1).normal(size=(12, 13, 14))
    assert im.ssim(volume, volume) == pytest.approx(1.0, abs=1e-12)
    noisy = volume + np.random.default_rng(2).normal(size=volume.shape)
    assert 0.0 < im.ssim(volume, noisy) < 0.9
    mask = np.zeros(target.shape, bool)
    mask[2:4, 2:5, 3:6] = True
    assert im.ssim(target, target, mask) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_a_constant_shift_by_hand():
    # Constant images a and b: every local variance and covariance is 0, so
    # SSIM = (2ab + C1)(C2) / ((a^2 + b^2 + C1) C2) at every voxel.
    a, b, data_range = 3.0, 5.0, 10.0
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = im.ssim(np.full((11, 11, 11), a), np.full((11, 11, 11), b), data_range=data_range)
    assert value == pytest.approx(expected, rel=1e-12)


def test_ssim_map_matches_independent_filter_computation():
    # An oracle built voxel-wise from explicit Gaussian weights at one interior voxel.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(11, 11, 11))
    y = 0.5 * x + rng.normal(scale=0.5, size=x.shape)
    r = 5
    grid = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (grid / 1.5) ** 2)
    g /= g.sum()
    w = g[:, None, None] * g[None, :, None] * g[None, None, :]
    mx, my = np.sum(w * x), np.sum(w * y)
    vx = np.sum(w * x * x) - mx**2
    vy = np.sum(w * y * y) - my**2
    cxy = np.sum(w * x * y) - mx * my
    R = 4.0
    c1, c2 = (0.01 * R) ** 2, (0.03 * R) ** 2
    oracle = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    local = im.ssim_map(x, y, data_range=R)
    assert local[5, 5, 5] == pytest.approx(oracle, rel=1e-10)
    # The unmasked mean keeps only the central voxel of an 11^3 volume.
    assert im.ssim(x, y, data_range=R) == pytest.approx(oracle, rel=1e-10)
    # With reflected borders, the map at a border voxel uses scipy's reflect mode.
    padded = np.pad(x, r, mode="symmetric")
    assert ndimage.gaussian_filter(x, 1.5, truncate=3.5, mode="reflect")[0, 0, 0] == pytest.approx(
        np.sum(w * padded[: 2 * r + 1, : 2 * r + 1, : 2 * r + 1]), rel=1e-12
    )


def test_ssim_2d_and_small_volume_rules():
    image = np.random.default_rng(4).normal(size=(12, 12))
    assert im.ssim(image, image) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="window"):
        im.ssim(np.zeros((5, 12, 12)) + np.arange(12), np.zeros((5, 12, 12)))
    small = np.random.default_rng(5).normal(size=(5, 5, 5))
    assert im.ssim(small, small, np.ones(small.shape, bool)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2D or 3D"):
        im.ssim_map(np.zeros(4) + np.arange(4), np.zeros(4), data_range=1.0)


def test_nrmse_volume_and_slice_by_hand():
    target = np.zeros((2, 2, 3))
    target[..., 0] = 3.0
    target[..., 1] = 4.0
    target[..., 2] = 2.0
    prediction = target.copy()
    prediction[0, 0, 0] = 5.0  # error 2 in slice 0
    prediction[1, 1, 1] = 1.0  # error 3 in slice 1
    # Volume: sqrt((4 + 9) / (4*9 + 4*16 + 4*4)).
    assert im.nrmse(target, prediction) == pytest.approx(math.sqrt(13 / 116), rel=1e-12)
    per_slice = im.nrmse(target, prediction, axis=2)
    np.testing.assert_allclose(per_slice, [math.sqrt(4 / 36), math.sqrt(9 / 64), 0.0], rtol=1e-12)
    # A mask that leaves slice 2 empty gives NaN there.
    mask = np.ones(target.shape, bool)
    mask[..., 2] = False
    mask[0, 0, 0] = False
    per_slice = im.nrmse(target, prediction, mask, axis=-1)
    np.testing.assert_allclose(per_slice[:2], [0.0, math.sqrt(9 / 64)], atol=1e-15)
    assert np.isnan(per_slice[2])


def test_nstd_is_rms_std_per_region_by_hand():
    std = np.zeros((2, 2, 2))
    std[0] = [[3.0, 4.0], [0.0, 0.0]]
    std[1] = 1.0
    assert im.nstd(std) == pytest.approx(math.sqrt((9 + 16 + 4) / 8), rel=1e-12)
    np.testing.assert_allclose(im.nstd(std, axis=0), [2.5, 1.0], rtol=1e-12)
    mask = np.zeros(std.shape, bool)
    mask[0, 0] = True
    assert im.nstd(std, mask) == pytest.approx(math.sqrt(12.5), rel=1e-12)
    per_slice = im.nstd(std, mask, axis=0)
    assert per_slice[0] == pytest.approx(math.sqrt(12.5)) and np.isnan(per_slice[1])
    with pytest.raises(ValueError, match=">= 0"):
        im.nstd(-std - 1)


def test_input_errors():
    with pytest.raises(ValueError, match="one shape"):
        im.mae(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        im.mse(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(UserError, match="no voxel"):
        im.mae(np.zeros(3), np.zeros(3), np.zeros(3, bool))
    with pytest.raises(ValueError, match="mask of shape"):
        im.mae(np.zeros(3), np.zeros(3), np.ones(4, bool))
    with pytest.raises(ValueError, match="axis"):
        im.nstd(np.ones((2, 2)), axis=2)


def test_ssim_matches_values_recorded_from_scikit_image():
    # Recorded once in a throwaway venv with scikit-image 0.26.0:
    # structural_similarity(x, y, data_range=r, gaussian_weights=True, sigma=1.5,
    #                       use_sample_covariance=False) -> 0.9651876093587892 (3D),
    # and on x[3], y[3] -> 0.818321168657779 (2D). Not a dependency of tfuq.
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(100, 30, size=(20, 24, 22)), axis=0) / 5
    y = x + rng.normal(0, 10, size=x.shape)
    r = float(x.max() - x.min())
    assert im.ssim(x, y, data_range=r) == pytest.approx(0.9651876093587892, rel=1e-10)
    assert im.ssim(x[3], y[3], data_range=r) == pytest.approx(0.818321168657779, rel=1e-10)


def test_ssim_floor_measures_both_images_from_it_and_makes_ssim_shift_invariant():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(9, 20, 20))
    prediction = 0.8 * target + 0.3 * rng.normal(size=target.shape)
    mask = np.ones(target.shape, bool)
    mask[:, :3] = False
    floor = float(target[mask].min())
    # oracle: the same SSIM of the images shifted by hand
    assert im.ssim(target, prediction, mask, floor=floor) == pytest.approx(
        im.ssim(target - floor, prediction - floor, mask), rel=1e-12
    )
    # z-scored and shifted truth: same value once both are measured from the truth's minimum
    for offset in (-1000.0, 7.5, 1000.0):
        shifted = im.ssim(target + offset, prediction + offset, mask, floor=floor + offset)
        assert shifted == pytest.approx(im.ssim(target, prediction, mask, floor=floor), rel=1e-9)
    # without a floor the zero-mean images are scored lower than the same images on [0, R]
    assert im.ssim(target, prediction, mask) < im.ssim(target, prediction, mask, floor=floor)
    with pytest.raises(ValueError, match="floor"):
        im.ssim(target, prediction, mask, floor=float("nan"))


def test_ssim_from_the_truth_minimum_is_the_same_in_scanner_and_z_scored_units(brats_dir) -> None:
    """A crop of a real T2 and a blurred, shifted copy: the per-subject z-score is an affine map, so
    SSIM measured from the truth's minimum (data range its span) is the same in either unit system;
    measured from 0 it is not (the z-scored brain has mean 0 and no intensity origin)."""
    import nibabel as nib
    from scipy import ndimage

    subject = "Brats18_CBICA_APR_1"
    t2 = np.asarray(nib.load(brats_dir / subject / f"{subject}_t2.nii.gz").dataobj, dtype=np.float64)
    t1 = np.asarray(nib.load(brats_dir / subject / f"{subject}_t1.nii.gz").dataobj, dtype=np.float64)
    crop = (slice(70, 170), slice(60, 180), slice(70, 80))
    truth, brain = t2[crop], t1[crop] > 0
    prediction = ndimage.gaussian_filter(truth, 1.5) + 0.1 * truth[brain].std()
    offset, scale = truth[brain].mean(), truth[brain].std()
    z_truth, z_prediction = (truth - offset) / scale, (prediction - offset) / scale
    native = im.ssim(truth, prediction, brain, floor=truth[brain].min())
    normalised = im.ssim(z_truth, z_prediction, brain, floor=z_truth[brain].min())
    assert normalised == pytest.approx(native, rel=1e-9)
    assert 0.3 < native < 1.0
    assert abs(im.ssim(z_truth, z_prediction, brain) - native) > 0.05  # the zero-origin value is not
