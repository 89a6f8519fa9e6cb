"""Blending weights against closed forms (Gaussian, Hann, constant), as properties, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfuq.data.windows import BLENDING_MODES, blending_weights, window_grid


@pytest.mark.parametrize("mode", BLENDING_MODES)
@pytest.mark.parametrize("window", [(1, 1, 1), (7, 8, 1), (5, 6, 9), (16, 16, 16)])
def test_blending_weights_positive_symmetric_peak_one(mode, window):
    w = blending_weights(window, mode)
    assert w.shape == window
    assert w.min() > 0 and w.max() == pytest.approx(1.0)
    for axis in range(3):
        np.testing.assert_allclose(w, np.flip(w, axis=axis), rtol=1e-12)


def test_gaussian_weights_closed_form():
    w = blending_weights((16, 8, 1), "gaussian", floor=1e-12)
    i = np.arange(16) - 7.5
    j = np.arange(8) - 3.5
    expected = np.exp(-0.5 * (i[:, None] / 2.0) ** 2 - 0.5 * (j[None, :] / 1.0) ** 2)
    np.testing.assert_allclose(w[..., 0], expected / expected.max(), rtol=1e-12)
    floored = blending_weights((16, 8, 1), "gaussian")
    np.testing.assert_allclose(floored[..., 0], np.maximum(expected / expected.max(), 1e-3), rtol=1e-12)
    assert floored.min() == pytest.approx(1e-3)


def test_hann_weights_closed_form_and_constant():
    w = blending_weights((5, 1, 1), "hann", floor=1e-12)[:, 0, 0]
    raw = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1, 6) / 6)
    np.testing.assert_allclose(w, raw / raw.max(), rtol=1e-12)
    np.testing.assert_array_equal(blending_weights((3, 4, 5), "constant"), np.ones((3, 4, 5)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: blending_weights(4, "triangle"), "blending mode"),
        (lambda: blending_weights(4, floor=0.0), "floor"),
        (lambda: blending_weights(4, sigma_scale=0.0), "sigma_scale"),
        (lambda: blending_weights((4, 0, 4)), "positive"),
    ],
)
def test_invalid_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=150, deadline=None)
@given(
    window=st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 6)),
    mode=st.sampled_from(BLENDING_MODES),
    sigma_scale=st.floats(0.01, 2.0),
    floor=st.floats(1e-9, 1.0),
)
def test_weights_are_positive_at_most_one_symmetric_and_peak_one(window, mode, sigma_scale, floor):
    w = blending_weights(window, mode, sigma_scale=sigma_scale, floor=floor)
    assert w.shape == window and w.dtype == np.float64
    assert np.all(np.isfinite(w)) and w.min() >= floor * (1 - 1e-12) and w.min() > 0
    assert w.max() == pytest.approx(1.0)
    for axis in range(3):
        np.testing.assert_allclose(w, np.flip(w, axis=axis), rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 14), st.integers(1, 14), st.integers(1, 7)),
    window=st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 4)),
    overlap=st.sampled_from((0.0, 0.25, 0.5, 0.75)),
    mode=st.sampled_from(BLENDING_MODES),
)
def test_blended_weight_is_positive_at_every_voxel_of_a_grid(shape, window, overlap, mode):
    grid = window_grid(shape, window, overlap)
    weights = blending_weights(grid.window, mode)
    total = np.zeros(grid.padded_shape)
    for origin in grid.origins:
        total[grid.slices(origin)] += weights
    assert total[grid.interior].min() > 0 and total.min() > 0


def test_a_narrow_gaussian_on_an_even_window_does_not_underflow() -> None:
    """Found by the property test: sigma = 0.01 * 2 on a 2^3 window underflowed to 0 / 0 = NaN."""
    weights = blending_weights((2, 2, 2), "gaussian", sigma_scale=0.01, floor=1e-3)
    np.testing.assert_array_equal(weights, np.ones((2, 2, 2)))  # all eight voxels are equally central
