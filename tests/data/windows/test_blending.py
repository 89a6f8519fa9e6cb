"""Blending weights against closed forms: Gaussian, Hann, constant; refusals."""

from __future__ import annotations

import numpy as np
import pytest

from tfuq.data.windows import BLENDING_MODES, blending_weights


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
