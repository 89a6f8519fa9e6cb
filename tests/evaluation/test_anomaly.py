"""Synthetic anomalies: cube placement (brute-force oracles), changed voxels, scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tfuq.errors import UserError
from tfuq.evaluation import anomaly as val


def _ball(shape, radius):
    index = np.indices(shape)
    centre = [(n - 1) / 2 for n in shape]
    return sum(((i - c) / radius) ** 2 for i, c in zip(index, centre)) <= 1.0


def test_random_cube_center_fits_inside_the_mask_brute_force():
    mask = _ball((14, 15, 13), 5.5)
    mask[7:, 7:, :] = False  # irregular
    side = 4
    fits = set()
    for start in itertools.product(*(range(n - side + 1) for n in mask.shape)):
        box = tuple(slice(s, s + side) for s in start)
        if mask[box].all():
            fits.add(tuple(s + side // 2 for s in start))
    centres = {val.random_cube_center(mask, side, seed=s) for s in range(40)}
    assert centres <= fits and len(centres) > 5
    assert val.random_cube_center(mask, side, seed=7) == val.random_cube_center(mask, side, seed=7)
    # A cube too large to fit: placed where it covers the most mask voxels.
    small = np.zeros((8, 8, 8), bool)
    small[2:5, 2:5, 2:5] = True
    center = val.random_cube_center(small, 5, seed=0)
    box = tuple(slice(c - 2, c + 3) for c in center)
    assert small[box].sum() == 27
    with pytest.raises(ValueError, match="side"):
        val.random_cube_center(small, 9, seed=0)
    with pytest.raises(UserError):
        val.random_cube_center(np.zeros((4, 4, 4), bool), 2, seed=0)


def test_insert_anomaly_zeroes_a_cube_inside_the_mask():
    mask = _ball((16, 16, 16), 7.0)
    image = np.random.default_rng(0).uniform(1.0, 2.0, size=(16, 16, 16, 2))
    anomalous, cube, center = val.insert_anomaly(image, mask, 4, seed=1)
    assert cube.sum() == 64 and np.all(mask[cube])
    assert np.all(anomalous[cube] == 0.0) and np.all(anomalous[~cube] == image[~cube])
    assert cube[center]
    with pytest.raises(ValueError, match="spatial shape"):
        val.insert_anomaly(image, mask[:-1], 4, seed=1)


def test_random_cube_center_with_changed_map_brute_force():
    mask = _ball((14, 15, 13), 6.5)
    changed = np.ones(mask.shape, bool)
    changed[:, :7, :] = False  # a "lung": zeroing changes nothing there
    side, need = 4, 0.75
    fits, enough = set(), set()
    for start in itertools.product(*(range(n - side + 1) for n in mask.shape)):
        box = tuple(slice(s, s + side) for s in start)
        if mask[box].all():
            centre = tuple(s + side // 2 for s in start)
            fits.add(centre)
            if changed[box].sum() >= need * side**3:
                enough.add(centre)
    assert enough < fits  # the rule excludes some places
    centres = {
        val.random_cube_center(mask, side, seed=s, changed=changed, min_changed=need) for s in range(40)
    }
    assert centres <= enough and len(centres) > 5
    # Nowhere has enough changed voxels: the places with the most.
    few = np.zeros(mask.shape, bool)
    few[7, 7, 6] = True
    centre = val.random_cube_center(mask, side, seed=0, changed=few, min_changed=need)
    box = tuple(slice(c - side // 2, c - side // 2 + side) for c in centre)
    assert few[box].sum() == 1 and mask[box].all()
    with pytest.raises(ValueError, match="min_changed"):
        val.random_cube_center(mask, side, seed=0, changed=changed, min_changed=1.5)
    with pytest.raises(ValueError, match="changed must"):
        val.random_cube_center(mask, side, seed=0, changed=changed[:-1])


def test_anomaly_changes_hand_computed():
    # Inside the mask channel 0 spans 0..100 (1st-99th percentile 1..99 -> span 98).
    image = np.zeros((10, 10, 1, 2))
    image[..., 0] = np.arange(100).reshape(10, 10, 1)
    mask = np.ones((10, 10, 1), bool)
    got = val.anomaly_changes(image, mask, tolerance=0.1)
    np.testing.assert_array_equal(got, image[..., 0] > 9.8)
    # Channel 1 is 0 but for two voxels of -50 (its 1st percentile is -50, so its span is 50):
    # |x| = 50 > 0.1 * 50 marks them although channel 0 is below its own tolerance there.
    image[0, 0, 0, 1] = image[0, 1, 0, 1] = -50.0
    got = val.anomaly_changes(image, mask, tolerance=0.1)
    expected = image[..., 0] > 9.8
    expected[0, 0, 0] = expected[0, 1, 0] = True
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="tolerance"):
        val.anomaly_changes(image, mask, tolerance=-1.0)


def test_insert_anomaly_never_lands_where_the_input_is_already_zero():
    mask = _ball((20, 20, 20), 9.0)
    image = np.where(mask, 100.0, 0.0)
    image[:, :10, :] = 0.0  # half of the body is "air inside the body"
    for seed in range(10):
        _, cube, _ = val.insert_anomaly(image, mask, 4, seed=seed)
        assert np.mean(image[cube] != 0.0) >= 0.5
    # min_changed = 0 is Reinhold's rule: anywhere inside the mask.
    lands = [np.mean(image[val.insert_anomaly(image, mask, 4, seed=s)[1]] != 0.0) for s in range(30)]
    reinhold = [
        np.mean(image[val.insert_anomaly(image, mask, 4, seed=s, min_changed=0.0)[1]] != 0.0)
        for s in range(30)
    ]
    assert min(lands) >= 0.5 and min(reinhold) < 0.5


def test_anomaly_scores_ratio_and_auroc():
    cube = np.zeros((10, 10, 10), bool)
    cube[3:6, 3:6, 3:6] = True
    std = np.where(cube, 3.0, 1.0)
    scores = val.anomaly_scores(std, cube)
    assert scores == {"inside": 3.0, "outside": 1.0, "ratio": 3.0, "auroc": 1.0}
    region = np.zeros_like(cube)
    region[2:8, 2:8, 2:8] = True
    noisy = std + np.random.default_rng(0).normal(scale=1.0, size=std.shape)
    scores = val.anomaly_scores(noisy, cube, region)
    outside = region & ~cube
    assert scores["outside"] == pytest.approx(noisy[outside].mean())
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in noisy[cube] for b in noisy[outside]])
    assert scores["auroc"] == pytest.approx(brute)
    with pytest.raises(ValueError, match="outside"):
        val.anomaly_scores(std, cube, cube)
