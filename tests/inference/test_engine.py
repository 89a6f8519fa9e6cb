"""The window engine (blend_windows) with plain predictors: exact reconstruction oracles, seams, padding,
blending maths, moment keys."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from utils import predict_windows as sliding_window_predict

from tfuq.data.windows import BLENDING_MODES, blending_weights, window_grid
from tfuq.inference.engine import blend_windows

OVERLAPS = (0.0, 0.25, 0.5, 0.75)


def _identity(x):
    return x


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 13), st.integers(1, 13), st.integers(1, 7)),
    window=st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 4)),
    channels=st.integers(1, 2),
    overlap=st.sampled_from(OVERLAPS),
    blending=st.sampled_from(BLENDING_MODES),
    batch_size=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_identity_reproduces_any_volume(shape, window, channels, overlap, blending, batch_size, seed):
    vol = np.random.default_rng(seed).normal(size=(*shape, channels)).astype(np.float32)
    out = sliding_window_predict(
        vol, _identity, window, overlap=overlap, blending=blending, batch_size=batch_size
    )
    assert out.shape == vol.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, vol, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blending", BLENDING_MODES)
@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize(
    ("shape", "window"),
    [
        ((17, 9, 6), (8, 8, 4)),  # odd sizes, several windows per axis
        ((3, 5, 2), (8, 8, 4)),  # smaller than the window on every axis
        ((12, 11, 5), (6, 6, 1)),  # 2D windows (slice-wise)
        ((1, 10, 10), (1, 4, 4)),  # 2D windows along another axis
    ],
)
def test_affine_predictor_everywhere(shape, window, overlap, blending):
    rng = np.random.default_rng(1)
    vol = rng.uniform(-3, 3, size=(*shape, 1)).astype(np.float64)
    out = sliding_window_predict(
        vol, lambda x: 2.0 * x + 1.0, window, overlap=overlap, blending=blending, batch_size=3
    )
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, 2.0 * vol + 1.0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blending", BLENDING_MODES)
def test_constant_output_has_no_seams(blending):
    vol = np.random.default_rng(2).normal(size=(19, 14, 7, 1)).astype(np.float32)

    def constant(x):
        return np.full((*x.shape[:-1], 3), [4.25, -1.5, 0.0], np.float32)

    out = sliding_window_predict(vol, constant, (8, 6, 4), overlap=0.5, blending=blending)
    assert out.shape == (19, 14, 7, 3)
    np.testing.assert_allclose(out, np.broadcast_to([4.25, -1.5, 0.0], out.shape), rtol=0, atol=1e-6)


def test_blending_is_the_weighted_mean_of_window_predictions():
    """Oracle: per-voxel weighted average of each window's (distinct) output, computed by brute force."""
    vol = np.zeros((7, 5, 1, 1))
    window, overlap = (4, 4, 1), 0.5
    grid = window_grid(vol.shape[:3], window, overlap)
    weights = blending_weights(window, "gaussian")
    calls = []

    def window_id(x):  # each window predicts its own index: outputs disagree on overlaps
        first = len(calls)
        calls.append(len(x))
        return np.arange(first, first + len(x), dtype=np.float64)[:, None, None, None, None] * np.ones(
            (*x.shape[:-1], 1)
        )

    out = sliding_window_predict(vol, window_id, window, overlap=overlap, batch_size=1)
    num = np.zeros(grid.padded_shape)
    den = np.zeros(grid.padded_shape)
    for k, origin in enumerate(grid.origins):
        num[grid.slices(origin)] += k * weights
        den[grid.slices(origin)] += weights
    np.testing.assert_allclose(out[..., 0], num / den, rtol=1e-12)
    assert len(calls) == grid.num_windows == 3 * 2


def test_padding_reaches_the_predictor_and_is_cropped():
    vol = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1, 1) + 10.0
    seen = []

    def record(x):
        seen.append(x.copy())
        return x

    out = sliding_window_predict(vol, record, (4, 4, 2), pad_mode="constant", pad_value=-7.0)
    np.testing.assert_array_equal(out, vol)
    (batch,) = seen
    assert batch.shape == (1, 4, 4, 2, 1)
    assert (batch == -7.0).sum() == 4 * 4 * 2 - 6
    default = []
    sliding_window_predict(vol, lambda x: default.append(x.copy()) or x, (4, 4, 2))
    assert default[0].min() == vol.min()  # default pad value: the channel minimum


def test_tensor_predictor_and_batch_sizes_agree():
    vol = np.random.default_rng(3).normal(size=(10, 9, 3, 2)).astype(np.float32)
    kernel = tf.constant([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])

    def linear(x):  # returns a tf.Tensor, 2 -> 3 channels
        return tf.einsum("bxyzc,ck->bxyzk", tf.convert_to_tensor(x), kernel)

    a = sliding_window_predict(vol, linear, (4, 4, 2), batch_size=1)
    b = sliding_window_predict(vol, linear, (4, 4, 2), batch_size=7)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a, vol @ kernel.numpy(), rtol=1e-5, atol=1e-5)


def test_integer_volume_becomes_float():
    vol = np.arange(4 * 4 * 4).reshape(4, 4, 4, 1)
    out = sliding_window_predict(vol, _identity, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, vol, atol=1e-5)


