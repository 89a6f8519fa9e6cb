"""Multi-resolution windows: closed forms on a coordinate ramp, co-centring, nesting, padding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tfuq.data.windows import (
    average_pool,
    check_multires,
    multires_from_context,
    multires_windows,
    pad_volume,
)

COEF = np.array([1.0, 100.0, 10000.0])  # ramp V(x) = 1 x + 100 y + 10000 z + 7: all coordinates recoverable


def ramp(shape):
    grid = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return sum(c * g for c, g in zip(COEF, grid)) + 7.0


def ramp_at(points):
    return np.tensordot(points, COEF, axes=([-1], [0])) + 7.0


def pooled_reference(padded, origin, window, factor):
    """Level from explicit sums over the f^3 offsets of each block (independent of reshape)."""
    out = np.zeros(window)
    for k in itertools.product(range(factor), repeat=3):
        out += padded[
            tuple(slice(o + kk, o + kk + factor * w, factor) for o, kk, w in zip(origin, k, window))
        ]
    return out / factor**3


@pytest.mark.parametrize(("window", "start"), [((8, 8, 8), (14, 12, 13)), ((4, 6, 8), (9, 11, 12))])
def test_ramp_levels_match_the_closed_form(window, start) -> None:
    volume = ramp((40, 36, 38))
    levels = multires_windows(volume, start, window)
    assert [lv.shape for lv in levels] == [window] * 3
    np.testing.assert_array_equal(levels[0], volume[tuple(slice(s, s + w) for s, w in zip(start, window))])
    index = np.stack(np.meshgrid(*(np.arange(w) for w in window), indexing="ij"), axis=-1)
    centre = np.asarray(start) + (np.asarray(window) - 1) / 2
    for f, level in zip((1, 2, 4), levels):
        # voxel i of level f averages fine voxels start - (f-1)w/2 + f*i + [0, f): the ramp at their centre
        coords = np.asarray(start) - (f - 1) * np.asarray(window) // 2 + f * index + (f - 1) / 2
        np.testing.assert_allclose(level, ramp_at(coords), rtol=0, atol=1e-9)
        # co-centred: every level's mean is the ramp at the target window's centre
        np.testing.assert_allclose(level.mean(), ramp_at(centre), rtol=1e-12)


def test_levels_nest_like_the_network_cascade() -> None:
    volume = np.random.default_rng(0).normal(size=(40, 40, 40))
    w = 8
    low = multires_windows(volume, (16, 15, 17), w)
    for fine, coarse in itertools.pairwise(low):
        # the central w/2 of the coarser level is the finer level pooled by 2, voxel for voxel
        np.testing.assert_allclose(coarse[2:6, 2:6, 2:6], average_pool(fine, 2), atol=1e-12)


@pytest.mark.parametrize("mode", ["edge", "reflect", "symmetric", "constant", "minimum"])
def test_padding_where_the_context_leaves_the_volume(mode) -> None:
    volume = np.random.default_rng(1).normal(size=(10, 12, 9, 2)).astype(np.float32)
    window, start = (4, 4, 4), (-2, 7, 3)  # the 4x field of view spans -8 .. 10 on axis 0
    pad = 16
    padded = pad_volume(volume, pad, mode).astype(np.float64)
    levels = multires_windows(volume, start, window, mode=mode)
    for f, level in zip((1, 2, 4), levels):
        origin = [s + pad - (f - 1) * w // 2 for s, w in zip(start, window)]
        for c in range(2):
            expected = pooled_reference(padded[..., c], origin, window, f)
            np.testing.assert_allclose(level[..., c], expected, rtol=1e-6, atol=1e-6)
        assert level.dtype == np.float32


def test_geometry_checks_and_context() -> None:
    assert check_multires(80) == ((80, 80, 80), (1, 2, 4), (320, 320, 320))
    assert check_multires(16, context=64)[2] == (64, 64, 64)
    check_multires(80, context=336)  # larger context: 336/2 - 80 and 336/4 - 80 even
    for kwargs in ({"window": 15}, {"window": 80, "context": 300}, {"window": 80, "context": 324}):
        with pytest.raises(ValueError, match="Expected"):
            check_multires(**kwargs)
    with pytest.raises(ValueError, match="increasing factors"):
        check_multires(8, factors=(2, 4))
    volume = ramp((30, 30, 30))
    a = multires_windows(volume, (10, 10, 10), 8, context=48)
    b = multires_windows(volume, (10, 10, 10), 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="crop of spatial shape"):
        multires_from_context(np.zeros((16, 16, 16)), 8)
    with pytest.raises(ValueError, match="divisible"):
        average_pool(np.zeros((6, 6, 5)), 2)
