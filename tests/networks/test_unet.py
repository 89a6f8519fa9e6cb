"""Tests for tfuq.networks.unet."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from utils import assert_keras_roundtrip

from tfuq.layers import ConcreteSpatialDropout3D, MCSpatialDropout2D, MCSpatialDropout3D, mc_sampling
from tfuq.networks.unet import UNet


def unet_count(cin, channels, *, depth, base, k_body, k_edge, k_up, convs=2, concrete=0):
    """Independent count: conv k*cin*cout (no bias before BN) + 4 per BN channel; heads with bias."""
    n, c_prev, first = 0, cin, True
    for level in range(depth + 1):
        f = base * 2**level
        if level:
            n += k_body * c_prev * f + 4 * f
            c_prev = f
        for _ in range(convs):
            n += (k_edge if first else k_body) * c_prev * f + 4 * f
            c_prev, first = f, False
    for level in reversed(range(depth)):
        f = base * 2**level
        n += k_up * c_prev * f + 4 * f  # nearest upsampling then convolution
        c_prev = 2 * f  # concatenated skip
        for _ in range(convs):
            n += k_body * c_prev * f + 4 * f
            c_prev = f
    heads = channels  # one 3x3 branch per distribution parameter
    n += heads * (k_edge * (base + cin) * base + base)  # input concatenated before the heads
    n += heads * base * channels + channels  # DistributionHead 1x1
    return n + concrete


CASES = [
    # kwargs, input shape, output shape, kernel volumes (body, edge, up)
    ({"family": "normal"}, (2, 16, 16, 1), (2, 16, 16, 2), (9, 9, 25)),
    ({"family": "point", "depth": 2}, (1, 8, 12, 2), (1, 8, 12, 1), (9, 9, 25)),
    ({"family": "normal", "mode": "2.5d", "depth": 2}, (1, 8, 8, 3, 1), (1, 8, 8, 3, 2), (9, 27, 25)),
    (
        {"family": "generalized_normal", "mode": "3d", "depth": 1},
        (1, 4, 6, 8, 1),
        (1, 4, 6, 8, 3),
        (27, 27, 125),
    ),
]


@pytest.mark.parametrize(("kwargs", "input_shape", "output_shape", "kernels"), CASES)
def test_shapes_and_counts(kwargs, input_shape, output_shape, kernels):
    net = UNet(input_shape[1:], base_filters=4, **kwargs)
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    assert tuple(net(x).shape) == output_shape
    k_body, k_edge, k_up = kernels
    expected = unet_count(
        input_shape[-1],
        output_shape[-1],
        depth=kwargs.get("depth", 3),
        base=4,
        k_body=k_body,
        k_edge=k_edge,
        k_up=k_up,
    )
    assert net.count_params() == expected


def test_slab_mode_mixes_slices_only_at_the_first_and_head_convolutions():
    net = UNet((16, 16, 4, 1), mode="2.5d", depth=2, base_filters=4)
    convs = {layer.name: layer for layer in net.layers if isinstance(layer, keras.layers.Conv3D)}
    full = sorted(name for name, layer in convs.items() if layer.kernel_size[-1] > 1)
    assert full == ["unet_enc_0_0_conv", "unet_head_loc_conv", "unet_head_scale_conv"]
    assert convs["unet_down_1_conv"].strides == (2, 2, 1)
    assert convs["unet_up_0_conv"].kernel_size == (5, 5, 1)
    assert net.get_layer("unet_up_0_upsample").size == (2, 2, 1)
    # a slab of any thickness works: only H and W are downsampled
    assert UNet((16, 16, 3, 1), mode="2.5d", depth=2, base_filters=4).output_shape == (None, 16, 16, 3, 2)


def test_input_is_concatenated_before_the_heads():
    net = UNet((8, 8, 2), depth=1, base_filters=4)
    concat = net.get_layer("unet_input_concat")
    assert concat.output.shape[-1] == 4 + 2
    # the raw input reaches the output through the heads alone: zero every body kernel
    # and the output still depends on x
    for layer in net.layers:
        if isinstance(layer, keras.layers.Conv2D) and "head" not in layer.name:
            layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))
    rng = np.random.default_rng(1)
    x1, x2 = (rng.normal(size=(1, 8, 8, 2)).astype("float32") for _ in range(2))
    assert np.abs(keras.ops.convert_to_numpy(net(x1) - net(x2))).max() > 1e-3


@pytest.mark.parametrize(
    ("mode", "shape", "layer_cls"),
    [("2d", (8, 8, 1), MCSpatialDropout2D), ("3d", (8, 8, 8, 1), MCSpatialDropout3D)],
)
def test_spatial_dropout_on_every_layer_but_the_first_and_the_heads(mode, shape, layer_cls):
    net = UNet(shape, mode=mode, depth=2, base_filters=4, dropout={"kind": "mc", "rate": 0.2, "seed": 0})
    drops = [layer for layer in net.layers if isinstance(layer, layer_cls)]
    convs = [layer for layer in net.layers if type(layer).__name__.startswith("Conv")]
    # body convolutions: 3 levels x 2 + 2 down + 2 up + 2 x 2 decoder = 14; first has no dropout
    assert len(convs) - 2 == 14 and len(drops) == 13
    assert all(d.rate == 0.2 for d in drops) and len({d.seed for d in drops}) == 13
    assert not any("head" in d.name for d in drops)


def test_concrete_dropout_wraps_the_body_convolutions():
    net = UNet((8, 8, 4, 1), mode="2.5d", depth=1, base_filters=4, dropout="concrete")
    wrappers = [layer for layer in net.layers if isinstance(layer, ConcreteSpatialDropout3D)]
    assert len(wrappers) == 2 * 2 + 1 + 1 + 2 - 1  # body convs minus the first
    expected = unet_count(1, 2, depth=1, base=4, k_body=9, k_edge=27, k_up=25, concrete=len(wrappers))
    assert net.count_params() == expected
    net(np.zeros((1, 8, 8, 4, 1), "float32"))
    assert len(net.losses) == len(wrappers)  # one concrete-dropout regulariser per wrapper


@pytest.mark.parametrize("kind", ["mc", "concrete"])
def test_mc_sampling_differs_while_deterministic_calls_repeat(kind):
    net = UNet((8, 8, 1), depth=1, base_filters=4, dropout={"kind": kind, "rate": 0.5, "seed": 1})
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 1)).astype("float32")
    a, b = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    with mc_sampling(net):
        c, d = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    assert np.abs(c - d).max() > 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_shape": (100, 128, 1)}, r"axis 0 .* multiple of 8, e\.g\. 96 or 104"),
        ({"image_shape": (16, 16, 12, 1), "mode": "3d", "depth": 3}, r"axis 2 .* 8 or 16"),
        ({"image_shape": (16, 16, 1), "mode": "2.5d"}, "3 spatial axes"),
        ({"mode": "4d"}, "mode"),
        ({"depth": 0}, "depth"),
        ({"family": "cauchy"}, "family"),
        ({"normalization": "layer"}, "normalization"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"image_shape": (16, 16, 1), **kwargs}
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_paper_scale_slab_network_builds():
    # Reinhold: 128x128x8 slabs, 3 levels, 2 heads; building only (no forward pass)
    net = UNet((128, 128, 8, 1), family="normal", mode="2.5d", dropout={"kind": "mc", "rate": 0.2})
    assert net.output_shape == (None, 128, 128, 8, 2)
    assert net.count_params() == unet_count(1, 2, depth=3, base=32, k_body=9, k_edge=27, k_up=25)


def test_config_and_keras_round_trip(tmp_path):
    net = UNet(
        (8, 8, 4, 2),
        family="laplace",
        mode="2.5d",
        depth=1,
        base_filters=4,
        normalization="instance",
        activation="leaky_relu",
        dropout={"kind": "concrete", "seed": 4},
    )
    config = json.loads(json.dumps(net.get_config()))
    clone = UNet.from_config(config)
    assert clone.get_config() == net.get_config()
    clone.set_weights(net.get_weights())
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 4, 2)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), keras.ops.convert_to_numpy(net(x)))
    assert_keras_roundtrip(net, x, tmp_path)
