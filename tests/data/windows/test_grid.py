"""Window grids against hand-computed grids: origins, coverage, padding to the grid, refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfuq.data.windows import axis_starts, check_window, pad_volume, window_grid

OVERLAPS = (0.0, 0.25, 0.5, 0.75)


@pytest.mark.parametrize(
    ("size", "window", "overlap", "expected"),
    [
        (10, 4, 0.5, (0, 2, 4, 6)),
        (11, 4, 0.5, (0, 2, 4, 6, 7)),  # last window moved back to end flush
        (8, 4, 0.0, (0, 4)),
        (9, 4, 0.0, (0, 4, 5)),
        (4, 4, 0.75, (0,)),
        (7, 3, 0.75, (0, 1, 2, 3, 4)),  # stride floor(0.75) -> 1
        (10, 4, 0.25, (0, 3, 6)),
        (5, 1, 0.5, (0, 1, 2, 3, 4)),
    ],
)
def test_axis_starts_hand_computed(size, window, overlap, expected):
    assert axis_starts(size, window, overlap) == expected


@settings(max_examples=200, deadline=None)
@given(
    window=st.integers(1, 12),
    extra=st.integers(0, 40),
    overlap=st.sampled_from(OVERLAPS),
)
def test_axis_starts_cover_every_voxel_and_end_flush(window, extra, overlap):
    size = window + extra
    starts = axis_starts(size, window, overlap)
    covered = np.zeros(size, dtype=int)
    for s in starts:
        covered[s : s + window] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] == size - window
    assert list(starts) == sorted(set(starts))
    stride = max(1, int(np.floor(window * (1 - overlap) + 1e-9)))
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 20), st.integers(1, 20), st.integers(1, 9)),
    window=st.tuples(st.integers(1, 10), st.integers(1, 10), st.integers(1, 4)),
    overlap=st.sampled_from(OVERLAPS),
)
def test_grid_windows_cover_the_padded_volume(shape, window, overlap):
    grid = window_grid(shape, window, overlap)
    covered = np.zeros(grid.padded_shape, dtype=int)
    for origin in grid.origins:
        covered[grid.slices(origin)] += 1
        assert all(o + w <= n for o, w, n in zip(origin, window, grid.padded_shape))
    assert covered.min() >= 1
    assert grid.num_windows == len(grid.origins)
    for n, w, (lo, hi), p in zip(shape, window, grid.padding, grid.padded_shape):
        assert p == max(n, w)
        assert lo + hi == max(0, w - n) and abs(lo - hi) <= 1


def test_pad_then_crop_round_trip_and_fill_values():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(3, 7, 2, 2)).astype(np.float32)
    grid = window_grid(vol.shape[:3], (6, 4, 5))
    padded = pad_volume(vol, grid.padding)
    assert padded.shape == (6, 7, 5, 2)
    np.testing.assert_array_equal(grid.crop(padded), vol)
    outside = np.ones(grid.padded_shape, bool)
    outside[grid.interior] = False
    np.testing.assert_array_equal(
        padded[outside], np.broadcast_to(vol.min(axis=(0, 1, 2)), (outside.sum(), 2))
    )
    padded = pad_volume(vol, grid.padding, "constant", pad_value=(5.0, -1.0))
    np.testing.assert_array_equal(padded[outside], np.broadcast_to([5.0, -1.0], (outside.sum(), 2)))
    padded = pad_volume(vol, grid.padding, "edge")
    np.testing.assert_array_equal(padded, np.pad(vol, (*grid.padding, (0, 0)), mode="edge"))
    assert pad_volume(vol, window_grid(vol.shape[:3], 2).padding, pad_value=3.0) is vol  # nothing to pad


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_window((4, 4)), "3 positive ints"),
        (lambda: check_window((4, 0, 4)), "positive"),
        (lambda: check_window(2.5), "positive"),
        (lambda: axis_starts(3, 4, 0.5), "pad the volume"),
        (lambda: axis_starts(8, 4, 1.0), "overlap"),
        (lambda: axis_starts(8, 4, -0.1), "overlap"),
        (lambda: window_grid((0, 4, 4), 2), "shape"),
        (lambda: pad_volume(np.zeros((2, 2, 2, 1)), window_grid((2, 2, 2), 4).padding, "wrap"), "mode"),
        (lambda: pad_volume(np.zeros((2, 2, 2, 2)), 1, pad_value=(1, 2, 3)), "pad_value"),
    ],
)
def test_invalid_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
