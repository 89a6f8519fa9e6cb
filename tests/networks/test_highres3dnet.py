"""Tests for tfuq.networks.highres3dnet."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from utils import assert_keras_roundtrip

from tfuq.layers import DistributionHead, mc_sampling
from tfuq.networks.highres3dnet import HighRes3DNet


def highres_count(cin, cout, *, base=16, blocks=3, rank=3, head=False, projection=False):
    """Independent parameter count: k^r*cin*cout per conv (+cout bias where used), 4 per BN channel."""
    k = 3**rank
    n = k * cin * base + 4 * base  # conv_0 (no bias) + BN
    previous = base
    for width in (base, 2 * base, 4 * base):
        for block in range(blocks):
            first_in = previous if block == 0 else width
            n += 4 * first_in + k * first_in * width  # BN -> conv
            n += 4 * width + k * width * width  # BN -> conv
            if projection and first_in != width:
                n += first_in * width
            previous = width
    n += previous * 5 * base + 4 * 5 * base  # conv_1 1^3 (no bias) + BN
    n += 5 * base * cout + cout  # output 1^3 conv with bias (DistributionHead or plain)
    return n


def test_paper_parameter_count():
    # NiftyNet HighRes3DNet, 1 input and 1 output channel: convolution weights by hand
    conv_weights = (
        27 * 1 * 16
        + 6 * 27 * 16 * 16
        + 27 * 16 * 32
        + 5 * 27 * 32 * 32
        + 27 * 32 * 64
        + 5 * 27 * 64 * 64
        + 64 * 80
        + 80 * 1
    )
    assert conv_weights == 807_424
    net = HighRes3DNet((80, 80, 80, 1))
    bn_channels = 16 + 6 * 16 + 16 + 5 * 32 + 32 + 5 * 64 + 80
    assert net.count_params() == conv_weights + 1 + 4 * bn_channels == highres_count(1, 1)
    assert abs(net.count_params() / 0.81e6 - 1) < 0.02


CASES = [
    # kwargs, input shape, expected output shape
    ({"family": "normal"}, (2, 12, 12, 12, 1), (2, 12, 12, 12, 2)),
    ({"family": "generalized_normal"}, (1, 10, 12, 8, 2), (1, 10, 12, 8, 3)),
    ({"family": None, "out_channels": 3}, (1, 8, 8, 8, 1), (1, 8, 8, 8, 3)),
    ({"family": "point", "residual_matching": "projection"}, (1, 8, 8, 8, 1), (1, 8, 8, 8, 1)),
    ({"family": "laplace"}, (2, 16, 12, 2), (2, 16, 12, 2)),  # 2D variant
]


@pytest.mark.parametrize(("kwargs", "input_shape", "output_shape"), CASES)
def test_shapes_and_counts(kwargs, input_shape, output_shape):
    net = HighRes3DNet(input_shape[1:], base_filters=4, blocks_per_stack=1, **kwargs)
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    assert tuple(net(x).shape) == output_shape
    expected = highres_count(
        input_shape[-1],
        output_shape[-1],
        base=4,
        blocks=1,
        rank=len(input_shape) - 2,
        projection=kwargs.get("residual_matching") == "projection",
    )
    assert net.count_params() == expected


def test_last_layer_is_linear_and_head_is_distribution_head():
    net = HighRes3DNet((8, 8, 8, 1), family="normal", base_filters=4, blocks_per_stack=1)
    assert isinstance(net.layers[-1], DistributionHead)
    backbone = HighRes3DNet((8, 8, 8, 1), base_filters=4, blocks_per_stack=1)
    last = backbone.layers[-1]
    assert isinstance(last, keras.layers.Conv3D) and last.activation is keras.activations.linear
    # a linear last layer can output negative values (MONAI's BN+ReLU ending could not)
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    assert keras.ops.convert_to_numpy(backbone(x)).min() < 0


def test_dilations_follow_the_plan():
    net = HighRes3DNet((8, 8, 8, 1), base_filters=4, blocks_per_stack=2)
    dilations = {
        layer.name: layer.dilation_rate[0]
        for layer in net.layers
        if isinstance(layer, keras.layers.Conv3D) and "_res_" in layer.name
    }
    assert dilations["highres3dnet_res_1_0_conv_0"] == 1
    assert dilations["highres3dnet_res_2_1_conv_1"] == 2
    assert dilations["highres3dnet_res_3_0_conv_0"] == 4
    assert len(dilations) == 3 * 2 * 2


def test_mc_sampling_differs_while_deterministic_calls_repeat():
    net = HighRes3DNet(
        (8, 8, 8, 1), family="normal", base_filters=4, blocks_per_stack=1, dropout={"kind": "mc", "rate": 0.5}
    )
    x = np.random.default_rng(2).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    a, b = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    with mc_sampling(net):
        c, d = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    assert np.abs(c - d).max() > 1e-4
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(net(x)), a)


@pytest.mark.parametrize("dropout", ["mc", "concrete"])
def test_config_and_keras_round_trip(tmp_path, dropout):
    net = HighRes3DNet(
        (8, 8, 8, 2),
        family="normal",
        base_filters=4,
        blocks_per_stack=1,
        activation="prelu",
        dropout={"kind": dropout, "seed": 3},
    )
    config = json.loads(json.dumps(net.get_config()))
    clone = HighRes3DNet.from_config(config)
    clone.set_weights(net.get_weights())
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 8, 2)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(net(x)))
    assert clone.get_config() == net.get_config()
    assert_keras_roundtrip(net, x, tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_shape": (8, 8, 8, 8, 1)}, "spatial axes"),
        ({"family": "poisson"}, "family"),
        ({"base_filters": 0}, "base_filters"),
        ({"residual_matching": "crop"}, "residual_matching"),
        ({"activation": "tanh"}, "activation"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"image_shape": (8, 8, 8, 1), **kwargs}
    with pytest.raises(ValueError, match=match):
        HighRes3DNet(**kwargs)


def _dropout_inputs(net: keras.Model) -> dict[str, str]:
    """Convolution name -> name of the layer feeding it, for every convolution fed by an MC dropout."""
    fed = {}
    for layer in net.layers:
        if isinstance(layer, keras.layers.Conv3D):
            source = layer._inbound_nodes[0].parent_nodes[0].operation
            if "dropout" in type(source).__name__.lower():
                fed[layer.name] = source.name
    return fed


@pytest.mark.parametrize("blocks_per_stack", [1, 2])
def test_dropout_blocks_drops_every_residual_convolution_input_but_not_the_image(blocks_per_stack):
    kwargs = {"family": "normal", "base_filters": 4, "blocks_per_stack": blocks_per_stack}
    head = HighRes3DNet((8, 8, 8, 1), dropout={"kind": "mc", "rate": 0.5, "seed": 1}, **kwargs)
    every = HighRes3DNet(
        (8, 8, 8, 1), dropout={"kind": "mc", "rate": 0.5, "seed": 1}, dropout_blocks=True, **kwargs
    )
    assert sorted(_dropout_inputs(head)) == ["highres3dnet_conv_1_conv"]
    residual = {
        f"highres3dnet_res_{s}_{b}_conv_{i}"
        for s in (1, 2, 3)
        for b in range(blocks_per_stack)
        for i in (0, 1)
    }
    assert set(_dropout_inputs(every)) == residual | {"highres3dnet_conv_1_conv"}
    assert "highres3dnet_conv_0_conv" not in _dropout_inputs(every)  # the image is never dropped
    # MC dropout has no weights: the same weights give the same deterministic function.
    assert len(every.get_weights()) == len(head.get_weights())
    every.set_weights(head.get_weights())
    x = np.random.default_rng(4).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(every(x)), keras.ops.convert_to_numpy(head(x)), rtol=1e-5, atol=1e-6
    )
    with mc_sampling(every):
        a, b = (keras.ops.convert_to_numpy(every(x)) for _ in range(2))
    assert np.abs(a - b).max() > 1e-4


def test_dropout_blocks_round_trip_with_concrete_dropout(tmp_path):
    net = HighRes3DNet(
        (8, 8, 8, 1),
        family="normal",
        base_filters=4,
        blocks_per_stack=1,
        dropout={"kind": "concrete", "seed": 2},
        dropout_blocks=True,
    )
    # One learned rate per wrapped convolution: conv_1 and the 6 residual convolutions.
    assert sum("p_logit" in w.path for w in net.weights) == 7
    config = json.loads(json.dumps(net.get_config()))
    assert config["dropout_blocks"] is True
    clone = HighRes3DNet.from_config(config)
    assert clone.get_config() == net.get_config()
    x = np.random.default_rng(5).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    assert_keras_roundtrip(net, x, tmp_path)
