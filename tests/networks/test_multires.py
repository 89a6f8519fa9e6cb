"""Tests for tfuq.networks.multires."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_highres3dnet import highres_count
from utils import assert_keras_roundtrip

from tfuq.layers import mc_sampling, stochastic_layers
from tfuq.networks.multires import MultiRes, apply_upsample_crop, check_multires_geometry

TINY = {"base_filters": 4, "blocks_per_stack": 1, "branch_filters": (6, 6, 4)}


def branch_count(widths, cin, families_params):
    """Four 1^3 convolutions per branch (with bias); the fourth is the shared DistributionHead."""
    n_branches = 1 if families_params == 1 else 2
    a, b, c = widths
    branch = (cin * a + a) + (a * b + b) + (b * c + c)
    return n_branches * branch + n_branches * c * families_params + families_params


@pytest.mark.parametrize(("family", "paper", "params"), [("point", 2.54e6, 1), ("normal", 2.61e6, 2)])
def test_paper_parameter_counts(family, paper, params):
    # Klaser Table 1: MultiRes 2.54M (no uncertainty) / MultiResunc 2.61M; building only, no forward pass
    net = MultiRes((80, 80, 80, 1), family=family, dropout={"kind": "mc", "rate": 0.5})
    expected = 3 * highres_count(1, 1) + branch_count((256, 256, 128), 3, params)
    assert net.count_params() == expected
    assert abs(net.count_params() / paper - 1) < 0.05


CASES = [
    # kwargs, crop shape (with channels), expected output shape (without batch)
    ({"family": "normal"}, (8, 8, 8, 1), (8, 8, 8, 2)),
    ({"family": "point", "factors": (1, 3)}, (6, 8, 4, 2), (6, 8, 4, 1)),
    ({"family": "generalized_normal", "factors": (1, 2, 4, 8)}, (4, 6, 8, 1), (4, 6, 8, 3)),
]


@pytest.mark.parametrize(("kwargs", "shape", "output_shape"), CASES)
def test_shapes_and_counts(kwargs, shape, output_shape):
    net = MultiRes(shape, **TINY, **kwargs)
    levels = len(kwargs.get("factors", (1, 2, 4)))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, *shape)).astype("float32") for _ in range(levels)]
    assert tuple(net(x).shape) == (2, *output_shape)
    expected = levels * highres_count(shape[-1], 1, base=4, blocks=1) + branch_count(
        (6, 6, 4), levels, output_shape[-1]
    )
    assert net.count_params() == expected


def coordinate_patch(size):
    """A (size, size, size, 3) patch whose channels are the voxel coordinates z, y, x."""
    grid = np.meshgrid(*[np.arange(size, dtype="float64")] * 3, indexing="ij")
    return np.stack(grid, axis=-1)


def downsample_crop(patch, factor, crop):
    """Block-mean downsampling by ``factor`` then the central ``crop``^3 (the data-side operation)."""
    n = patch.shape[0] // factor
    coarse = patch.reshape(n, factor, n, factor, n, factor, 3).mean(axis=(1, 3, 5))
    start = (n - crop) // 2
    return coarse[start : start + crop, start : start + crop, start : start + crop]


@pytest.mark.parametrize("crop", [8, 6])
def test_upsample_crop_aligns_levels_on_a_coordinate_ramp(crop):
    # The coarse level's voxel i covers the fine level's voxels 2i and 2i + 1: after the
    # upsample + centre crop, coordinates must agree to within half a coarse voxel
    # (f/2 fine voxels at fine factor f), with zero mean offset; a shift of one voxel fails.
    patch = coordinate_patch(4 * crop)
    levels = [downsample_crop(patch, f, crop) for f in (1, 2, 4)]
    inputs = keras.Input((crop, crop, crop, 3))
    model = keras.Model(inputs, apply_upsample_crop(inputs, 2, (crop,) * 3, name="up"))
    for fine, factor in ((0, 1), (1, 2)):
        up = keras.ops.convert_to_numpy(model(levels[fine + 1][None].astype("float32")))[0]
        diff = up - levels[fine]
        np.testing.assert_allclose(np.abs(diff), factor / 2, atol=1e-5)
        np.testing.assert_allclose(diff.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    # the same check fails for a crop shifted by one voxel
    shifted = np.roll(levels[0], 1, axis=0)
    up = keras.ops.convert_to_numpy(model(levels[1][None].astype("float32")))[0]
    assert np.abs(up - shifted)[1:].max() > 0.5 + 1e-3


def test_model_uses_the_cascade_in_order():
    net = MultiRes((8, 8, 8, 1), family="normal", **TINY)
    names = [layer.name for layer in net.layers]
    assert names.index("multires_level_2_to_1_crop") < names.index("multires_merge_1")
    assert names.index("multires_merge_1") < names.index("multires_level_1_to_0_upsample")
    merge = net.get_layer("multires_merge_0")
    assert merge.output.shape == (None, 8, 8, 8, 3)


def test_geometry_errors_name_valid_sizes():
    with pytest.raises(ValueError, match=r"size 6 or 8"):
        MultiRes((8, 7, 8, 1), **TINY)
    with pytest.raises(ValueError, match="integer ratios"):
        check_multires_geometry((8, 8, 8), (1, 3, 4))
    with pytest.raises(ValueError, match="two levels"):
        check_multires_geometry((8, 8, 8), (1,))
    assert check_multires_geometry((7, 7, 7), (1, 3)) == (3,)
    with pytest.raises(ValueError, match="spatial axes"):
        MultiRes((8, 8, 1), **TINY)


def test_deep_supervision_outputs_are_the_coarse_subnets():
    net = MultiRes((8, 8, 8, 1), family="normal", deep_supervision=True, **TINY)
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(1, 8, 8, 8, 1)).astype("float32") for _ in range(3)]
    out = net(x)
    assert set(out) == {"params", "level_1", "level_2"}
    for k in (1, 2):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out[f"level_{k}"]),
            keras.ops.convert_to_numpy(net.subnets[k](x[k])),
            rtol=1e-6,
        )


def test_mc_channel_dropout_is_sampled_only_under_mc_sampling():
    net = MultiRes((8, 8, 8, 1), family="normal", dropout={"kind": "mc", "rate": 0.5, "seed": 1}, **TINY)
    # one channel dropout per subnet (before its 80-channel 1^3 conv) + branch convs 2 and 3 of 2 branches
    switched = stochastic_layers(net)
    assert len(switched) == 3 + 2 * 2 and all(layer.rate == 0.5 for layer in switched)
    assert len({layer.seed for layer in switched}) == len(switched)
    x = [np.random.default_rng(2).normal(size=(1, 8, 8, 8, 1)).astype("float32")] * 3
    a, b = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    with mc_sampling(net):
        c, d = (keras.ops.convert_to_numpy(net(x)) for _ in range(2))
    assert np.abs(c - d).max() > 1e-4


def test_config_and_keras_round_trip(tmp_path):
    net = MultiRes(
        (8, 8, 8, 1),
        family="generalized_normal",
        deep_supervision=True,
        dropout={"kind": "concrete", "seed": 5},
        **TINY,
    )
    config = json.loads(json.dumps(net.get_config()))
    clone = MultiRes.from_config(config)
    assert clone.get_config() == net.get_config()
    x = [np.random.default_rng(3).normal(size=(1, 8, 8, 8, 1)).astype("float32") for _ in range(3)]
    assert_keras_roundtrip(net, x, tmp_path)
