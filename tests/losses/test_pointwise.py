"""L1/L2 baselines against a NumPy reference, with mask, border and target channels."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tfuq.losses import L1Loss, L2Loss, l1, l2


def _np_reduce(values: np.ndarray, mask: np.ndarray | None, border: int) -> np.ndarray:
    crop = (slice(None), *(slice(border, n - border) for n in values.shape[1:]))
    v = values[crop]
    m = np.ones_like(v) if mask is None else mask[crop]
    axes = tuple(range(1, v.ndim))
    return (m * v).sum(axis=axes) / np.maximum(m.sum(axis=axes), 1.0)


@pytest.mark.parametrize("spatial", [(6, 5), (4, 5, 6)])
@pytest.mark.parametrize(("fn", "voxel"), [(l1, np.abs), (l2, np.square)])
def test_functions_match_numpy(spatial, fn, voxel):
    rng = np.random.default_rng(0)
    params = rng.normal(size=(3, *spatial, 3))  # extra channels are ignored
    y = rng.normal(size=(3, *spatial))
    mask = (rng.uniform(size=y.shape) > 0.3).astype("float64")
    residual = voxel(y - params[..., 0])
    assert float(fn(params, y)) == pytest.approx(residual.mean(), rel=1e-12)
    got = float(fn(params, y[..., None], mask=mask, border=1))
    assert got == pytest.approx(_np_reduce(residual, mask, 1).mean(), rel=1e-12)


def test_hand_computed_values():
    params = np.array([[[1.0, 9.0], [3.0, 9.0]]])  # (1, 2, 2): loc = [1, 3]
    y = np.array([[0.0, 0.0]])
    assert float(l1(params, y)) == pytest.approx(2.0)
    assert float(l2(params, y)) == pytest.approx(5.0)
    assert float(l2(params, y, mask=np.array([[0.0, 1.0]]))) == pytest.approx(9.0)


@pytest.mark.parametrize(("cls", "voxel"), [(L1Loss, np.abs), (L2Loss, np.square)])
def test_loss_classes_with_mask_channel(cls, voxel):
    rng = np.random.default_rng(1)
    params = rng.normal(size=(2, 6, 6, 2)).astype("float32")
    y = rng.normal(size=(2, 6, 6)).astype("float32")
    mask = (rng.uniform(size=y.shape) > 0.5).astype("float32")
    got = float(cls(border=1)(np.stack([y, mask], -1), params))
    expected = _np_reduce(voxel(y - params[..., 0]).astype("float64"), mask, 1).mean()
    assert got == pytest.approx(expected, rel=1e-5)
    per_sample = cls(reduction=None)(y[..., None], params).numpy()
    np.testing.assert_allclose(per_sample, voxel(y - params[..., 0]).mean(axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("cls", [L1Loss, L2Loss])
def test_config_round_trip(cls):
    loss = cls(border=3, name="baseline", dtype="float64")
    clone = keras.losses.deserialize(json.loads(json.dumps(keras.losses.serialize(loss))))
    assert type(clone) is cls and clone.get_config() == loss.get_config()
    assert clone.border == 3 and clone.dtype == "float64"
    with pytest.raises(ValueError, match="border"):
        cls(border=1.5)