@pytest.mark.parametrize(
    ("volume", "predictor", "message"),
    [
        (np.zeros((4, 4, 4)), _identity, "X, Y, Z, C"),
        (np.full((4, 4, 4, 1), np.nan), _identity, "finite"),
        (np.zeros((4, 4, 4, 1)), lambda x: x[:, :1], "must have shape"),
        (np.zeros((4, 4, 4, 1)), lambda x: x[:, :, :, :1], "must have shape"),
        (np.zeros((4, 4, 4, 1)), lambda x: x * np.nan, "NaN"),
    ],
)
def test_invalid_inputs(volume, predictor, message):
    with pytest.raises(ValueError, match=message):
        sliding_window_predict(volume, predictor, 2)


def test_invalid_settings():
    vol = np.zeros((4, 4, 4, 1))
    with pytest.raises(ValueError, match="blending"):
        sliding_window_predict(vol, _identity, 2, blending="linear")
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(vol, _identity, 2, overlap=1.0)
    with pytest.raises(ValueError, match="windows_per_call"):
        sliding_window_predict(vol, _identity, 2, batch_size=0)


def test_windows_reach_the_predictor_in_grid_order():
    """Each call gets at most windows_per_call windows, cut exactly at the grid's origins."""
    vol = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4, 1)
    grid = window_grid(vol.shape[:3], (4, 3, 4), overlap=0.5)
    seen: list[np.ndarray] = []

    def record(inputs):
        (batch,) = inputs
        assert batch.shape[1:] == (4, 3, 4, 1) and len(batch) <= 3
        seen.extend(batch)
        return {"y": batch}

    done: list[int] = []
    blend_windows(vol, record, (4, 3, 4), overlap=0.5, windows_per_call=3, progress=done.append)
    assert len(seen) == grid.num_windows == 2 * 3 * 1 == sum(done)  # stride floor(3 * 0.5) = 1 on axis 1
    for o, w in zip(grid.origins, seen):
        np.testing.assert_array_equal(w, vol[o[0] : o[0] + 4, o[1] : o[1] + 3, o[2] : o[2] + 4])


def test_moment_maps_blend_as_the_mixture_of_the_windows():
    """Oracle: brute-force mixture moments per voxel over the covering windows (weights u_i)."""
    rng = np.random.default_rng(4)
    vol = np.zeros((9, 7, 1, 1), np.float32)
    window, overlap = (4, 4, 1), 0.5
    grid = window_grid(vol.shape[:3], window, overlap)
    weights = blending_weights(window, "hann")
    answers = {
        tuple(o): {
            k: rng.uniform(0.1, 2.0, window) for k in ("mean", "epistemic_var", "aleatoric_var", "alpha")
        }
        for o in grid.origins
    }
    origins = iter(grid.origins)

    def predictor(inputs):
        picked = [answers[tuple(next(origins))] for _ in range(len(inputs[0]))]
        return {
            k: np.stack([p[k] for p in picked]) for k in ("mean", "epistemic_var", "aleatoric_var", "alpha")
        }

    maps = blend_windows(
        vol, predictor, window, overlap=overlap, blending="hann", windows_per_call=2, dtype=np.float64
    )
    assert set(maps) == {"mean", "epistemic_var", "aleatoric_var", "total_var", "alpha"}
    w = np.zeros(grid.padded_shape)
    mean = np.zeros(grid.padded_shape)
    for o in grid.origins:
        w[grid.slices(o)] += weights
        mean[grid.slices(o)] += weights * answers[tuple(o)]["mean"]
    mean /= w
    epi, alea, alpha = (np.zeros(grid.padded_shape) for _ in range(3))
    for o in grid.origins:
        a, s = answers[tuple(o)], grid.slices(o)
        u = weights / w[s]
        epi[s] += u * (a["epistemic_var"] + (a["mean"] - mean[s]) ** 2)
        alea[s] += u * a["aleatoric_var"]
        alpha[s] += u * a["alpha"]
    for key, expected in (("mean", mean), ("epistemic_var", epi), ("aleatoric_var", alea), ("alpha", alpha)):
        np.testing.assert_allclose(maps[key], expected, rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(maps["total_var"], epi + alea, rtol=1e-10)


@pytest.mark.parametrize(
    ("predictor", "message"),
    [
        (lambda xs: xs[0], "dict of maps"),
        (lambda xs: {}, "dict of maps"),
        (lambda xs: {"mean": xs[0][..., 0], "aleatoric_var": xs[0][..., 0]}, "together"),
        (lambda xs: {"y": xs[0][:, :1]}, "must have shape"),
    ],
)
def test_bad_predictor_answers_are_refused(predictor, message):
    with pytest.raises(ValueError, match=message):
        blend_windows(np.zeros((4, 4, 4, 1), np.float32), predictor, 2)


def test_predictor_keys_must_not_change_between_calls():
    calls = []

    def fickle(xs):
        calls.append(1)
        return {"y" if len(calls) == 1 else "z": xs[0]}

    with pytest.raises(ValueError, match="same maps"):
        blend_windows(np.zeros((4, 4, 4, 1), np.float32), fickle, 2, windows_per_call=1)
