"""[INFERENCE] border: window edges dropped before blending, coverage kept, one-line refusals.

Oracles: the identity and x + 1 reproduce any volume exactly for any border; a
predictor that is wrong only within ``border`` of its window edges is exact
with the border and wrong without it; the kept parts of the windows are
counted voxel by voxel.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from uq_job_setup import tiny_config
from utils import predict_windows as sliding_window_predict

from tfuq.data.normalisation import NormalisationParams
from tfuq.data.windows import BLENDING_MODES, check_border, window_grid
from tfuq.errors import UserError
from tfuq.inference import count_windows, mc_predict_volume
from tfuq.inference.prediction import PredictionSettings, predict_subject, prediction_settings
from tfuq.model_store.trained import TrainedModel

WRONG = 100.0


def _edge_mask(window: tuple[int, ...], border: tuple[int, ...]) -> np.ndarray:
    """True within ``border`` of a window edge (an independent NumPy construction)."""
    mask = np.zeros(window, bool)
    for axis, (w, b) in enumerate(zip(window, border)):
        index = [slice(None)] * len(window)
        for part in (slice(0, b), slice(w - b, w)):
            index[axis] = part
            mask[tuple(index)] = True
    return mask


def _edge_wrong(border: tuple[int, ...]):
    def predict(batch: np.ndarray) -> np.ndarray:
        return batch + WRONG * _edge_mask(batch.shape[1:-1], border)[np.newaxis, ..., np.newaxis]

    return predict


@st.composite
def _geometry(draw):
    window = draw(st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 5)))
    border = tuple(draw(st.integers(0, (w - 1) // 2)) for w in window)
    shape = draw(st.tuples(st.integers(1, 14), st.integers(1, 14), st.integers(1, 7)))
    return shape, window, border


@settings(max_examples=60, deadline=None)
@given(
    geometry=_geometry(),
    overlap=st.sampled_from((0.0, 0.25, 0.5, 0.75)),
    blending=st.sampled_from(BLENDING_MODES),
    shift=st.sampled_from((0.0, 1.0)),
    seed=st.integers(0, 2**16),
)
def test_identity_and_shift_reproduce_any_volume_with_any_border(geometry, overlap, blending, shift, seed):
    shape, window, border = geometry
    vol = np.random.default_rng(seed).normal(size=(*shape, 2))
    out = sliding_window_predict(
        vol, lambda x: x + shift, window, overlap=overlap, blending=blending, border=border, batch_size=3
    )
    np.testing.assert_allclose(out, vol + shift, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(geometry=_geometry(), overlap=st.sampled_from((0.0, 0.25, 0.5, 0.75)))
def test_kept_parts_cover_every_voxel_and_drop_the_border(geometry, overlap):
    shape, window, border = geometry
    grid = window_grid(shape, window, overlap, border)
    kept = np.zeros(grid.padded_shape, int)
    for origin in grid.origins:
        target, local = grid.kept(origin)
        kept[target] += 1
        for o, w, b, n, part in zip(origin, window, border, grid.padded_shape, local):
            assert part.start == (0 if o == 0 else b)
            assert part.stop == (w if o + w == n else w - b)
    assert kept.min() >= 1  # the whole padded array, so every voxel of the volume too
    for n, w, b, (lo, hi) in zip(shape, window, border, grid.padding):
        assert lo >= b and hi >= b and lo + hi == 2 * b + max(0, w - n - 2 * b)
    # a window side on the padded edge keeps its border band, but only padding lies there
    inside = np.zeros(grid.padded_shape, bool)
    inside[grid.interior] = True
    band = _edge_mask(grid.window, border)
    for origin in grid.origins:
        target, local = grid.kept(origin)
        assert not np.any(band[local] & inside[target])


@pytest.mark.parametrize("blending", BLENDING_MODES)
@pytest.mark.parametrize(
    ("shape", "window", "border", "overlap"),
    [
        ((19, 11, 9), (8, 8, 6), (2, 2, 1), 0.5),
        ((19, 11, 9), (8, 8, 6), (3, 1, 2), 0.0),  # stride capped at window - 2 * border
        ((3, 5, 2), (8, 8, 4), (2, 3, 1), 0.25),  # smaller than the window
        ((12, 10, 4), (6, 6, 1), (2, 2, 0), 0.5),  # 2D windows
    ],
)
def test_predictor_wrong_at_window_edges_is_exact_only_with_the_border(
    shape, window, border, overlap, blending
):
    vol = np.random.default_rng(0).uniform(-3, 3, size=(*shape, 1))
    wrong = _edge_wrong(border)
    exact = sliding_window_predict(vol, wrong, window, overlap=overlap, blending=blending, border=border)
    np.testing.assert_allclose(exact, vol, rtol=0, atol=1e-9)
    plain = sliding_window_predict(vol, wrong, window, overlap=overlap, blending=blending)
    assert np.abs(plain - vol).max() > WRONG / 2


class _EdgeWrongHead(keras.layers.Layer):
    """Normal-head parameters ``(loc, 0)``: loc = x, plus WRONG within ``border`` of the window edges."""

    def __init__(self, border: tuple[int, int, int], **kwargs):
        super().__init__(**kwargs)
        self.border = tuple(border)

    def call(self, x):
        shape = tf.shape(x)
        edge = tf.zeros(shape[1:4], tf.bool)
        for axis, b in enumerate(self.border):
            n = shape[axis + 1]
            index = tf.range(n)
            hit = (index < b) | (index >= n - b)
            edge |= tf.reshape(hit, [-1 if a == axis else 1 for a in range(3)])
        loc = x[..., :1] + WRONG * tf.cast(edge, x.dtype)[tf.newaxis, ..., tf.newaxis]
        return tf.concat([loc, tf.zeros_like(loc)], axis=-1)


def _edge_wrong_model(border: tuple[int, int, int]) -> keras.Model:
    inputs = keras.Input((None, None, None, 1))
    return keras.Model(inputs, _EdgeWrongHead(border)(inputs))


def test_mc_windows_and_predict_subject_drop_the_border() -> None:
    border, window = (2, 1, 2), (8, 6, 8)
    model = _edge_wrong_model(border)
    vol = np.random.default_rng(1).normal(size=(13, 9, 10, 1)).astype(np.float32)
    options = {"mc_samples": 1, "window": window, "batch_size": 3}
    maps = mc_predict_volume(model, vol, "normal", border=border, **options)
    np.testing.assert_allclose(maps["mean"], vol[..., 0], atol=1e-5)
    np.testing.assert_allclose(maps["epistemic_var"], 0.0, atol=1e-6)
    plain = mc_predict_volume(model, vol, "normal", **options)
    assert np.abs(plain["mean"] - vol[..., 0]).max() > WRONG / 2
    assert (
        count_windows(vol.shape[:3], window, 0.5, border)
        == window_grid(vol.shape[:3], window, 0.5, border).num_windows
    )
    member = TrainedModel(Path("unused"), model, NormalisationParams("none", 0.0, 1.0))
    settings_ = PredictionSettings(family="normal", mc_samples=1, window=window, batch_size=3, border=border)
    merged = predict_subject([member], vol, settings_)
    np.testing.assert_allclose(merged["mean"], vol[..., 0], atol=1e-5)


def test_check_border_values_and_one_line_refusals() -> None:
    assert check_border(2, (8, 8, 1)) == (2, 2, 0)  # one value: not along a 2D window's slice axis
    assert check_border((3,), (8, 7, 1)) == (3, 3, 0)
    assert check_border((1, 0, 2), (4, 4, 5)) == (1, 0, 2)
    for border, window in [(4, (8, 8, 8)), ((1, 1, 1), (8, 8, 1)), ((0, 3, 0), (6, 5, 6))]:
        with pytest.raises(ValueError, match=r"^Expected \[INFERENCE\] border smaller than half") as info:
            check_border(border, window)
        assert "\n" not in str(info.value)
    for bad in [-1, (1, 2), 1.5, (1, -1, 0)]:
        with pytest.raises(ValueError, match=r"\[INFERENCE\] border"):
            check_border(bad, (8, 8, 8))
    with pytest.raises(ValueError, match=r"\[INFERENCE\] border"):
        sliding_window_predict(np.zeros((4, 4, 4, 1)), lambda x: x, 4, border=2)


def test_tfuq_infer_settings_read_the_border(tmp_path: Path) -> None:
    assert prediction_settings(tiny_config(tmp_path)).border == (0, 0, 0)
    assert prediction_settings(tiny_config(tmp_path, ["INFERENCE.border=3"])).border == (3, 3, 3)
    two_d = ["INFERENCE.border=3", "INFERENCE.spatial_window_size=16, 16"]
    assert prediction_settings(tiny_config(tmp_path, two_d)).border == (3, 3, 0)
    with pytest.raises(
        UserError, match=r"^Expected \[INFERENCE\] border smaller than half the window"
    ) as info:
        prediction_settings(tiny_config(tmp_path, ["INFERENCE.border=1, 8, 1"]))
    assert "\n" not in str(info.value) and "window=(24, 16, 32)" in str(info.value)
