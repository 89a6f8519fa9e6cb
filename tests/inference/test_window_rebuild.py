"""An inference window larger than the training window (NiftyNet's pattern) for fully convolutional nets.

Oracle: the same architecture built by the network factory for the larger window (an independent
construction path) and given the saved network's weights: the rebuilt network's outputs equal its
outputs on any input.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from uq_job_setup import CT_PARAMS, tiny_config

from tfuq.errors import UserError
from tfuq.inference.prediction import check_windows, feature_window, prediction_settings
from tfuq.model_store.trained import TrainedModel
from tfuq.networks.factory import build_model


def _member(tmp_path: Path, overrides: tuple[str, ...]) -> tuple[TrainedModel, object]:
    config = tiny_config(tmp_path, overrides)
    model = build_model(config)
    return TrainedModel(tmp_path / "run", model, CT_PARAMS), config


@pytest.mark.parametrize("name", ["highres3dnet", "unet"])
def test_a_larger_window_rebuilds_the_network_with_its_weights(tmp_path: Path, name: str) -> None:
    extra = ("NETWORK.base_filters=4", "NETWORK.blocks_per_stack=1") if name == "highres3dnet" else ()
    member, config = _member(tmp_path, ("UNCERTAINTY.dropout=none", f"NETWORK.name={name}", *extra))
    assert tuple(member.model.inputs[0].shape[1:-1]) == (16, 16, 16)
    settings = prediction_settings(config)  # the tiny config's [INFERENCE] window is 24, 16, 32
    assert settings.window == (24, 16, 32)
    (rebuilt,) = check_windows([member], settings)
    assert rebuilt.model is not member.model
    assert tuple(rebuilt.model.inputs[0].shape[1:-1]) == (24, 16, 32)
    for ours, theirs in zip(rebuilt.model.get_weights(), member.model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    x = np.random.default_rng(0).normal(size=(2, 24, 16, 32, 1)).astype(np.float32)
    big = np.asarray(rebuilt.model(x, training=False))
    window = "MR.spatial_window_size=24, 16, 32", "CT.spatial_window_size=24, 16, 32"
    _, wide_config = _member(tmp_path, ("UNCERTAINTY.dropout=none", f"NETWORK.name={name}", *extra, *window))
    oracle = build_model(wide_config)
    oracle.set_weights(member.model.get_weights())
    np.testing.assert_allclose(big, np.asarray(oracle(x, training=False)), rtol=1e-5, atol=1e-5)
    # the training window needs no rebuild
    same_window = dataclasses.replace(settings, window=(16, 16, 16))
    assert check_windows([member], same_window)[0] is member


def test_a_window_the_network_cannot_take_is_one_line(tmp_path: Path) -> None:
    member, config = _member(tmp_path, ("UNCERTAINTY.dropout=none", "NETWORK.depth=3"))
    settings = dataclasses.replace(prediction_settings(config), window=(20, 16, 32))
    with pytest.raises(
        UserError, match=r"takes windows of 16, 16, 16 voxels and cannot be rebuilt for 20, 16, 32"
    ):
        check_windows([member], settings)


def test_reliability_features_keep_the_training_window(tmp_path: Path) -> None:
    # Bottleneck features summarise one window: the density of the Training windows and a scan's
    # distances must use one window size, the network's own, whatever the inference window.
    member, config = _member(tmp_path, ("UNCERTAINTY.dropout=none",))
    settings = prediction_settings(config)
    assert settings.window == (24, 16, 32)
    assert feature_window(member.model, settings) == (16, 16, 16)
    import keras

    free = keras.Sequential([keras.Input((None, None, None, 1)), keras.layers.Conv3D(2, 3, padding="same")])
    assert feature_window(free, settings) == (24, 16, 32)
