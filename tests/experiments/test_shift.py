"""Shifted inputs and the shift AUROC against NumPy / scikit-style oracles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tfuq.experiments.shift import estimate_noise_std, shift_auroc, shifted_input

RNG = np.random.default_rng(5)


def test_noise_estimate_recovers_known_noise_on_a_smooth_image() -> None:
    grid = np.linspace(0, 1, 48)
    smooth = 100.0 * np.add.outer(np.add.outer(grid, grid), grid)  # slow ramp
    noisy = smooth + RNG.normal(0.0, 3.0, smooth.shape)
    assert estimate_noise_std(noisy) == pytest.approx(3.0, rel=0.05)


def test_shifts_act_inside_the_mask_as_specified() -> None:
    x = 50.0 + RNG.normal(0.0, 2.0, (32, 32, 32))
    mask = np.zeros(x.shape, bool)
    mask[4:28, 4:28, 4:28] = True
    rescaled = shifted_input(x, "rescale", mask)
    np.testing.assert_allclose(rescaled[mask], 1.3 * x[mask], rtol=1e-6)
    np.testing.assert_allclose(rescaled[~mask], x[~mask], rtol=1e-6)
    noisy = shifted_input(x, "noise3x", mask, seed=1)
    # the added noise has std sqrt(8) x the scan's: total 3 x (here the scan's is 2)
    assert np.std(noisy[mask] - x[mask]) == pytest.approx(np.sqrt(8.0) * 2.0, rel=0.05)
    assert estimate_noise_std(noisy, mask) == pytest.approx(6.0, rel=0.08)
    ratio = shifted_input(x, "bias_field") / x  # the field spans 1/1.6 .. 1.6 over the volume
    assert ratio.min() == pytest.approx(1 / 1.6, rel=1e-3) and ratio.max() == pytest.approx(1.6, rel=1e-3)
    biased = shifted_input(x, "bias_field", mask)
    np.testing.assert_allclose(biased[mask], (ratio * x)[mask], rtol=1e-5)
    np.testing.assert_allclose(biased[~mask], x[~mask], rtol=1e-6)
    other = RNG.random(x.shape)
    np.testing.assert_allclose(shifted_input(x, "swap", mask, other=other)[mask], other[mask], rtol=1e-6)
    with pytest.raises(ValueError, match="swap needs other"):
        shifted_input(x, "swap", mask)
    with pytest.raises(ValueError, match="Expected shift"):
        shifted_input(x, "blur", mask)


def test_shift_auroc_equals_mann_whitney() -> None:
    clean, shifted = RNG.normal(0, 1, 7), RNG.normal(1, 1, 9)
    u = stats.mannwhitneyu(shifted, clean).statistic
    assert shift_auroc(clean, shifted) == pytest.approx(u / (7 * 9))
    assert shift_auroc([0.0, 1.0], [1.0]) == 0.75
