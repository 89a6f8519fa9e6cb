"""Tests for tfuq.networks.pix2pix."""

from __future__ import annotations

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from utils import assert_keras_roundtrip

from tfuq.layers import ConcreteSpatialDropout2D, MCSpatialDropout3D, mc_sampling
from tfuq.networks.pix2pix import PatchDiscriminator, Pix2PixGenerator, patch_receptive_field


def generator_count(cin, channels, *, depth, base, rank, concrete=0):
    """Independent count: k=4^rank convolutions, no bias before BN (4 numbers per BN channel)."""
    k = 4**rank
    widths = [base * min(2**i, 8) for i in range(depth)]
    n, c_prev = 0, cin
    for i, w in enumerate(widths):
        n += k * c_prev * w + (4 * w if 0 < i < depth - 1 else 0)
        c_prev = w
    for j in range(1, depth):
        w = widths[depth - 1 - j]
        n += k * c_prev * w + 4 * w
        c_prev = 2 * w  # concatenated with the mirrored encoder output
    n += k * c_prev * base + base  # outermost transposed conv (bias, no BN)
    n += base * channels + channels  # DistributionHead 1x1
    return n + concrete


def discriminator_count(cin, *, base, rank, n_layers=3):
    k = 4**rank
    widths = [base * min(2**i, 8) for i in range(n_layers + 1)]
    n = k * cin * widths[0] + widths[0]
    for prev, w in itertools.pairwise(widths):
        n += k * prev * w + 4 * w
    return n + k * widths[-1] + 1


def test_paper_scale_counts():
    # U-Net-256 and the 70x70 PatchGAN (pix2pix), building only
    g = Pix2PixGenerator((256, 256, 1), family="normal", dropout="concrete")
    assert g.count_params() == generator_count(1, 2, depth=8, base=64, rank=2, concrete=3)
    d = PatchDiscriminator((256, 256, 1), condition_channels=1)
    assert d.output_shape == (None, 30, 30, 1)
    assert d.count_params() == discriminator_count(2, base=64, rank=2)
    # pix2pix's PatchGAN on a 3+3-channel pair: 2,768,705 trainable parameters
    d6 = PatchDiscriminator((256, 256, 3), condition_channels=3)
    assert sum(int(np.prod(w.shape)) for w in d6.trainable_weights) == 2_768_705


GENERATOR_CASES = [
    ({"family": "normal", "depth": 4}, (2, 16, 16, 1), (2, 16, 16, 2)),
    ({"family": "point", "depth": 3, "dropout_after": (2,)}, (1, 8, 16, 3), (1, 8, 16, 1)),
    (
        {"family": "generalized_normal", "depth": 3, "dropout_after": (1, 2)},
        (1, 8, 8, 16, 1),
        (1, 8, 8, 16, 3),
    ),
]


@pytest.mark.parametrize(("kwargs", "input_shape", "output_shape"), GENERATOR_CASES)
def test_generator_shapes_and_counts(kwargs, input_shape, output_shape):
    if "dropout_after" not in kwargs:
        kwargs = {**kwargs, "dropout_after": (2, 3)}
    g = Pix2PixGenerator(input_shape[1:], base_filters=4, dropout="mc", **kwargs)
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    assert tuple(g(x).shape) == output_shape
    rank = len(input_shape) - 2
    expected = generator_count(input_shape[-1], output_shape[-1], depth=kwargs["depth"], base=4, rank=rank)
    assert g.count_params() == expected


def test_concrete_dropout_after_transposed_convolutions_2_to_4():
    g = Pix2PixGenerator((64, 64, 1), depth=6, base_filters=2, dropout="concrete")
    wrapped = sorted(layer.name for layer in g.layers if isinstance(layer, ConcreteSpatialDropout2D))
    # the outputs of transposed convs 2, 3, 4 are the inputs of 3, 4, 5
    assert wrapped == [f"pix2pix_generator_up_{j}_concrete" for j in (3, 4, 5)]
    for layer in g.layers:
        if isinstance(layer, ConcreteSpatialDropout2D):
            assert isinstance(layer.layer, keras.layers.Conv2DTranspose)


