"""Window samplers: exact frequencies (chi-square), bounds (also as properties), grid coverage, padding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tfuq.data.windows import (
    as_padding,
    as_window,
    balanced_locations,
    crop_padded,
    grid_locations,
    pad_volume,
    sample_locations,
    uniform_locations,
    weighted_locations,
)

P_MIN = 1e-3  # chi-square tests with fixed seeds; a correct sampler passes with probability 0.999


def valid_centre_mask(shape, window, padding):
    """Brute-force oracle: centres c whose window [c - w//2, c - w//2 + w) fits in the padded volume."""
    mask = np.zeros(shape, dtype=bool)
    for c in itertools.product(*(range(n) for n in shape)):
        start = [ci - w // 2 for ci, w in zip(c, window)]
        mask[c] = all(-p <= s <= n + p - w for s, n, w, p in zip(start, shape, window, padding))
    return mask


def centre_counts(starts, shape, window):
    centres = starts + np.asarray(window) // 2
    counts = np.zeros(shape, dtype=np.int64)
    np.add.at(counts, tuple(centres.T), 1)
    return counts


def test_window_and_padding_helpers() -> None:
    assert as_window(8) == (8, 8, 8)
    assert as_window((128, 128)) == (128, 128, 1)
    assert as_padding(2) == (2, 2, 2)
    assert as_padding((1, 2, 3)) == (1, 2, 3)
    for bad in ((0, 4, 4), (4, 4, 4, 4), (4.5, 4, 4)):
        with pytest.raises(ValueError, match="Expected window"):
            as_window(bad)
    with pytest.raises(ValueError, match="Expected padding"):
        as_padding((1, 2))


def test_uniform_joint_frequencies_and_bounds() -> None:
    shape, window, padding = (5, 4, 3), (2, 2, 1), (1, 1, 1)
    starts = uniform_locations(shape, window, 30000, np.random.default_rng(1), padding=padding)
    assert starts.dtype == np.int64 and starts.shape == (30000, 3)
    lo, hi = np.array([-1, -1, -1]), np.array([4, 3, 3])  # n + p - w
    assert np.all(starts >= lo) and np.all(starts <= hi)
    cells = [range(a, b + 1) for a, b in zip(lo, hi)]
    counts = {cell: 0 for cell in itertools.product(*cells)}
    for s in map(tuple, starts):
        counts[s] += 1
    observed = np.array(list(counts.values()))
    assert len(observed) == 6 * 5 * 5 and observed.min() > 0
    assert stats.chisquare(observed).pvalue > P_MIN


def test_uniform_reproducible_and_2d_slices() -> None:
    a = uniform_locations((20, 30, 9), (8, 8, 1), 50, np.random.default_rng(7))
    b = uniform_locations((20, 30, 9), (8, 8, 1), 50, np.random.default_rng(7))
    c = uniform_locations((20, 30, 9), (8, 8, 1), 50, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(a[:, 2]) == set(range(9))  # every slice is a candidate 2D window
    assert uniform_locations((5, 5, 5), 3, 0, np.random.default_rng(0)).shape == (0, 3)
    with pytest.raises(ValueError, match="no larger than the padded volume"):
        uniform_locations((5, 5, 5), (8, 3, 3), 1, np.random.default_rng(0), padding=1)


@pytest.mark.parametrize("padding", [(0, 0, 0), (1, 2, 0)])
def test_weighted_centre_frequencies_match_the_map(padding) -> None:
    shape, window = (7, 6, 3), (3, 4, 1)
    rng = np.random.default_rng(3)
    weights = rng.random(shape) * (rng.random(shape) > 0.3)
    expected = weights * valid_centre_mask(shape, window, padding)
    starts = weighted_locations(weights, window, 40000, np.random.default_rng(11), padding=padding)
    counts = centre_counts(starts, shape, window)
    assert counts[expected == 0].sum() == 0  # zero weight or invalid centre: never drawn
    lo, hi = -np.asarray(padding), np.asarray(shape) + np.asarray(padding) - np.asarray(window)
    assert np.all(starts >= lo) and np.all(starts <= hi)
    keep = expected > 0
    probs = expected[keep] / expected[keep].sum()
    assert stats.chisquare(counts[keep], probs * len(starts)).pvalue > P_MIN


def test_weighted_body_mask_keeps_centres_in_the_body_and_errors() -> None:
    mask = np.zeros((12, 12, 6), np.uint8)
    mask[4:7, 5:9, 2:4] = 1
    starts = weighted_locations(mask, (4, 4, 2), 500, np.random.default_rng(0))
    centres = starts + np.array([2, 2, 1])  # window // 2
    assert np.all(mask[tuple(centres.T)] == 1)
    np.testing.assert_array_equal(starts, weighted_locations(mask, (4, 4, 2), 500, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="positive weight"):
        weighted_locations(np.zeros((6, 6, 6)), 2, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="weights >= 0"):
        weighted_locations(-np.ones((6, 6, 6)), 2, 1, np.random.default_rng(0))


def test_balanced_labels_equally_likely_and_uniform_within() -> None:
    shape, window, padding = (8, 6, 4), (3, 3, 1), (0, 1, 0)
    labels = np.zeros(shape, np.int16)
    labels[2:4, 2:3, 1] = 5  # 2 voxels
    labels[:, 4:, :] = 2  # many voxels
    valid = valid_centre_mask(shape, window, padding)
    starts = balanced_locations(labels, window, 30000, np.random.default_rng(5), padding=padding)
    counts = centre_counts(starts, shape, window)
    assert counts[~valid].sum() == 0
    present = np.unique(labels[valid])
    per_label = np.array([counts[(labels == v) & valid].sum() for v in present])
    assert stats.chisquare(per_label).pvalue > P_MIN  # each label 1/3 of the centres
    expected = np.zeros(shape)
    for v in present:
        sel = (labels == v) & valid
        expected[sel] = 1.0 / (len(present) * sel.sum())
    keep = expected > 0
    assert stats.chisquare(counts[keep], expected[keep] * len(starts)).pvalue > P_MIN


@pytest.mark.parametrize(
    ("length", "window", "overlap", "starts"),
    [
        (10, 4, 0.5, [0, 2, 4, 6]),
        (11, 4, 0.5, [0, 2, 4, 6, 7]),
        (4, 4, 0.5, [0]),
        (5, 4, 0.0, [0, 1]),
        (9, 3, 0.0, [0, 3, 6]),
        (10, 3, 0.0, [0, 3, 6, 7]),
        (10, 5, 0.3, [0, 3, 5]),  # stride floor(5 * 0.7) = 3
        (3, 1, 0.5, [0, 1, 2]),  # stride max(1, 0) = 1
    ],
)
def test_grid_starts_hand_computed(length, window, overlap, starts) -> None:
    got = grid_locations((length, 1, length), (window, 1, window), overlap)
    axis = sorted(set(got[:, 0].tolist()))
    assert axis == starts
    assert len(got) == len(starts) ** 2 and set(got[:, 1]) == {0}


def test_grid_covers_every_voxel_and_is_flush() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        shape = tuple(int(n) for n in rng.integers(1, 14, size=3))
        window = tuple(int(rng.integers(1, n + 1)) for n in shape)
        overlap = float(rng.choice([0.0, 0.25, 0.5, 0.75, 0.9]))
        starts = grid_locations(shape, window, overlap)
        cover = np.zeros(shape, np.int64)
        for s in starts:
            cover[tuple(slice(a, a + w) for a, w in zip(s, window))] += 1
        assert cover.min() >= 1
        assert np.all(starts >= 0) and np.all(starts + window <= shape)
        for axis in range(3):
            values = np.unique(starts[:, axis])
            assert values[0] == 0 and values[-1] == shape[axis] - window[axis]
            stride = max(1, int(np.floor(window[axis] * (1 - overlap) + 1e-9)))
            assert np.all(np.diff(values)[:-1] == stride)
            assert len(values) == int(np.ceil((shape[axis] - window[axis]) / stride)) + 1
            shared = window[axis] - np.diff(values)  # voxels shared by neighbours
            assert np.all(shared >= min(np.ceil(window[axis] * overlap - 1e-9), window[axis] - 1))
        assert len(np.unique(starts, axis=0)) == len(starts)
    with pytest.raises(ValueError, match="pad it first"):
        grid_locations((4, 4, 4), (5, 4, 4))
    with pytest.raises(ValueError, match="overlap"):
        grid_locations((4, 4, 4), 2, 1.0)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
@pytest.mark.parametrize("channels", [None, 2])
def test_crop_padded_equals_numpy_pad(mode, channels) -> None:
    shape = (4, 3, 5) if channels is None else (4, 3, 5, channels)
    array = np.random.default_rng(1).normal(size=shape)
    pad = (7, 2, 11)  # wider than the volume: repeated reflections
    widths = [(p, p) for p in pad] + ([(0, 0)] if channels else [])
    reference = np.pad(array, widths, mode=mode)
    np.testing.assert_array_equal(pad_volume(array, pad, mode), reference)
    rng = np.random.default_rng(2)
    for _ in range(20):
        size = tuple(int(v) for v in rng.integers(1, 9, size=3))
        start = tuple(int(rng.integers(-p, n + p - w + 1)) for n, w, p in zip(shape, size, pad))
        crop = crop_padded(array, start, size, mode=mode)
        ref = reference[tuple(slice(s + p, s + p + w) for s, p, w in zip(start, pad, size))]
        np.testing.assert_array_equal(crop, ref)


def test_minimum_mode_fills_with_the_volume_minimum_per_channel() -> None:
    array = np.random.default_rng(1).normal(size=(4, 4, 4, 2)).astype(np.float32)
    padded = pad_volume(array, 2, "minimum")
    assert padded.dtype == np.float32 and padded.shape == (8, 8, 8, 2)
    for c in range(2):
        expected = np.pad(array[..., c], 2, mode="constant", constant_values=array[..., c].min())
        np.testing.assert_array_equal(padded[..., c], expected)
    crop = crop_padded(array[..., 0], (-1, 0, 0), (2, 2, 2), mode="minimum", cval=-9.0)
    assert np.all(crop[0] == -9.0) and np.array_equal(crop[1], array[0, :2, :2, 0])


def test_sample_locations_dispatch_and_errors() -> None:
    mask = np.zeros((6, 6, 6, 1))
    mask[3, 3, 3] = 1
    for method in ("weighted", "balanced"):
        starts = sample_locations(method, (6, 6, 6), 2, 3, np.random.default_rng(0), sampling_map=mask)
        if method == "weighted":
            assert np.all(starts == 2)
    with pytest.raises(ValueError, match="needs a sampling_map"):
        sample_locations("weighted", (6, 6, 6), 2, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sampling_map of shape"):
        sample_locations("balanced", (6, 6, 6), 2, 1, np.random.default_rng(0), sampling_map=mask[:5])
    with pytest.raises(ValueError, match="Expected method"):
        sample_locations("grid", (6, 6, 6), 2, 1, np.random.default_rng(0))


@st.composite
def _sampling_case(draw):
    """A volume, a window that fits it once padded, the padding, and a map with some positive voxels."""
    shape = draw(st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 6)))
    padding = draw(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)))
    window = tuple(draw(st.integers(1, n + 2 * p)) for n, p in zip(shape, padding))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float64)
    return shape, window, padding, values, seed


