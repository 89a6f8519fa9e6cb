from __future__ import annotations

import json

import numpy as np
import pytest

from tfuq.data.normalisation import (
    NORMALISATION_METHODS,
    NormalisationParams,
    denormalise,
    denormalise_std,
    denormalise_var,
    fit_normalisation,
    normalise,
)


def _image(seed: int = 0) -> np.ndarray:
    """CT-like float64 image: air background and a body of soft tissue and bone."""
    rng = np.random.default_rng(seed)
    image = np.full((12, 11, 10), -1000.0) + rng.normal(0, 5, size=(12, 11, 10))
    image[2:10, 2:9, 2:8] = rng.normal(40, 30, size=(8, 7, 6))
    image[4:6, 4:6, 3:5] = rng.normal(900, 100, size=(2, 2, 2))
    return image


@pytest.mark.parametrize("method", NORMALISATION_METHODS)
def test_each_method_inverts_exactly(method):
    x = _image()
    params = fit_normalisation(x, method)
    y = normalise(x, params)
    assert y.dtype == np.float64
    np.testing.assert_allclose(denormalise(y, params), x, rtol=0, atol=1e-12 * np.abs(x).max())
    # Affine in x: normalising a difference only rescales it.
    np.testing.assert_allclose(normalise(x, params) - normalise(x + 7.0, params), -7.0 / params.scale)


def test_targets_hit():
    x = _image(1)
    y = normalise(x, fit_normalisation(x, "minmax"))
    assert (y.min(), y.max()) == (pytest.approx(0.0, abs=1e-15), pytest.approx(1.0, abs=1e-15))

    y = normalise(x, fit_normalisation(x, "percentile"))
    np.testing.assert_allclose(np.percentile(y, [1.0, 99.0]), [0.0, 1.0], atol=1e-12)
    assert y.min() < 0.0 and y.max() > 1.0  # not clipped

    p = fit_normalisation(x, "percentile", cutoff=(0.05, 0.5))
    assert (p.offset, p.offset + p.scale) == pytest.approx(tuple(np.percentile(x, [5.0, 50.0])))

    ct = fit_normalisation(x, "window")
    np.testing.assert_allclose(normalise(np.array([-1024.0, 3071.0, 1023.5]), ct), [0.0, 1.0, 0.5])
    narrow = fit_normalisation(x, "window", window=(-100.0, 300.0))
    assert (narrow.offset, narrow.scale) == (-100.0, 400.0)

    none = fit_normalisation(x, "none")
    np.testing.assert_array_equal(normalise(x, none), x)


def test_zscore_with_mask():
    x = _image(2)
    mask = x > -500
    params = fit_normalisation(x, "zscore", mask=mask)
    y = normalise(x, params)
    assert y[mask].mean() == pytest.approx(0.0, abs=1e-12)
    assert y[mask].std() == pytest.approx(1.0, abs=1e-12)
    # Without the mask the air dominates: a different fit.
    assert fit_normalisation(x, "zscore").offset < params.offset - 500
    # Mask on the spatial axes of a channel image pools the channels.
    stacked = np.stack([x, x], axis=-1)
    pooled = fit_normalisation(stacked, "zscore", mask=mask)
    assert (pooled.offset, pooled.scale) == pytest.approx((params.offset, params.scale), rel=1e-12)


def test_std_and_var_maps_match_monte_carlo():
    x = _image(3)
    params = fit_normalisation(x, "percentile")
    rng = np.random.default_rng(42)
    mu = np.array([0.1, 0.5, 0.9])
    sigma = np.array([0.01, 0.05, 0.2])
    samples = rng.normal(mu, sigma, size=(200_000, 3))
    in_hu = denormalise(samples, params)
    np.testing.assert_allclose(in_hu.std(axis=0), denormalise_std(sigma, params), rtol=0.01)
    np.testing.assert_allclose(in_hu.var(axis=0), denormalise_var(sigma**2, params), rtol=0.02)
    np.testing.assert_allclose(in_hu.mean(axis=0), denormalise(mu, params), atol=0.01 * params.scale * 0.2)


def test_float32_stays_float32():
    x = _image(4).astype(np.float32)
    params = fit_normalisation(x, "minmax")
    y = normalise(x, params)
    assert y.dtype == np.float32
    assert denormalise(y, params).dtype == np.float32
    np.testing.assert_allclose(denormalise(y, params), x, rtol=1e-6, atol=1e-3)


def test_json_round_trip():
    params = fit_normalisation(_image(5), "zscore")
    payload = json.loads(json.dumps(params.to_dict()))
    assert payload == {"method": "zscore", "offset": params.offset, "scale": params.scale}
    assert NormalisationParams.from_dict(payload) == params
    with pytest.raises(ValueError, match="missing"):
        NormalisationParams.from_dict({"method": "zscore", "offset": 1.0})


def test_rejections():
    x = _image(6)
    with pytest.raises(ValueError, match=r"\('none', 'minmax'.*'histogram'"):
        fit_normalisation(x, "histogram")
    with pytest.raises(ValueError, match="constant"):
        fit_normalisation(np.full((4, 4, 4), 3.0), "minmax")
    with pytest.raises(ValueError, match="constant"):
        fit_normalisation(np.full((4, 4, 4), 3.0), "zscore")
    for cutoff in [(0.99, 0.01), (-0.1, 0.9), (0.1, 1.5), (0.1,)]:
        with pytest.raises(ValueError, match="cutoff"):
            fit_normalisation(x, "percentile", cutoff=cutoff)
    with pytest.raises(ValueError, match="window"):
        fit_normalisation(x, "window", window=(100.0, -100.0))
    with pytest.raises(ValueError, match="no voxel"):
        fit_normalisation(x, "zscore", mask=np.zeros(x.shape, bool))
    with pytest.raises(ValueError, match="mask"):
        fit_normalisation(x, "zscore", mask=np.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match="boolean"):
        fit_normalisation(x, "zscore", mask=np.ones(x.shape))
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_normalisation(bad, "minmax")
    with pytest.raises(ValueError, match="scale"):
        NormalisationParams("minmax", 0.0, 0.0)
    with pytest.raises(ValueError, match="method"):
        NormalisationParams("MinMax", 0.0, 1.0)


def test_tensorflow_tensors():
    tf = pytest.importorskip("tensorflow")
    params = NormalisationParams("window", -1024.0, 4095.0)
    x = tf.constant([-1024.0, 3071.0, 0.0])
    y = normalise(x, params)
    assert isinstance(y, tf.Tensor) and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy(), [0.0, 1.0, 1024.0 / 4095.0], rtol=1e-6)
    np.testing.assert_allclose(denormalise(y, params).numpy(), x.numpy(), atol=1e-3)
    np.testing.assert_allclose(denormalise_std(tf.constant([0.01]), params).numpy(), [40.95], rtol=1e-6)
