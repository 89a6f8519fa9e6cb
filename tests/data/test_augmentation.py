"""Augmentation: identity when off, exact 90-degree rotations and ramps, paired sections, bias field."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial import polynomial
from scipy import ndimage, stats

from tfuq.data.augmentation import (
    Augmentation,
    AugmentationSettings,
    augment_crop,
    augment_intensity,
    bias_field,
    draw_augmentation,
    polynomial_terms,
    rotation_matrix,
)
from tfuq.data.windows import crop_padded

COEF = np.array([1.0, 2.0, -0.5])


def smooth_volume(shape=(24, 22, 20), seed=0):
    noise = np.random.default_rng(seed).normal(size=shape)
    return ndimage.gaussian_filter(noise, 2.0).astype(np.float32) * 10


def ramp(shape):
    grid = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return sum(c * g for c, g in zip(COEF, grid))


def test_identity_when_no_key_is_set() -> None:
    settings = AugmentationSettings()
    assert not settings.enabled
    aug = draw_augmentation(settings, np.random.default_rng(0), (8, 8, 8), 2)
    assert not aug.resamples and aug.flips == () and aug.bias.size == 0 and aug.shift.size == 0
    volume = smooth_volume()
    for start in [(2, 3, 4), (-3, 18, 15)]:
        np.testing.assert_array_equal(
            augment_crop(volume, start, 8, aug, mode="edge"), crop_padded(volume, start, 8, mode="edge")
        )
    window = volume[:8, :8, :8, None]
    assert augment_intensity(window, aug) is window


def test_settings_from_config_keys_and_validation() -> None:
    from tfuq.config import TrainingSection

    training = TrainingSection(rotation_angle=(-10.0, 10.0), random_flipping_axes=(0, 2), bias_field_range=())
    settings = AugmentationSettings.from_config(training)
    assert settings.rotation_angle == (-10.0, 10.0) and settings.flip_axes == (0, 2) and settings.enabled
    assert not AugmentationSettings.from_config(TrainingSection()).enabled
    for kwargs in (
        {"rotation_angle": (5.0,)},
        {"rotation_angle": (10.0, -10.0)},
        {"scaling_percentage": (-100.0, 10.0)},
        {"flip_axes": (3,)},
        {"bf_order": 0},
        {"intensity_shift": -1.0},
    ):
        with pytest.raises(ValueError, match="Expected"):
            AugmentationSettings(**kwargs)


def test_flips_are_exact_and_fair() -> None:
    settings = AugmentationSettings(flip_axes=(0, 2))
    volume = smooth_volume()
    draws = [draw_augmentation(settings, np.random.default_rng(s), (6, 6, 6)) for s in range(400)]
    for axis, expected_never in ((0, False), (1, True), (2, False)):
        flipped = sum(axis in d.flips for d in draws)
        if expected_never:
            assert flipped == 0
        else:
            assert stats.binomtest(flipped, len(draws), 0.5).pvalue > 1e-3
    aug = Augmentation(flips=(0, 2))
    np.testing.assert_array_equal(
        augment_crop(volume, (1, 2, 3), 6, aug), np.flip(volume[1:7, 2:8, 3:9], axis=(0, 2))
    )


@pytest.mark.parametrize(("axis", "plane"), [(2, (0, 1)), (0, (1, 2)), (1, (2, 0))])
def test_rotation_by_90_degrees_is_rot90(axis, plane) -> None:
    volume = smooth_volume()
    angles = [0.0, 0.0, 0.0]
    angles[axis] = 90.0
    aug = Augmentation(matrix=rotation_matrix(angles).T)
    start = (5, 6, 4)
    crop = volume[5:13, 6:14, 4:12]
    out = augment_crop(volume, start, 8, aug, order=3)
    np.testing.assert_allclose(out, np.rot90(crop, 1, axes=plane), atol=1e-5)


def test_2d_windows_rotate_in_plane_with_uniform_angles() -> None:
    settings = AugmentationSettings(rotation_angle=(-20.0, 30.0), scaling_percentage=(-10.0, 10.0))
    angles = []
    for seed in range(300):
        aug = draw_augmentation(settings, np.random.default_rng(seed), (16, 16, 1))
        np.testing.assert_array_equal(aug.matrix[2], [0, 0, 1])  # slice axis untouched, never scaled
        np.testing.assert_array_equal(aug.matrix[:, 2], [0, 0, 1])
        # M = S^-1 R^T: row 0 is (cos, sin, 0) / s_0, so its direction gives the angle
        angles.append(math.degrees(math.atan2(aug.matrix[0, 1], aug.matrix[0, 0])))
    angles = np.array(angles)
    assert angles.min() >= -20 and angles.max() <= 30
    assert stats.kstest(angles, stats.uniform(-20, 50).cdf).pvalue > 1e-3


def test_rotated_scaled_ramp_matches_the_closed_form() -> None:
    volume = ramp((40, 40, 40))
    settings = AugmentationSettings(rotation_angle=(-15.0, 15.0), scaling_percentage=(-10.0, 20.0))
    size, start = np.array((10, 12, 8)), np.array((14, 13, 15))
    centre = start + (size - 1) / 2
    index = np.stack(np.meshgrid(*(np.arange(n) for n in size), indexing="ij"), axis=-1)
    for seed in range(3):
        aug = draw_augmentation(settings, np.random.default_rng(seed), size)
        assert aug.resamples
        expected = (centre + (index + start - centre) @ aug.matrix.T) @ COEF
        for order, atol in ((1, 1e-9), (3, 1e-6)):
            np.testing.assert_allclose(
                augment_crop(volume, start, size, aug, order=order), expected, atol=atol
            )
    aug = Augmentation(matrix=np.diag([1 / 1.25, 1.0, 1.0]))  # scaling 25 %: content enlarged
    out = augment_crop(volume, start, size, aug, order=1)
    np.testing.assert_allclose(np.diff(out, axis=0), COEF[0] / 1.25)


@pytest.mark.parametrize("mode", ["minimum", "edge", "reflect"])
def test_paired_sections_transform_identically(mode) -> None:
    x = smooth_volume()
    target = 2 * x + 1
    threshold = float(np.percentile(x, 60))
    mask = (x > threshold).astype(np.uint8)
    settings = AugmentationSettings(
        rotation_angle=(-25.0, 25.0), scaling_percentage=(-15.0, 15.0), flip_axes=(0, 1, 2)
    )
    for seed in range(4):
        aug = draw_augmentation(settings, np.random.default_rng(seed), (12, 12, 12))
        start = (-4, 14, 3)  # partly outside the volume: padding is paired too
        xa = augment_crop(x, start, 12, aug, order=3, mode=mode)
        ta = augment_crop(target, start, 12, aug, order=3, mode=mode)
        np.testing.assert_allclose(ta, 2 * xa + 1, atol=1e-4)
        ma = augment_crop(mask, start, 12, aug, order=0, mode="constant")
        assert ma.dtype == np.uint8 and set(np.unique(ma)) <= {0, 1}
        nearest = augment_crop(x, start, 12, aug, order=0, mode="constant", cval=-np.inf)
        np.testing.assert_array_equal(ma, (nearest > threshold).astype(np.uint8))


def test_draws_are_reproducible() -> None:
    settings = AugmentationSettings(
        rotation_angle=(-10.0, 10.0), flip_axes=(0,), bias_field_range=(-0.3, 0.3), intensity_shift=0.1
    )
    a = draw_augmentation(settings, np.random.default_rng(3), (8, 8, 8), 2)
    b = draw_augmentation(settings, np.random.default_rng(3), (8, 8, 8), 2)
    c = draw_augmentation(settings, np.random.default_rng(4), (8, 8, 8), 2)
    for name in ("matrix", "bias", "shift"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.matrix, c.matrix)
    assert a.bias.shape == (20,) and a.shift.shape == (2,)  # C(3 + 3, 3) = 20 terms of order <= 3
    assert np.all(np.abs(a.bias) <= 0.3) and np.all(np.abs(a.shift) <= 0.1)


def test_bias_field_matches_polyval3d_and_intensity_only_touches_inputs() -> None:
    order, shape = 2, (5, 4, 3)
    coefficients = np.random.default_rng(0).uniform(-0.5, 0.5, size=len(polynomial_terms(order)))
    table = np.zeros((order + 1,) * 3)
    for c, term in zip(coefficients, polynomial_terms(order)):
        table[term] = c
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    expected = np.exp(polynomial.polyval3d(x, y, z, table))
    np.testing.assert_allclose(bias_field(shape, coefficients, order), expected, rtol=1e-6)
    flat = bias_field((4, 4, 1), coefficients, order)
    assert flat.shape == (4, 4, 1)
    inputs = np.ones((5, 4, 3, 2), np.float32)
    aug = Augmentation(bias=coefficients, bf_order=order, shift=np.array([0.5, -1.0]))
    out = augment_intensity(inputs, aug)
    np.testing.assert_allclose(out[..., 0], expected + 0.5, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], expected - 1.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(inputs, 1.0)  # not modified in place
    with pytest.raises(ValueError, match="input channels"):
        augment_intensity(np.ones((5, 4, 3, 3), np.float32), aug)
