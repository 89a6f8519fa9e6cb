"""tfuq.data.windows.padding: one padding rule for training windows and inference grids, against numpy.pad."""

from __future__ import annotations

import numpy as np
import pytest

from tfuq.data.windows import PADDING_MODES, crop_padded, pad_volume, padding_widths, window_grid


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_asymmetric_widths_equal_numpy_pad(mode: str) -> None:
    array = np.random.default_rng(0).normal(size=(4, 3, 5, 2))
    widths = ((0, 3), (7, 1), (2, 11))  # wider than the volume: repeated reflections
    expected = np.pad(array, (*widths, (0, 0)), mode=mode)
    np.testing.assert_array_equal(pad_volume(array, widths, mode), expected)


def test_fill_values_per_channel_and_minimum() -> None:
    array = np.random.default_rng(1).normal(size=(3, 4, 2, 2)).astype(np.float32)
    widths = ((1, 2), (0, 0), (3, 0))
    out = pad_volume(array, widths, "constant", pad_value=[5.0, -1.0])
    for c, value in enumerate((5.0, -1.0)):
        expected = np.pad(array[..., c], widths, constant_values=value)
        np.testing.assert_array_equal(out[..., c], expected)
    out = pad_volume(array, widths, "minimum")
    for c in range(2):
        expected = np.pad(array[..., c], widths, constant_values=array[..., c].min())
        np.testing.assert_array_equal(out[..., c], expected)
    assert out.dtype == np.float32


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_training_and_inference_padding_are_the_same_rule(mode: str) -> None:
    array = np.random.default_rng(2).normal(size=(5, 2, 3, 1)).astype(np.float32)
    grid = window_grid(array.shape[:3], (8, 4, 3), border=1)
    padded = pad_volume(array, grid.padding, mode)
    assert padded.shape == (*grid.padded_shape, 1)
    np.testing.assert_array_equal(grid.crop(padded), array)
    start = [-lo for lo, _ in grid.padding]
    np.testing.assert_array_equal(padded, crop_padded(array, start, grid.padded_shape, mode=mode))
    symmetric = ((2, 2),) * 3
    np.testing.assert_array_equal(pad_volume(array, 2, mode), pad_volume(array, symmetric, mode))


def test_pad_value_per_channel_checked_and_no_copy_without_padding() -> None:
    array = np.zeros((2, 2, 2, 2), np.float32)
    for mode in ("constant", "minimum"):
        with pytest.raises(ValueError, match="pad_value as one number or 2"):
            pad_volume(array, 1, mode, pad_value=(1, 2, 3))
        np.testing.assert_array_equal(pad_volume(array, 1, mode, pad_value=4.0)[0], 4.0)
    pad_volume(array, 1, "edge", pad_value=(1, 2, 3))  # ignored by the other modes
    assert pad_volume(array, 0, pad_value=(1, 2, 3)) is array
    with pytest.raises(ValueError, match="Expected mode in"):
        pad_volume(array, 0, "wrap")


def test_padding_widths_forms_and_refusals() -> None:
    assert padding_widths(1) == ((1, 1),) * 3
    assert padding_widths((1, 2, 3)) == ((1, 1), (2, 2), (3, 3))
    assert padding_widths(np.array([[0, 1], [2, 3], [4, 5]])) == ((0, 1), (2, 3), (4, 5))
    for bad in [(1, 2), ((1, 2), (3, 4)), ((1, 2, 3), (1, 2), (1, 2)), ((1, -2), (0, 0), (0, 0))]:
        with pytest.raises(ValueError, match="Expected padding"):
            padding_widths(bad)
