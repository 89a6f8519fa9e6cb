"""Bottleneck features and their Mahalanobis distance against NumPy / scipy oracles."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy.spatial import distance

from tfuq.errors import UserError
from tfuq.inference.features import (
    FeatureDensity,
    bottleneck_layer,
    fit_feature_density,
    mahalanobis,
    window_features,
)
from tfuq.networks import UNet

RNG = np.random.default_rng(2)


def _unet() -> UNet:
    return UNet(image_shape=(16, 16, 1), family="normal", mode="2d", depth=2, base_filters=4)


def test_bottleneck_is_the_deepest_encoder_map_of_a_unet() -> None:
    model = _unet()
    layer = bottleneck_layer(model)
    assert tuple(layer.output.shape[1:]) == (4, 4, 16)
    assert "enc_2" in layer.name and "dec" not in layer.name


def test_window_features_are_the_pooled_bottleneck_of_each_kept_slice() -> None:
    model = _unet()
    volume = RNG.normal(size=(16, 16, 5, 1)).astype(np.float32)
    mask = np.zeros((16, 16, 5), bool)
    mask[:, :, 1:4] = True  # slices 0 and 4 hold no mask voxel
    feats = window_features(model, volume, (16, 16, 1), mask)
    layer = bottleneck_layer(model)
    probe = keras.Model(model.inputs[0], layer.output)
    expected = np.stack(
        [np.asarray(probe(volume[None, :, :, z], training=False))[0].mean(axis=(0, 1)) for z in (1, 2, 3)]
    )
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert window_features(model, volume, (16, 16, 1), mask, stride=2).shape == (2, 16)
    with pytest.raises(UserError, match="no window holds a mask voxel"):
        window_features(model, volume, (16, 16, 1), np.zeros_like(mask))


def test_density_and_distance_equal_numpy_and_scipy(tmp_path) -> None:
    x = RNG.normal(size=(300, 4)) @ np.diag([1.0, 2.0, 0.5, 3.0])
    density = fit_feature_density(x, shrinkage=0.2)
    cov = np.cov(x, rowvar=False)
    shrunk = 0.8 * cov + 0.2 * np.trace(cov) / 4 * np.eye(4)
    np.testing.assert_allclose(density.precision, np.linalg.inv(shrunk), rtol=1e-8)
    probe = RNG.normal(size=(5, 4))
    expected = [distance.mahalanobis(p, x.mean(axis=0), np.linalg.inv(shrunk)) for p in probe]
    np.testing.assert_allclose(mahalanobis(probe, density), expected, rtol=1e-8)
    path = density.save(tmp_path / "d.npz")
    again = FeatureDensity.load(path)
    np.testing.assert_array_equal(again.precision, density.precision)
    assert again.num_windows == 300 and FeatureDensity.load(tmp_path / "none.npz") is None
    with pytest.raises(ValueError, match="N >= 2"):
        fit_feature_density(x[:1])
