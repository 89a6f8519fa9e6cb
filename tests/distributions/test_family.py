"""Oracle tests of tfuq.distributions.family against scipy.stats and hand formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from tfuq.distributions import (
    BETA_MAX,
    BETA_MIN,
    FAMILIES,
    SCALE_EPS,
    check_family,
    constrain,
    make_distribution,
    mean,
    params_size,
    stddev,
    variance,
)

RAW_LOC = [-2.0, 0.0, 1.5]
RAW_SCALE = [-3.0, -0.5, 0.0, 2.0]
RAW_POWER = [-3.0, -1.0, 0.0, 1.0, 3.0]
Y = np.array([-3.0, -0.7, 0.0, 0.2, 2.5])


def _grid(family: str) -> np.ndarray:
    """Raw parameter grid ``(N, len(Y), P)`` in float64, each row paired with every y."""
    axes = {"loc": RAW_LOC, "scale": RAW_SCALE, "power": RAW_POWER}
    combos = np.array(list(itertools.product(*(axes[n] for n in FAMILIES[family]))), dtype="float64")
    return np.repeat(combos[:, None, :], len(Y), axis=1)


def _scipy(family: str, params: np.ndarray):
    """Frozen scipy distribution from constrained parameters (independent oracle)."""
    p = {k: v.numpy() for k, v in constrain(family, tf.constant(params)).items()}
    if family == "normal":
        return stats.norm(loc=p["loc"], scale=p["scale"])
    if family == "laplace":
        return stats.laplace(loc=p["loc"], scale=p["scale"])
    return stats.gennorm(beta=p["power"], loc=p["loc"], scale=p["scale"])


PROB_FAMILIES = ["normal", "laplace", "generalized_normal"]


def test_params_size_matches_table():
    assert [params_size(f) for f in ("normal", "laplace", "generalized_normal", "point")] == [
        2,
        2,
        3,
        1,
    ]


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="family='gaussian'"):
        check_family("gaussian")
    with pytest.raises(ValueError, match="Unknown distribution family"):
        params_size("gaussian")


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="3 parameter channels"):
        constrain("generalized_normal", tf.zeros((2, 4, 2)))


def test_constrain_matches_numpy_formulas():
    raw = np.linspace(-30, 30, 13)
    params = np.stack([raw, raw, raw], axis=-1)
    p = constrain("generalized_normal", tf.constant(params))
    softplus = np.logaddexp(0.0, raw)
    np.testing.assert_allclose(p["scale"].numpy(), softplus + SCALE_EPS, rtol=1e-12)
    shift = np.log((2.0 - BETA_MIN) / (BETA_MAX - 2.0))
    beta = BETA_MIN + (BETA_MAX - BETA_MIN) * special.expit(raw + shift)
    np.testing.assert_allclose(p["power"].numpy(), beta, rtol=1e-12)
    np.testing.assert_array_equal(p["loc"].numpy(), raw)
    assert float(constrain("generalized_normal", tf.zeros((3,)))["power"]) == pytest.approx(2.0)
    assert np.all(p["scale"].numpy() >= SCALE_EPS)


@pytest.mark.parametrize("family", PROB_FAMILIES)
def test_log_prob_matches_scipy(family):
    params = _grid(family)
    y = np.broadcast_to(Y, params.shape[:-1])
    got = make_distribution(family, tf.constant(params)).log_prob(tf.constant(y)).numpy()
    np.testing.assert_allclose(got, _scipy(family, params).logpdf(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", PROB_FAMILIES)
def test_cdf_and_quantile_match_scipy(family):
    params = _grid(family)
    y = np.broadcast_to(Y, params.shape[:-1])
    dist = make_distribution(family, tf.constant(params))
    oracle = _scipy(family, params)
    np.testing.assert_allclose(dist.cdf(tf.constant(y)).numpy(), oracle.cdf(y), atol=1e-5)
    q = np.broadcast_to(np.array([0.025, 0.2, 0.5, 0.8, 0.975]), params.shape[:-1])
    np.testing.assert_allclose(dist.quantile(tf.constant(q)).numpy(), oracle.ppf(q), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", PROB_FAMILIES)
def test_mean_variance_stddev_match_scipy(family):
    params = _grid(family)[:, 0, :]
    oracle = _scipy(family, params)
    t = tf.constant(params)
    np.testing.assert_allclose(mean(family, t).numpy(), oracle.mean(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(variance(family, t).numpy(), oracle.var(), rtol=1e-5)
    np.testing.assert_allclose(stddev(family, t).numpy(), oracle.std(), rtol=1e-5)
    # The closed form agrees with TFP's own variance too.
    np.testing.assert_allclose(
        variance(family, t).numpy(), make_distribution(family, t).variance().numpy(), rtol=1e-5
    )


def test_generalized_normal_with_beta_two_is_a_gaussian():
    # beta = 2 (raw power 0): GGD(alpha) == Normal(sigma = alpha / sqrt 2).
    params = tf.constant([[0.3, 0.4, 0.0]], dtype=tf.float64)
    alpha = constrain("generalized_normal", params)["scale"].numpy()
    y = tf.constant([1.1], dtype=tf.float64)
    got = make_distribution("generalized_normal", params).log_prob(y).numpy()
    np.testing.assert_allclose(got, stats.norm(0.3, alpha / np.sqrt(2)).logpdf(1.1), rtol=1e-10)


def test_point_family_is_deterministic_with_zero_variance():
    params = tf.constant([[0.5], [-1.0]])
    dist = make_distribution("point", params)
    np.testing.assert_array_equal(dist.sample(seed=1).numpy(), [0.5, -1.0])
    np.testing.assert_array_equal(variance("point", params).numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(mean("point", params).numpy(), [0.5, -1.0])


def test_batch_shape_drops_channel_axis():
    for family in FAMILIES:
        params = tf.zeros((2, 3, 4, 5, params_size(family)))
        assert make_distribution(family, params).batch_shape == (2, 3, 4, 5)
        assert variance(family, params).shape == (2, 3, 4, 5)


def test_float32_extremes_are_finite():
    raw = tf.constant([[0.0, -30.0, -30.0], [0.0, 30.0, 30.0], [0.0, 0.0, 0.0]], tf.float32)
    for family in PROB_FAMILIES:
        params = raw[:, : params_size(family)]
        assert np.all(np.isfinite(variance(family, params).numpy()))
        assert np.all(np.isfinite(make_distribution(family, params).log_prob(0.5).numpy()))


@pytest.mark.parametrize("family", ["normal", "laplace", "generalized_normal", "point"])
def test_unconstrain_inverts_constrain(family: str) -> None:
    from tfuq.distributions import constrain, unconstrain

    rng = np.random.default_rng(1)
    loc = rng.normal(size=(4, 5))
    scale = np.exp(rng.normal(size=(4, 5)) * 3)  # 0.0001 .. 10^4
    power = rng.uniform(0.2, 9.5, size=(4, 5))
    kwargs = {"point": {}, "generalized_normal": {"scale": scale, "power": power}}.get(
        family, {"scale": scale}
    )
    raw = unconstrain(family, loc, **kwargs)
    back = constrain(family, raw)
    np.testing.assert_allclose(back["loc"], loc, rtol=1e-12)
    for key, value in kwargs.items():
        np.testing.assert_allclose(back[key], value, rtol=1e-9)