@settings(max_examples=150, deadline=None)
@given(
    case=_sampling_case(), method=st.sampled_from(("uniform", "weighted", "balanced")), n=st.integers(0, 12)
)
def test_every_sampler_keeps_windows_inside_the_padded_volume(case, method, n) -> None:
    shape, window, padding, values, seed = case
    rng = np.random.default_rng(seed)
    valid = valid_centre_mask(shape, window, padding)
    try:
        starts = sample_locations(method, shape, window, n, rng, sampling_map=values, padding=padding)
    except ValueError as err:  # only when the map has no positive weight at a valid centre
        assert method == "weighted" and not np.any(values[valid] > 0), err
        return
    assert starts.shape == (n, 3) and starts.dtype == np.int64
    lo, hi = -np.asarray(padding), np.asarray(shape) + np.asarray(padding) - np.asarray(window)
    assert np.all(starts >= lo) and np.all(starts <= hi)
    if method == "uniform":  # any window of the padded volume, its centre possibly in the padding
        return
    centres = starts + np.asarray(window) // 2
    assert all(valid[tuple(c)] for c in centres)  # a centre in the volume (padding has no map value)
    if method == "weighted":
        assert all(values[tuple(c)] > 0 for c in centres)
    if method == "balanced" and n:
        assert set(values[tuple(centres.T)]) <= set(values[valid])


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 6)),
    data=st.data(),
    overlap=st.sampled_from((0.0, 0.25, 0.5, 0.75)),
)
def test_grid_locations_cover_every_voxel_inside_the_volume(shape, data, overlap) -> None:
    window = tuple(data.draw(st.integers(1, n)) for n in shape)
    starts = grid_locations(shape, window, overlap)
    covered = np.zeros(shape, dtype=int)
    for start in starts:
        assert all(0 <= s <= n - w for s, n, w in zip(start, shape, window))
        covered[tuple(slice(s, s + w) for s, w in zip(start, window))] += 1
    assert covered.min() >= 1
    assert len({tuple(s) for s in starts}) == len(starts)
