"""Shared deterministic prefix of MC inference: the split graph and the maps it gives."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfuq.inference.mc as mc
from tfuq.inference.prefix import split_at_stochastic
from tfuq.layers import MCDropout, mc_sampling, stochastic_layers
from tfuq.networks import HighRes3DNet
from tfuq.networks.unet import UNet


def _highres(seed: int = 0) -> HighRes3DNet:
    keras.utils.set_random_seed(seed)
    # NiftyNet / Klaser placement: dropout only before the last 1^3 convolution
    return HighRes3DNet(
        (16, 16, 16, 1),
        family="normal",
        base_filters=4,
        blocks_per_stack=1,
        dropout={"kind": "mc", "rate": 0.5},
    )


def test_the_suffix_of_the_prefix_is_the_model_and_holds_every_stochastic_layer() -> None:
    model = _highres()
    prefix, suffix = split_at_stochastic(model)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(suffix(prefix(x, training=False), training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
    )
    assert not stochastic_layers(prefix) and stochastic_layers(suffix) == stochastic_layers(model)
    # the head placement leaves almost every weight in the prefix
    assert prefix.count_params() > 0.9 * model.count_params()


def test_nothing_to_share_gives_none() -> None:
    keras.utils.set_random_seed(0)
    assert (
        split_at_stochastic(HighRes3DNet((8, 8, 8, 1), base_filters=4, blocks_per_stack=1, dropout=None))
        is None
    )
    inputs = keras.Input((8, 8, 1))
    first = keras.Model(inputs, keras.layers.Conv2D(1, 1)(MCDropout(0.5)(inputs)))
    assert split_at_stochastic(first) is None  # dropout on the input itself: no prefix

    class Plain(keras.Model):
        def call(self, x):
            return x

    assert split_at_stochastic(Plain()) is None


@pytest.mark.parametrize("mc_samples, batch_size", [(20, 4), (3, 8), (3, 12)])  # (3, 12): last group smaller
def test_mc_maps_equal_the_naive_path_for_the_same_masks(
    monkeypatch, mc_samples: int, batch_size: int
) -> None:
    """Oracle: the whole network run T times (the split turned off), same seed, same dropout masks."""
    volume = np.random.default_rng(1).normal(size=(30, 18, 16, 1)).astype("float32")  # 3 x 2 x 1 windows
    kwargs = {"mc_samples": mc_samples, "window": 16, "overlap": 0.25, "batch_size": batch_size, "seed": 3}
    model = _highres()
    with mc_sampling(model):
        shared = mc.mc_predict_volume(model, volume, "normal", **kwargs)
    monkeypatch.setattr(mc, "split_at_stochastic", lambda m: None)
    naive_model = _highres()  # same weights; a new object, so the compiled passes are not reused
    with mc_sampling(naive_model):
        naive = mc.mc_predict_volume(naive_model, volume, "normal", **kwargs)
    assert shared.keys() == naive.keys()
    for key in shared:
        np.testing.assert_allclose(shared[key], naive[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert float(np.mean(shared["epistemic_var"])) > 0  # the passes did differ


def test_unet_dropout_everywhere_splits_after_the_first_convolution() -> None:
    keras.utils.set_random_seed(0)
    model = UNet((16, 16, 1), depth=1, base_filters=4, dropout={"kind": "mc", "rate": 0.2})
    prefix, suffix = split_at_stochastic(model)
    x = np.random.default_rng(2).normal(size=(3, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(suffix(prefix(x))), keras.ops.convert_to_numpy(model(x))
    )
