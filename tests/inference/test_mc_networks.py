"""mc_predict_volume with tfuq's network kinds: MultiRes levels per window,
GGD alpha/beta maps, list/dict outputs, 2D models and progress against closed-form oracles."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from uq_job_setup import AnalyticHead

from tfuq.data.windows import multires_windows, window_grid
from tfuq.inference import mc_predict_volume
from tfuq.layers import DistributionHead, MCSpatialDropout3D

KEYS = ("mean", "epistemic_var", "aleatoric_var", "total_var")


def _dropout_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, None, 1))
    h = keras.layers.Conv3D(6, 3, padding="same", activation="relu")(inp)
    h = MCSpatialDropout3D(0.3, seed=seed + 1)(h)
    return keras.Model(inp, DistributionHead("normal")(h))


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(*shape, 1)).astype(np.float32)


def test_multires_levels_are_cut_around_each_window() -> None:
    """Oracle: a 2-input model predicting its coarse input; one window = the volume -> the coarse level."""
    fine = keras.Input((None, None, None, 1))
    coarse = keras.Input((None, None, None, 1))
    model = keras.Model([fine, coarse], AnalyticHead(base=0.1)(coarse))
    vol = _volume((8, 12, 16), seed=1)
    maps = mc_predict_volume(model, vol, "normal", mc_samples=1, window=(8, 12, 16), factors=(1, 2))
    level = multires_windows(vol, (0, 0, 0), (8, 12, 16), (1, 2), mode="minimum", cval=vol.min())[1]
    np.testing.assert_allclose(maps["mean"], level[..., 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maps["aleatoric_var"], 0.01, rtol=1e-4)


def test_multires_sliding_windows_match_a_per_window_oracle() -> None:
    """Oracle: constant blending of the coarse level of every window, computed with multires_windows."""
    fine = keras.Input((None, None, None, 1))
    coarse = keras.Input((None, None, None, 1))
    model = keras.Model([fine, coarse], AnalyticHead(base=0.1)(coarse))
    vol, window = _volume((12, 10, 8), seed=2), (6, 4, 4)
    maps = mc_predict_volume(
        model, vol, "normal", mc_samples=1, window=window, factors=(1, 2), blending="constant"
    )
    grid = window_grid(vol.shape[:3], window, 0.5)
    total, count, square = (np.zeros(vol.shape[:3]) for _ in range(3))
    for origin in grid.origins:
        level = multires_windows(vol, origin, window, (1, 2), mode="minimum", cval=vol.min())[1][..., 0]
        index = grid.slices(origin)
        total[index] += level
        square[index] += level.astype(np.float64) ** 2
        count[index] += 1
    mean = total / count
    np.testing.assert_allclose(maps["mean"], mean, rtol=1e-5, atol=1e-5)
    # disagreement between windows (different fields of view) is epistemic: the mixture variance
    np.testing.assert_allclose(maps["epistemic_var"], square / count - mean**2, atol=1e-4)


def test_generalized_normal_alpha_and_beta_maps() -> None:
    inp = keras.Input((None, None, None, 1))
    model = keras.Model(inp, AnalyticHead("generalized_normal", base=0.2, slope=0.3, power=1.5)(inp))
    vol = _volume((10, 9, 7), seed=3)
    maps = mc_predict_volume(model, vol, "generalized_normal", mc_samples=2, window=(6, 6, 4))
    np.testing.assert_allclose(maps["alpha"], 0.2 + 0.3 * vol[..., 0] ** 2, rtol=1e-4)
    np.testing.assert_allclose(maps["beta"], 1.5, rtol=1e-4)


def test_list_outputs_use_the_last_prediction_and_2d_models_take_slices() -> None:
    inp = keras.Input((None, None, None, 1))
    model = keras.Model(inp, [AnalyticHead(base=0.5)(inp), AnalyticHead(gain=2.0, base=0.1)(inp)])
    vol = _volume((6, 5, 4), seed=4)
    maps = mc_predict_volume(model, vol, "normal", mc_samples=1, window=(4, 4, 4))
    np.testing.assert_allclose(maps["mean"], 2.0 * vol[..., 0], rtol=1e-5, atol=1e-6)
    flat = keras.Input((None, None, 1))
    model_2d = keras.Model(flat, AnalyticHead(gain=3.0)(flat))
    maps = mc_predict_volume(model_2d, vol, "normal", mc_samples=1, window=(4, 4, 1))
    np.testing.assert_allclose(maps["mean"], 3.0 * vol[..., 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2D model needs 2D windows"):
        mc_predict_volume(model_2d, vol, "normal", mc_samples=1, window=(4, 4, 4))
