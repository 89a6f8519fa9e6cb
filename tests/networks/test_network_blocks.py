"""Tests for tfuq.networks.blocks and tfuq.networks.dropout."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from utils import run_layer_test

from tfuq.layers import ConcreteSpatialDropout3D, MCSpatialDropout2D
from tfuq.networks.blocks import (
    ChannelPad,
    apply_conv_block,
    apply_head_block,
    apply_residual_block,
    check_divisible,
    check_image_shape,
)
from tfuq.networks.dropout import DropoutPlan, DropoutSpec


def test_channel_pad_layer(tmp_path):
    run_layer_test(ChannelPad, {"front": 2, "back": 3}, (2, 4, 4, 4, 5), (2, 4, 4, 4, 10), tmp_path)


def test_channel_pad_is_centred_zero_padding():
    x = np.arange(2 * 3 * 4, dtype="float32").reshape(2, 3, 4)
    y = keras.ops.convert_to_numpy(ChannelPad(1, 2)(x))
    np.testing.assert_array_equal(y, np.pad(x, [(0, 0), (0, 0), (1, 2)]))


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_channel_pad_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="front"):
        ChannelPad(bad, 0)


def test_residual_block_pad_equals_identity_shortcut_plus_branch():
    # With zero kernels the residual branch vanishes: output = centred zero-padded input.
    inputs = keras.Input((6, 6, 4))
    out = apply_residual_block(inputs, 8, rank=2, name="res")
    model = keras.Model(inputs, out)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_array_equal(y, np.pad(x, [(0, 0)] * 3 + [(2, 2)]))
    # 2 x (BN on input channels + 3x3 conv, no bias): 4*4 + 9*4*8 + 4*8 + 9*8*8
    assert model.count_params() == 16 + 288 + 32 + 576


def test_residual_block_projection_counts_its_weights():
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, apply_residual_block(inputs, 8, rank=2, matching="projection", name="r"))
    assert model.count_params() == 16 + 288 + 32 + 576 + 4 * 8


def test_conv_block_dilation_and_bias_rules():
    inputs = keras.Input((8, 8, 8, 2))
    out = apply_conv_block(inputs, 3, rank=3, dilation_rate=2, normalization="none", name="b")
    model = keras.Model(inputs, out)
    conv = model.get_layer("b_conv")
    assert conv.dilation_rate == (2, 2, 2) and conv.use_bias
    assert model.count_params() == 27 * 2 * 3 + 3
    out = apply_conv_block(inputs, 3, rank=3, name="c")
    assert keras.Model(inputs, out).count_params() == 27 * 2 * 3 + 4 * 3


@pytest.mark.parametrize(
    ("family", "expected_channels", "branches"),
    [("point", 1, 1), ("normal", 2, 2), ("generalized_normal", 3, 3)],
)
def test_head_block_has_one_branch_per_parameter(family, expected_channels, branches):
    inputs = keras.Input((8, 8, 5))
    model = keras.Model(inputs, apply_head_block(inputs, family, rank=2, filters=4, name="head"))
    assert model.output_shape == (None, 8, 8, expected_channels)
    # branch: 3x3 conv 5->4 with bias; head: 1x1 conv (4*branches)->channels with bias
    assert model.count_params() == branches * (9 * 5 * 4 + 4) + 4 * branches * expected_channels + (
        expected_channels
    )


def test_dropout_plan_places_mc_and_concrete_layers_with_distinct_seeds():
    inputs = keras.Input((4, 4, 3))
    plan = DropoutPlan(DropoutSpec("mc", rate=0.3, seed=7), 2)
    h = plan.apply(inputs, keras.layers.Conv2D(2, 1, name="a"), "a")
    h = plan.apply(h, keras.layers.Conv2D(2, 1, name="b"), "b")
    model = keras.Model(inputs, h)
    drops = [layer for layer in model.layers if isinstance(layer, MCSpatialDropout2D)]
    assert [d.seed for d in drops] == [7, 8] and all(d.rate == 0.3 for d in drops)

    inputs = keras.Input((4, 4, 4, 3))
    plan = DropoutPlan(DropoutSpec("concrete", temperature=0.2, init_range=(0.2, 0.3)), 3)
    out = plan.apply(inputs, keras.layers.Conv3D(2, 1, name="c"), "c")
    wrapper = keras.Model(inputs, out).get_layer("c_concrete")
    assert isinstance(wrapper, ConcreteSpatialDropout3D)
    assert wrapper.temperature == 0.2 and (wrapper.init_min, wrapper.init_max) == (0.2, 0.3)

    inputs = keras.Input((4, 4, 3))
    plan = DropoutPlan(DropoutSpec("none"), 2)
    assert len(keras.Model(inputs, plan.apply(inputs, keras.layers.Conv2D(2, 1), "x")).layers) == 2


def test_dropout_spec_round_trip_and_errors():
    spec = DropoutSpec("concrete", rate=0.5, init_range=(0.1, 0.2), seed=3)
    assert DropoutSpec.from_value(spec.to_dict()) == spec
    assert DropoutSpec.from_value("mc") == DropoutSpec("mc")
    assert DropoutSpec.from_value(None).kind == "none"
    with pytest.raises(ValueError, match="kind"):
        DropoutSpec("gaussian")
    with pytest.raises(ValueError, match="rate"):
        DropoutSpec("mc", rate=1.0)
    with pytest.raises(ValueError, match="init_range"):
        DropoutSpec("concrete", init_range=(0.3, 0.2))


def test_check_divisible_names_valid_sizes():
    check_divisible((16, 24), (8, 8), "Net", "3 downsamplings")
    with pytest.raises(ValueError, match=r"axis 1 .* multiple of 8, e\.g\. 96 or 104"):
        check_divisible((96, 100), (8, 8), "Net", "3 downsamplings")
    with pytest.raises(ValueError, match=r"e\.g\. 8\. Received"):
        check_divisible((4,), (8,), "Net", "3 downsamplings")


def test_check_image_shape():
    assert check_image_shape([8, 8, 1], (2, 3), "Net") == (8, 8, 1)
    with pytest.raises(ValueError, match="image_shape"):
        check_image_shape((8, 1), (2, 3), "Net")
    with pytest.raises(ValueError, match="image_shape"):
        check_image_shape((8, 0, 1), (2,), "Net")