def test_mc_dropout_at_the_same_places_in_3d():
    g = Pix2PixGenerator((32, 32, 32, 1), depth=5, base_filters=2, dropout={"kind": "mc", "rate": 0.5})
    drops = sorted(layer.name for layer in g.layers if isinstance(layer, MCSpatialDropout3D))
    assert drops == [f"pix2pix_generator_up_{j}_mc" for j in (3, 4, 5)]


@pytest.mark.parametrize("kind", ["mc", "concrete"])
def test_mc_sampling_differs_while_deterministic_calls_repeat(kind):
    g = Pix2PixGenerator(
        (16, 16, 1),
        depth=4,
        base_filters=4,
        dropout={"kind": kind, "rate": 0.5, "seed": 0},
        dropout_after=(1, 2, 3),
    )
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 1)).astype("float32")
    a, b = (keras.ops.convert_to_numpy(g(x)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    with mc_sampling(g):
        c, d = (keras.ops.convert_to_numpy(g(x)) for _ in range(2))
    assert np.abs(c - d).max() > 1e-5


def test_patch_receptive_field_is_70_by_gradient():
    assert patch_receptive_field(3) == 70
    d = PatchDiscriminator((96, 96, 1), base_filters=2)
    x = tf.constant(np.random.default_rng(2).normal(size=(1, 96, 96, 1)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = d(x)[0, 5, 5, 0]
    grad = np.abs(tape.gradient(score, x).numpy()[0, :, :, 0])
    rows, cols = np.nonzero(grad.sum(axis=1))[0], np.nonzero(grad.sum(axis=0))[0]
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


@pytest.mark.parametrize(
    ("kwargs", "input_shapes", "output_shape"),
    [
        ({"condition_channels": 2}, [(1, 32, 32, 2), (1, 32, 32, 1)], (1, 2, 2, 1)),
        ({}, [(2, 48, 32, 1)], (2, 4, 2, 1)),
        ({"condition_channels": 1, "n_layers": 2}, [(1, 16, 16, 24, 1), (1, 16, 16, 24, 1)], (1, 2, 2, 4, 1)),
    ],
)
def test_discriminator_shapes_and_counts(kwargs, input_shapes, output_shape):
    d = PatchDiscriminator(input_shapes[-1][1:], base_filters=4, **kwargs)
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=s).astype("float32") for s in input_shapes]
    assert tuple(d(xs if len(xs) > 1 else xs[0]).shape) == output_shape
    rank = len(output_shape) - 2
    cin = sum(s[-1] for s in input_shapes)
    assert d.count_params() == discriminator_count(cin, base=4, rank=rank, n_layers=kwargs.get("n_layers", 3))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (
            Pix2PixGenerator,
            {"image_shape": (100, 64, 1), "depth": 3, "dropout_after": ()},
            r"axis 0 .* 96 or 104",
        ),
        (Pix2PixGenerator, {"image_shape": (64, 64, 1), "depth": 3, "dropout_after": (3,)}, "dropout_after"),
        (Pix2PixGenerator, {"image_shape": (64, 64, 1), "family": "beta"}, "family"),
        (PatchDiscriminator, {"image_shape": (16, 16, 1)}, ">= 24"),
        (PatchDiscriminator, {"image_shape": (36, 32, 1)}, r"axis 0 .* 32 or 40"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_config_and_keras_round_trip(tmp_path):
    g = Pix2PixGenerator(
        (16, 16, 2), depth=4, base_filters=4, dropout={"kind": "concrete", "seed": 1}, dropout_after=(2, 3)
    )
    clone = Pix2PixGenerator.from_config(json.loads(json.dumps(g.get_config())))
    assert clone.get_config() == g.get_config()
    x = np.random.default_rng(4).normal(size=(1, 16, 16, 2)).astype("float32")
    assert_keras_roundtrip(g, x, tmp_path, filename="g.keras")
    d = PatchDiscriminator((32, 32, 1), condition_channels=2, base_filters=4)
    assert (
        PatchDiscriminator.from_config(json.loads(json.dumps(d.get_config()))).get_config() == d.get_config()
    )
    pair = [np.ones((1, 32, 32, 2), "float32"), x[:, :, :, :1].repeat(2, 1).repeat(2, 2)]
    assert_keras_roundtrip(d, pair, tmp_path, filename="d.keras")
