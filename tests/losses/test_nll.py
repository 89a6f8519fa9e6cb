"""NLL losses against scipy, the papers' hand-written formulas and a NumPy reduction."""

from __future__ import annotations

import itertools
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from tfuq.distributions import constrain, make_distribution
from tfuq.layers import DistributionHead
from tfuq.losses import NLLLoss, masked_mean, nll, nll_map

FAMILIES3 = ["normal", "laplace", "generalized_normal"]
NPARAMS = {"normal": 2, "laplace": 2, "generalized_normal": 3}


def _params(family: str, shape: tuple[int, ...], seed: int = 0, dtype="float64") -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(*shape, NPARAMS[family]))
    p[..., 1:] *= 2.0  # a spread of scales and shapes
    return p.astype(dtype)


def _np_constrained(family: str, params: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in constrain(family, tf.constant(params)).items()}


def _scipy_nll(family: str, params: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = _np_constrained(family, params)
    if family == "normal":
        return -stats.norm.logpdf(y, p["loc"], p["scale"])
    if family == "laplace":
        return -stats.laplace.logpdf(y, p["loc"], p["scale"])
    return -stats.gennorm.logpdf(y, p["power"], p["loc"], p["scale"])


def _hand_nll(family: str, params: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The papers' formulas, transcribed (Kendall & Gal; UP-GAN eq. 1)."""
    p = _np_constrained(family, params)
    r = y - p["loc"]
    if family == "normal":
        s = p["scale"]
        return 0.5 * r**2 / s**2 + np.log(s) + 0.5 * np.log(2 * np.pi)
    if family == "laplace":
        return np.abs(r) / p["scale"] + np.log(p["scale"]) + np.log(2.0)
    a, b = p["scale"], p["power"]
    return (np.abs(r) / a) ** b - np.log(b) + np.log(a) + special.gammaln(1 / b) + np.log(2.0)


def _np_reduce(values: np.ndarray, mask: np.ndarray | None, border: int) -> float:
    """NumPy reference: crop, per-sample masked mean with max(count, 1), batch mean."""
    spatial = values.ndim - 1
    crop = (slice(None), *(slice(border, n - border) for n in values.shape[1 : 1 + spatial]))
    v = values[crop]
    m = np.ones_like(v) if mask is None else mask[crop].astype(v.dtype)
    axes = tuple(range(1, v.ndim))
    per_sample = (m * v).sum(axis=axes) / np.maximum(m.sum(axis=axes), 1.0)
    return float(per_sample.mean())


@pytest.mark.parametrize("family", FAMILIES3)
def test_nll_map_matches_scipy_float64(family):
    params = _params(family, (3, 5, 6))
    y = np.random.default_rng(1).normal(size=(3, 5, 6)) * 2
    got = nll_map(family, params, y).numpy()
    np.testing.assert_allclose(got, _scipy_nll(family, params, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES3)
def test_nll_map_matches_hand_formula_and_tfd(family):
    params = _params(family, (2, 4, 4, 3), seed=3)
    y = np.random.default_rng(4).normal(size=(2, 4, 4, 3))
    got = nll_map(family, params, y).numpy()
    np.testing.assert_allclose(got, _hand_nll(family, params, y), rtol=1e-10, atol=1e-10)
    tfd_nll = -make_distribution(family, tf.constant(params)).log_prob(y).numpy()
    np.testing.assert_allclose(got, tfd_nll, rtol=1e-10, atol=1e-10)


def test_generalized_normal_is_the_paper_power_not_the_code_product():
    # beta = 3: (|r|/alpha)^3, not beta * |r|/alpha (the authors' public code).
    shift = constrain("generalized_normal", tf.zeros((1, 3)))  # beta = 2 at raw 0
    assert float(shift["power"][0]) == pytest.approx(2.0)
    raw_beta = float(special.logit((3.0 - 0.1) / 9.9) - np.log(1.9 / 8.0))
    params = np.array([[0.0, 0.0, raw_beta]])
    alpha = _np_constrained("generalized_normal", params)["scale"][0]
    y = np.array([1.7])
    got = float(nll_map("generalized_normal", params, y)[0])
    paper = (1.7 / alpha) ** 3 - np.log(3.0) + np.log(alpha) + math.lgamma(1 / 3) + np.log(2)
    product = 3.0 * 1.7 / alpha - np.log(3.0) + np.log(alpha) + math.lgamma(1 / 3) + np.log(2)
    assert got == pytest.approx(paper, rel=1e-6)
    assert abs(got - product) > 0.1


@pytest.mark.parametrize(
    ("spatial", "border", "with_mask", "channel_axis"),
    [
        ((6, 7), 0, False, False),
        ((6, 7), 1, True, True),
        ((5, 6, 7), 2, True, False),
        ((5, 6, 7), 1, False, True),
    ],
)
def test_mask_and_border_reduction_match_numpy(spatial, border, with_mask, channel_axis):
    rng = np.random.default_rng(7)
    params = _params("normal", (3, *spatial), seed=8)
    y = rng.normal(size=(3, *spatial))
    mask = (rng.uniform(size=(3, *spatial)) > 0.4).astype("float64") if with_mask else None
    if with_mask:
        mask[1] = 0.0  # one sample with an empty mask contributes 0
    y_in = y[..., None] if channel_axis else y
    got = float(nll("normal", params, y_in, mask=mask, border=border))
    expected = _np_reduce(_scipy_nll("normal", params, y), mask, border)
    assert got == pytest.approx(expected, rel=1e-10)


def test_masked_mean_ignores_non_finite_values_outside_the_mask():
    values = np.array([[1.0, np.inf, 3.0]])
    mask = np.array([[1.0, 0.0, 1.0]])
    assert float(masked_mean(values, mask)[0]) == pytest.approx(2.0)


def test_point_family_and_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="L1Loss"):
        nll("point", tf.zeros((1, 4, 4, 1)), tf.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="point"):
        NLLLoss("point")
    with pytest.raises(ValueError, match="border"):
        nll("normal", tf.zeros((1, 4, 4, 2)), tf.zeros((1, 4, 4)), border=2)
    with pytest.raises(ValueError, match="border"):
        NLLLoss("normal", border=-1)
    with pytest.raises(ValueError, match="voxel shape"):
        nll("normal", tf.zeros((1, 4, 4, 2)), tf.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match="2 parameter channels"):
        nll("normal", tf.zeros((1, 4, 4, 3)), tf.zeros((1, 4, 4)))


GRAD_GRID = list(itertools.product(FAMILIES3, [-30.0, 0.0, 30.0], [-30.0, 0.0, 30.0], [0.0, 1e-3, 1.0]))


@pytest.mark.parametrize("family", FAMILIES3)
def test_gradients_are_finite_at_extremes_float32(family):
    rows = [(s, b, r) for f, s, b, r in GRAD_GRID if f == family]
    raw = np.array([[0.0, s, b][: NPARAMS[family]] for s, b, _ in rows], "float32")
    y = np.array([r for *_, r in rows], "float32")
    params = tf.Variable(raw[:, None, :])  # (N, 1, P): N samples of one voxel
    with tf.GradientTape() as tape:
        per_voxel = nll_map(family, params, y[:, None])
        loss = tf.reduce_sum(per_voxel)
    grad = tape.gradient(loss, params).numpy()
    assert np.all(np.isfinite(per_voxel.numpy())), per_voxel.numpy()
    assert np.all(np.isfinite(grad)), (rows, grad)


def test_generalized_normal_overflow_continues_linearly_float32():
    # alpha = 1e-5, beta = 10: (r / alpha)^10 overflows float32 for r >~ 1e-1.
    raw = np.array([[0.0, -30.0, 30.0]] * 4, "float32")
    y = np.array([1e-4, 0.5, 1.0, 2.0], "float32")
    values = nll_map("generalized_normal", raw, y).numpy()
    assert np.all(np.isfinite(values)) and np.all(np.diff(values) > 0)
    # Below the cap ((1e-4 / 1e-5)^10 = 1e10 < exp(44.4)) the formula is exact.
    alpha = _np_constrained("generalized_normal", raw.astype("float64"))["scale"][0]
    exact = (1e-4 / alpha) ** 10 - np.log(10.0) + np.log(alpha) + math.lgamma(0.1) + np.log(2)
    assert values[0] == pytest.approx(exact, rel=1e-4)


def test_gradient_matches_analytic_gaussian():
    mu, s_raw, y = 0.3, 0.2, 1.1
    params = tf.Variable([[mu, s_raw]], dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(nll_map("normal", params, tf.constant([y], tf.float64)))
    g = tape.gradient(loss, params).numpy()[0]
    sigma = np.logaddexp(0, s_raw) + 1e-5
    dsigma = special.expit(s_raw)
    assert g[0] == pytest.approx(-(y - mu) / sigma**2, rel=1e-6)
    assert g[1] == pytest.approx((-((y - mu) ** 2) / sigma**3 + 1 / sigma) * dsigma, rel=1e-6)


@pytest.mark.parametrize("family", FAMILIES3)
def test_nll_loss_channels_target_and_mask(family):
    rng = np.random.default_rng(11)
    params = _params(family, (2, 6, 6), seed=12, dtype="float32")
    y = rng.normal(size=(2, 6, 6)).astype("float32")
    mask = (rng.uniform(size=(2, 6, 6)) > 0.5).astype("float32")
    loss = NLLLoss(family, border=1)
    with_mask = float(loss(np.stack([y, mask], axis=-1), params))
    assert with_mask == pytest.approx(float(nll(family, params, y, mask=mask, border=1)), rel=1e-6)
    expected = _np_reduce(_scipy_nll(family, params.astype("float64"), y), mask, 1)
    assert with_mask == pytest.approx(expected, rel=1e-4)
    no_mask = float(loss(y[..., None], params))
    assert no_mask == pytest.approx(float(loss(y, params)), rel=1e-7)
    assert no_mask == pytest.approx(float(nll(family, params, y, border=1)), rel=1e-6)
    with pytest.raises(ValueError, match="1 or 2 channels"):
        loss(np.zeros((2, 6, 6, 3), "float32"), params)


def test_nll_loss_sample_weight_and_float64():
    params = _params("normal", (2, 4, 4), seed=2)
    y = np.zeros((2, 4, 4, 1))
    per_sample = NLLLoss("normal", reduction=None, dtype="float64")(y, params).numpy()
    assert per_sample.shape == (2,) and per_sample.dtype == np.float64
    weighted = float(NLLLoss("normal", dtype="float64")(y, params, sample_weight=[1.0, 0.0]))
    assert weighted == pytest.approx(per_sample[0] / 2, rel=1e-12)


def test_nll_loss_config_round_trip_and_fit(tmp_path):
    loss = NLLLoss("generalized_normal", border=2, name="ggd")
    config = json.loads(json.dumps(keras.losses.serialize(loss)))
    clone = keras.losses.deserialize(config)
    assert isinstance(clone, NLLLoss)
    assert clone.get_config() == loss.get_config()
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, DistributionHead("generalized_normal", rank=2)(inputs))
    model.compile(optimizer="adam", loss=NLLLoss("generalized_normal", border=1))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    history = model.fit(x, np.concatenate([x, np.ones_like(x)], -1), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.loss, NLLLoss) and reloaded.loss.border == 1


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_beta_nll_value_and_gradient_match_seitzer_by_hand(beta):
    # Seitzer et al. 2022: L = stop_gradient(sigma^(2 beta)) * NLL. Oracle: scipy's Gaussian log-density
    # and the analytic gradient, weighted by sigma^(2 beta); beta = 1 gives the mean the squared
    # error's gradient (mu - y), whatever sigma.
    rng = np.random.default_rng(7)
    mu, s_raw, y = rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    params = tf.Variable(np.stack([mu, s_raw], -1)[None, :, None, :], dtype=tf.float64)  # (1, 6, 1, 2)
    y_true = tf.constant(np.stack([y, np.ones(6)], -1)[None, :, None, :], tf.float64)
    loss = NLLLoss("normal", beta=beta, dtype="float64")
    with tf.GradientTape() as tape:
        value = loss(y_true, params)
    grad = tape.gradient(value, params).numpy()[0, :, 0]
    sigma = np.logaddexp(0, s_raw) + 1e-5
    weight = sigma ** (2 * beta)
    expected = np.mean(-weight * stats.norm.logpdf(y, mu, sigma))
    assert float(value) == pytest.approx(expected, rel=1e-9)
    np.testing.assert_allclose(grad[:, 0], weight * (mu - y) / sigma**2 / 6, rtol=1e-9)
    if beta == 1.0:
        np.testing.assert_allclose(grad[:, 0], (mu - y) / 6, rtol=1e-9)
    clone = keras.losses.deserialize(json.loads(json.dumps(keras.losses.serialize(loss))))
    assert clone.get_config() == loss.get_config() and clone.beta == beta


@pytest.mark.parametrize("beta", [-0.1, 1.5, True])
def test_beta_outside_0_1_is_refused(beta):
    with pytest.raises(ValueError, match="beta must be in"):
        NLLLoss("normal", beta=beta)
