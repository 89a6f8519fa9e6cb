"""Windows cut with TF ops equal their NumPy references bit for bit, at the border and inside."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfuq.data.windows import (
    PADDING_MODES,
    average_pool,
    average_pool_tf,
    crop_padded,
    crop_padded_tf,
    multires_windows,
    multires_windows_tf,
)


def volume(shape, channels=2, seed=0):
    return np.random.default_rng(seed).normal(size=(*shape, channels)).astype(np.float32)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_crop_equals_numpy_in_every_mode_past_every_border(mode) -> None:
    data = volume((7, 5, 6))
    cval = [-3.0, 2.5] if mode in ("constant", "minimum") else None
    tensor = tf.constant(data)
    starts = [(0, 0, 0), (2, 1, 1), (-4, -3, 2), (5, 4, -2), (-9, 3, 4), (6, -6, 7)]
    for start, size in itertools.product(starts, [(3, 4, 5), (12, 2, 9)]):
        expected = crop_padded(data, start, size, mode=mode, cval=cval)
        got = crop_padded_tf(tensor, tf.constant(start, tf.int64), size, mode=mode, cval=cval).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"{mode} {start} {size}")


def test_crop_keeps_integer_masks_and_fills_constant_zero() -> None:
    mask = (np.random.default_rng(1).random((6, 6, 6, 1)) > 0.5).astype(np.uint8)
    got = crop_padded_tf(tf.constant(mask), tf.constant([-2, 3, 1]), 5, mode="constant")
    assert got.dtype == tf.uint8
    np.testing.assert_array_equal(got.numpy(), crop_padded(mask, (-2, 3, 1), 5, mode="constant"))


def test_crop_refuses_minimum_without_its_fill_and_unknown_modes() -> None:
    tensor = tf.zeros((4, 4, 4, 1))
    with pytest.raises(ValueError, match="cval"):
        crop_padded_tf(tensor, tf.constant([0, 0, 0]), 2, mode="minimum")
    with pytest.raises(ValueError, match="mode"):
        crop_padded_tf(tensor, tf.constant([0, 0, 0]), 2, mode="wrap")


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_average_pool_equals_numpy_bit_for_bit(factor) -> None:
    data = volume((8, 16, 12), channels=3, seed=factor) * 1000.0
    expected = average_pool(data, factor)
    np.testing.assert_array_equal(average_pool_tf(tf.constant(data), factor).numpy(), expected)
    with pytest.raises(ValueError, match="divisible"):
        average_pool_tf(tf.constant(data), 5)


@pytest.mark.parametrize("mode", ["minimum", "edge", "reflect"])
def test_multires_levels_equal_the_numpy_reference_inside_and_at_the_border(mode) -> None:
    """3D levels (factors 1, 2, 4 of 8^3 windows: a 32^3 context) from a 20 x 24 x 18 volume."""
    data = volume((20, 24, 18), channels=1, seed=3)
    cval = [float(data.min())]
    tensor = tf.constant(data)
    for start in [(6, 8, 5), (0, 0, 0), (-7, 14, 12), (15, -3, 13)]:
        expected = multires_windows(data, start, 8, (1, 2, 4), mode=mode, cval=cval)
        got = multires_windows_tf(tensor, tf.constant(start), 8, (1, 2, 4), mode=mode, cval=cval)
        assert len(got) == 3
        for level, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_array_equal(g.numpy(), e, err_msg=f"{mode} {start} level {level}")


def test_multires_levels_of_a_flat_window_and_in_a_dataset_map() -> None:
    """A (6, 10, 2) window with factors (1, 3): anisotropic and traced inside tf.data.

    Traced, Grappler may regroup the additions of a block sum and divide by 27
    as a product with 1/27: equal to float32 round-off of the block sums
    (a few ulp of the summands), not bit for bit.
    """
    data = volume((9, 40, 7), channels=2, seed=4)
    tensor = tf.constant(data)
    starts = np.array([[1, 15, 2], [-3, -8, 4]], np.int64)
    dataset = tf.data.Dataset.from_tensor_slices(starts).map(
        lambda s: tuple(multires_windows_tf(tensor, s, (6, 10, 2), (1, 3), mode="symmetric"))
    )
    for start, got in zip(starts, dataset):
        expected = multires_windows(data, start, (6, 10, 2), (1, 3), mode="symmetric")
        np.testing.assert_array_equal(got[0].numpy(), expected[0])  # a copy
        np.testing.assert_allclose(got[1].numpy(), expected[1], rtol=0, atol=4e-7 * np.abs(data).max())
