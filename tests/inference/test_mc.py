"""MC whole-volume prediction against independent oracles: per-pass decompose, analytic dropout
variance, brute-force mixture blending, deterministic models, BatchNorm, memory bounds."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfuq.data.windows import blending_weights, window_grid
from tfuq.distributions import mean as family_mean
from tfuq.distributions import variance as family_variance
from tfuq.inference.decomposition import decompose
from tfuq.inference.mc import mc_predict_volume, mc_window_moments, sample_plan, seeded_generators
from tfuq.layers import DistributionHead, MCSpatialDropout2D, MCSpatialDropout3D, mc_sampling

KEYS = ("mean", "epistemic_var", "aleatoric_var", "total_var")


def _model(rate: float, *, kernel: int = 3, channels: int = 6, batchnorm: bool = False, seed: int = 0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, None, 1))
    h = keras.layers.Conv3D(channels, kernel, padding="same", activation="relu", name="features")(inp)
    if batchnorm:
        bn = keras.layers.BatchNormalization(name="bn")
        h = bn(h)
    h = MCSpatialDropout3D(rate, seed=seed + 1, name="drop")(h)
    out = DistributionHead("normal", name="head")(h)
    model = keras.Model(inp, out)
    if batchnorm:
        bn.moving_mean.assign(np.full(channels, 0.7, np.float32))
        bn.moving_variance.assign(np.full(channels, 4.0, np.float32))
    return model


def _volume(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(*shape, 1)).astype(np.float32)


def _passes(model, window_input, mc_samples):
    """Oracle: T separate forward calls on one window with MC sampling on, stacked."""
    with mc_sampling(model):
        forward = tf.function(lambda x: model(x, training=False))
        return np.stack([forward(window_input[None])[0].numpy() for _ in range(mc_samples)])


def test_single_window_matches_decompose_of_independent_passes():
    model = _model(0.3)
    vol = _volume((8, 7, 6))
    maps = mc_predict_volume(model, vol, "normal", mc_samples=12, window=(8, 7, 6), batch_size=1, seed=5)
    with seeded_generators(model, 5):
        samples = _passes(model, vol, 12)
    expected = decompose("normal", samples.astype(np.float64))
    for key in KEYS:
        assert maps[key].shape == (8, 7, 6) and maps[key].dtype == np.float32
        np.testing.assert_allclose(maps[key], expected[key].numpy(), rtol=2e-5, atol=1e-6)
    assert maps["epistemic_var"].max() > 1e-4  # dropout really sampled


def test_overlapping_windows_blend_as_a_mixture():
    """Oracle: per-window decompose of separate passes, blended by the law of total variance in float64."""
    model = _model(0.4, kernel=3)
    vol = _volume((10, 7, 3), seed=1)
    window, overlap, mc_samples = (6, 4, 3), 0.5, 6
    maps = mc_predict_volume(
        model, vol, "normal", mc_samples=mc_samples, window=window, overlap=overlap, batch_size=1, seed=9
    )
    grid = window_grid(vol.shape[:3], window, overlap)
    w = blending_weights(window, "gaussian")
    wsum, m1, epi_w, alea_w = (np.zeros(vol.shape[:3]) for _ in range(4))
    window_moments = []
    with seeded_generators(
        model, 9
    ):  # same order as the implementation: windows in grid order, one pass per call
        for origin in grid.origins:
            sl = grid.slices(origin)
            d = {k: v.numpy() for k, v in decompose("normal", _passes(model, vol[sl], mc_samples)).items()}
            window_moments.append((sl, d))
            wsum[sl] += w
            m1[sl] += w * d["mean"]
    mean = m1 / wsum
    for sl, d in window_moments:
        epi_w[sl] += w * (d["epistemic_var"] + (d["mean"] - mean[sl]) ** 2)
        alea_w[sl] += w * d["aleatoric_var"]
    expected = {"mean": mean, "epistemic_var": epi_w / wsum, "aleatoric_var": alea_w / wsum}
    expected["total_var"] = expected["epistemic_var"] + expected["aleatoric_var"]
    for key in KEYS:
        np.testing.assert_allclose(maps[key], expected[key], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps["total_var"], maps["epistemic_var"] + maps["aleatoric_var"], rtol=1e-6)
    # windows disagree near their borders (zero-padded 3x3x3 convs): their spread adds to the epistemic part
    averaged = np.zeros(vol.shape[:3])
    for sl, d in window_moments:
        averaged[sl] += w * d["epistemic_var"]
    assert grid.num_windows > 2 and (maps["epistemic_var"] - averaged / wsum).max() > 1e-4


def test_rate_zero_is_the_deterministic_prediction_with_zero_epistemic():
    model = _model(0.0, kernel=1)  # pointwise: windows agree with the whole-volume prediction
    vol = _volume((9, 11, 5), seed=2)
    maps = mc_predict_volume(model, vol, "normal", mc_samples=5, window=(4, 6, 3), overlap=0.5, batch_size=4)
    params = model(vol[None], training=False)[0]
    np.testing.assert_allclose(maps["mean"], family_mean("normal", params).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["aleatoric_var"], family_variance("normal", params).numpy(), rtol=1e-5)
    np.testing.assert_allclose(maps["epistemic_var"], 0.0, atol=1e-10)
    np.testing.assert_allclose(maps["total_var"], maps["aleatoric_var"], rtol=1e-6)


def test_batchnorm_stays_in_inference_mode():
    model = _model(0.0, kernel=1, batchnorm=True)
    vol = _volume((6, 6, 4), seed=3)
    maps = mc_predict_volume(model, vol, "normal", mc_samples=3, window=(6, 6, 4), batch_size=3)
    inference = family_mean("normal", model(vol[None], training=False)[0]).numpy()
    training = family_mean("normal", model(vol[None], training=True)[0]).numpy()
    np.testing.assert_allclose(maps["mean"], inference, rtol=1e-5, atol=1e-6)
    assert np.abs(training - inference).max() > 1e-2  # the two BatchNorm modes differ on this model


def test_tiled_samples_are_independent_and_match_the_analytic_dropout_variance():
    """loc = b + sum_c W_c h_c z_c / (1 - p), z_c ~ Bernoulli(1 - p): Var = p/(1-p) sum_c W_c^2 h_c^2."""
    rate = 0.3
    model = _model(rate, kernel=1, channels=8)
    vol = _volume((5, 4, 3), seed=4)
    features = keras.Model(model.input, model.get_layer("features").output)(vol[None])[0].numpy()
    kernel = model.get_layer("head").get_weights()[0].reshape(8, 2)[:, 0]
    analytic = rate / (1 - rate) * np.sum(kernel**2 * features**2, axis=-1)
    maps = mc_predict_volume(model, vol, "normal", mc_samples=400, window=(5, 4, 3), batch_size=8, seed=1)
    ratio = maps["epistemic_var"].mean() / analytic.mean()
    assert 0.85 < ratio < 1.15, ratio
    # one forward call with 4 tiled copies must give 4 different masks
    one_call = mc_predict_volume(model, vol, "normal", mc_samples=4, window=(5, 4, 3), batch_size=4, seed=2)
    live = analytic > 1e-3
    assert np.all(one_call["epistemic_var"][live] > 0)


def test_window_moments_pool_every_pass_of_every_window():
    """Fake stochastic predictor: random output per row, recorded; oracle groups the rows by window."""
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(3, 2, 2, 1, 1)).astype(np.float32)
    log: list[tuple[np.ndarray, np.ndarray]] = []

    def fake(x):
        out = rng.normal(size=(*x.shape[:-1], 2)).astype(np.float32)
        log.append((x.copy(), out))
        return out

    state = mc_window_moments(fake, windows, "normal", 7, samples_per_call=3, dtype=tf.float64)
    assert [len(x) for x, _ in log] == [9, 9, 3]  # 3 + 3 + 1 copies of 3 windows
    for b in range(3):
        rows = [o[i] for x, o in log for i in range(len(x)) if np.array_equal(x[i], windows[b])]
        assert len(rows) == 7
        expected = decompose("normal", np.stack(rows).astype(np.float64))
        np.testing.assert_allclose(state.mean[b].numpy(), expected["mean"].numpy(), rtol=1e-6)
        np.testing.assert_allclose((state.m2[b] / 7).numpy(), expected["epistemic_var"].numpy(), rtol=1e-5)
        np.testing.assert_allclose(state.aleatoric[b].numpy(), expected["aleatoric_var"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("samples_per_call", [1, 2, 5])
def test_memory_does_not_grow_with_the_number_of_samples(samples_per_call):
    windows = np.zeros((2, 3, 3, 2, 1), np.float32)
    shapes, largest = set(), set()
    for mc_samples in (5, 40, 97):
        rows: list[int] = []

        def fake(x, rows=rows):
            rows.append(len(x))
            return np.zeros((*x.shape[:-1], 2), np.float32)

        state = mc_window_moments(fake, windows, "normal", mc_samples, samples_per_call=samples_per_call)
        assert sum(rows) == 2 * mc_samples and int(state.count) == mc_samples
        shapes.add(tuple(tuple(t.shape) for t in state))
        largest.add(max(rows))
    assert shapes == {((), (2, 3, 3, 2), (2, 3, 3, 2), (2, 3, 3, 2))}  # accumulator size independent of T
    assert largest == {2 * samples_per_call}  # forward-call size independent of T


def test_sample_plan_budget():
    for t in (1, 2, 3, 7, 50):
        for b in (1, 2, 4, 8, 9):
            windows, samples = sample_plan(t, b)
            assert windows * samples <= b and 1 <= samples <= t and windows >= 1
    assert sample_plan(50, 4) == (1, 4) and sample_plan(2, 8) == (4, 2)


def test_seed_reproducible_and_generator_state_restored():
    model = _model(0.5)
    vol = _volume((6, 6, 6), seed=5)
    before = model.get_layer("drop").seed_generator.state.numpy().copy()
    a = mc_predict_volume(model, vol, "normal", mc_samples=4, window=4, batch_size=2, seed=11)
    b = mc_predict_volume(model, vol, "normal", mc_samples=4, window=4, batch_size=2, seed=11)
    np.testing.assert_array_equal(model.get_layer("drop").seed_generator.state.numpy(), before)
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    c = mc_predict_volume(model, vol, "normal", mc_samples=4, window=4, batch_size=2, seed=12)
    assert not np.array_equal(a["epistemic_var"], c["epistemic_var"])
    # MC sampling is off again afterwards
    assert model.get_layer("drop").mc_active is False


def test_two_dimensional_model_on_slice_windows():
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 1))
    h = keras.layers.Conv2D(4, 1, activation="relu")(inp)
    h = MCSpatialDropout2D(0.0)(h)
    model = keras.Model(inp, DistributionHead("normal", rank=2)(h))
    vol = _volume((7, 5, 3), seed=6)
    maps = mc_predict_volume(model, vol, "normal", mc_samples=2, window=(4, 4, 1), batch_size=4)
    slices = np.moveaxis(vol, 2, 0)  # (Z, X, Y, 1): every axial slice through the 2D model
    expected = np.moveaxis(family_mean("normal", model(slices, training=False)).numpy(), 0, 2)
    np.testing.assert_allclose(maps["mean"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2D windows"):
        mc_predict_volume(model, vol, "normal", mc_samples=2, window=(4, 4, 2))


def test_invalid_arguments():
    model = _model(0.1, kernel=1)
    vol = _volume((4, 4, 4))
    with pytest.raises(ValueError, match="mc_samples"):
        mc_predict_volume(model, vol, "normal", mc_samples=0, window=4)
    with pytest.raises(ValueError, match="3 parameter channels"):
        mc_predict_volume(model, vol, "generalized_normal", mc_samples=2, window=4)
    with pytest.raises(ValueError, match="family"):
        mc_predict_volume(model, vol, "gamma", mc_samples=2, window=4)
    with pytest.raises(ValueError, match="X, Y, Z, C"):
        mc_predict_volume(model, vol[..., 0], "normal", mc_samples=2, window=4)


def test_deterministic_model_warns_and_has_zero_epistemic(caplog):
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, None, 1))
    model = keras.Model(inp, DistributionHead("normal")(keras.layers.Conv3D(3, 1)(inp)))
    vol = _volume((4, 4, 4), seed=7)
    with caplog.at_level("WARNING", logger="tfuq.inference.mc"):
        maps = mc_predict_volume(model, vol, "normal", mc_samples=3, window=4)
    assert "no MC-sampling layer" in caplog.text
    np.testing.assert_allclose(maps["epistemic_var"], 0.0, atol=1e-12)


# [INFERENCE] border. Oracles: x + 1 is reproduced exactly with any border; a head wrong only within
# `border` of its window edges (test_window_border's model: loc = x + WRONG there) is exact with the
# border and wrong without it.


def _shift_model() -> keras.Model:
    """Normal-head parameters ``(x + 1, 0)`` from two Rescaling layers."""
    inputs = keras.Input((None, None, None, 1))
    loc = keras.layers.Rescaling(1.0, offset=1.0)(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([loc, keras.layers.Rescaling(0.0)(inputs)]))


@pytest.mark.parametrize(
    ("shape", "window", "border", "overlap", "blending"),
    [
        ((11, 9, 7), (6, 6, 5), 2, 0.5, "gaussian"),
        ((11, 9, 7), (6, 5, 4), (1, 2, 0), 0.0, "hann"),  # stride capped at window - 2 * border
        ((3, 4, 2), (6, 6, 4), (2, 1, 1), 0.25, "constant"),  # smaller than the window
        ((9, 8, 3), (6, 6, 1), 2, 0.5, "gaussian"),  # 2D windows: the slice axis keeps its voxel
    ],
)
def test_shift_model_is_exact_with_any_border(shape, window, border, overlap, blending):
    vol = _volume(shape, seed=3)
    maps = mc_predict_volume(
        _shift_model(),
        vol,
        "normal",
        mc_samples=1,
        window=window,
        overlap=overlap,
        blending=blending,
        border=border,
        batch_size=3,
    )
    aleatoric = family_variance("normal", tf.zeros((1, 2))).numpy()[0]  # raw scale 0 everywhere
    for key in KEYS:
        assert maps[key].shape == shape and maps[key].dtype == np.float32
    np.testing.assert_allclose(maps["mean"], vol[..., 0] + 1.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(maps["epistemic_var"], 0.0, atol=1e-10)
    np.testing.assert_allclose(maps["aleatoric_var"], aleatoric, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "window", "border", "overlap"),
    [((13, 9, 10), (8, 6, 8), (2, 1, 2), 0.5), ((12, 11, 5), (7, 7, 4), (3, 2, 1), 0.0)],
)
def test_model_wrong_at_window_edges_is_exact_only_with_the_border(shape, window, border, overlap):
    from test_window_border import WRONG, _edge_wrong_model  # same folder: on sys.path under pytest

    model = _edge_wrong_model(border)
    vol = _volume(shape, seed=4)
    options = {"mc_samples": 1, "window": window, "overlap": overlap, "batch_size": 4}
    maps = mc_predict_volume(model, vol, "normal", border=border, **options)
    np.testing.assert_allclose(maps["mean"], vol[..., 0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(maps["epistemic_var"], 0.0, atol=1e-6)
    plain = mc_predict_volume(model, vol, "normal", **options)
    assert np.abs(plain["mean"] - vol[..., 0]).max() > WRONG / 2
    assert plain["epistemic_var"].max() > 1.0  # overlapping windows disagree where one is wrong


def test_border_with_minimum_or_constant_padding():
    """ "minimum" and "constant" padding both fill with the channel minima; the border changes the maps."""
    model = _model(0.4)
    vol = _volume((10, 9, 6), seed=5)
    options = {"mc_samples": 3, "window": (6, 6, 4), "border": (2, 1, 1), "batch_size": 2, "seed": 7}
    ours = mc_predict_volume(model, vol, "normal", **options)
    theirs = mc_predict_volume(model, vol, "normal", padding_mode="constant", **options)
    for key in KEYS:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)
    plain = mc_predict_volume(model, vol, "normal", **{**options, "border": 0})
    assert np.abs(plain["mean"] - ours["mean"]).max() > 1e-4  # the border changed something


def test_bad_border_is_refused():
    with pytest.raises(ValueError, match=r"\[INFERENCE\] border"):
        mc_predict_volume(_shift_model(), _volume((6, 6, 6)), "normal", mc_samples=1, window=4, border=2)


def test_a_model_returning_nan_is_refused_with_its_name() -> None:
    from tfuq.layers import MCSpatialDropout3D

    x = keras.Input((8, 8, 8, 1))
    h = keras.layers.Conv3D(2, 1)(MCSpatialDropout3D(0.5)(keras.layers.Conv3D(4, 1)(x)))
    model = keras.Model(x, keras.layers.Rescaling(float("nan"))(h))
    volume = np.ones((8, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="model returned NaN or infinite values"):
        mc_predict_volume(model, volume, "normal", mc_samples=3, window=8, batch_size=3, seed=0)
