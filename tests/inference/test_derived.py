from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tfuq.data.normalisation import NormalisationParams
from tfuq.distributions import family as fam
from tfuq.inference.decomposition import ALEATORIC_VAR, DECOMPOSITION_KEYS, EPISTEMIC_VAR, MEAN, TOTAL_VAR
from tfuq.inference.derived import (
    DERIVED_QUANTITIES,
    DerivedQuantity,
    derived_moments,
    derived_quantity,
    derived_update,
    mu_map_511kev,
    propagate,
)
from tfuq.inference.streaming import finalize, init_state

#: CT window normalisation: HU = y * 4095 - 1024.
CT_UNITS = NormalisationParams("window", -1024.0, 4095.0)
SHAPE = (4, 5)

# ---------------------------------------------------------------------------
# mu_map_511kev: values worked out by hand from Carney et al. 2006, Table I, 120 kVp:
# mu = 9.6e-5 * (HU + 1000) for HU <= 47, mu = 5.10e-5 * (HU + 1000) + 4.71e-2 above, clipped at 0.
MU_FIXTURES = [
    (-1024.0, 0.0),  # 9.6e-5 * (-24) = -0.002304 -> clipped to 0
    (-1000.0, 0.0),  # 9.6e-5 * 0
    (-500.0, 0.048),  # 9.6e-5 * 500
    (0.0, 0.096),  # 9.6e-5 * 1000 (water)
    (47.0, 0.100512),  # break point, lower segment: 9.6e-5 * 1047
    (48.0, 0.100548),  # 5.10e-5 * 1048 + 0.0471 = 0.053448 + 0.0471
    (1000.0, 0.1491),  # 5.10e-5 * 2000 + 0.0471 = 0.102 + 0.0471
    (1047.0, 0.151497),  # 5.10e-5 * 2047 + 0.0471 = 0.104397 + 0.0471 (NOT a break point)
    (1500.0, 0.1746),  # 5.10e-5 * 2500 + 0.0471 = 0.1275 + 0.0471
]


@pytest.mark.parametrize(("hu", "expected"), MU_FIXTURES)
def test_mu_map_hand_computed_values(hu, expected):
    out64 = mu_map_511kev(tf.constant([hu], tf.float64))
    out32 = mu_map_511kev(tf.constant([hu], tf.float32))
    assert out64.dtype == tf.float64 and out32.dtype == tf.float32
    np.testing.assert_allclose(out64.numpy(), [expected], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out32.numpy(), [expected], rtol=1e-6, atol=1e-9)


def test_mu_map_shape_dtype_and_segments_meet_at_47_hu():
    hu = np.linspace(-1200.0, 3000.0, 24).reshape(2, 3, 4)
    out = mu_map_511kev(hu)
    assert out.shape == (2, 3, 4) and out.dtype == tf.float64
    assert mu_map_511kev(np.array([0, 1000], np.int32)).dtype == tf.float32
    assert np.all(out.numpy() >= 0.0)
    # The published coefficients meet at 47 HU up to their rounding (1.5e-5 cm^-1) ...
    below, above = mu_map_511kev(tf.constant([47.0, 47.0 + 1e-9], tf.float64)).numpy()
    assert abs(above - below) < 2e-5
    # ... and each segment has its slope per HU.
    lo = mu_map_511kev(tf.constant([-300.0, -200.0], tf.float64)).numpy()
    hi = mu_map_511kev(tf.constant([800.0, 900.0], tf.float64)).numpy()
    np.testing.assert_allclose(np.diff(lo) / 100.0, 9.6e-5, rtol=1e-10)
    np.testing.assert_allclose(np.diff(hi) / 100.0, 5.10e-5, rtol=1e-10)


def test_registry():
    entry = DERIVED_QUANTITIES["mu_map_511kev"]
    assert entry.fn is mu_map_511kev
    assert entry.unit == "cm^-1" and entry.input_unit == "HU"
    assert "Carney" in entry.description
    assert derived_quantity("mu_map_511kev") is entry
    with pytest.raises(ValueError, match="Unknown derived quantity"):
        derived_quantity("mu_map_140kev")


# ---------------------------------------------------------------------------
# Streaming double sampling.

A_LIN, B_LIN = -2.5e-3, 7.0


def _linear(y):
    """A linear derived quantity f(x) = A x + B, elementwise (x in HU)."""
    return A_LIN * y + B_LIN


def _head(family, num=7, seed=0, loc_hu=None, loc_sd_hu=None, spread=0.02, scale_norm=0.01, dtype=np.float64):
    """Raw head channels (num, 4, 5, P) in CT-window units and their constrained (loc, scale)."""
    rng = np.random.default_rng(seed)
    if loc_hu is None:
        # pass means spread over 7 levels (Var_t ~ (0.02 * 2 * 4095)^2 HU^2) plus a little noise
        loc = 0.5 + spread * (np.arange(num)[:, None, None] - 3) + 0.005 * rng.normal(size=(num, *SHAPE))
    else:
        loc = (loc_hu + loc_sd_hu * rng.normal(size=(num, *SHAPE)) - CT_UNITS.offset) / CT_UNITS.scale
    scale = scale_norm * (1.0 + 0.5 * rng.uniform(size=(num, *SHAPE)))
    raw = fam.unconstrain(family, tf.constant(loc, tf.float64), tf.constant(scale, tf.float64)).numpy()
    constrained = fam.constrain(family, raw)
    return raw.astype(dtype), constrained["loc"].numpy(), constrained["scale"].numpy()


def _stream(family, params, fn, units, draws, seed, splits, dtype=tf.float64):
    state = init_state(SHAPE, dtype)
    start = 0
    for size in splits:
        state = derived_update(state, family, params[start : start + size], fn, units, draws=draws, seed=seed)
        start += size
    return state


@pytest.mark.parametrize(
    ("family", "var_factor", "excess_kurtosis"), [("normal", 1.0, 0.0), ("laplace", 2.0, 3.0)]
)
def test_linear_quantity_matches_closed_form(monkeypatch, family, var_factor, excess_kurtosis):
    monkeypatch.setitem(DERIVED_QUANTITIES, "linear", DerivedQuantity(_linear, "a.u.", "HU", "test"))
    num, draws = 7, 4000
    raw, loc, scale = _head(family, num)
    state = _stream(family, raw, "linear", CT_UNITS, draws, seed=11, splits=(3, 4))
    assert float(state.count) == num
    out = finalize(state)

    m = loc * CT_UNITS.scale + CT_UNITS.offset  # pass means in HU, (T, 4, 5)
    v = var_factor * (scale * CT_UNITS.scale) ** 2  # pass variances in HU^2
    mean_v = v.mean(axis=0)
    # Tolerances: 5 standard errors of each estimator (deterministic seeds, so this is a margin, not a rate).
    # mean: the grand mean of T*S draws has variance mean_t(v_t) / (S T).
    mean_tol = 5.0 * abs(A_LIN) * np.sqrt(mean_v / (draws * num))
    np.testing.assert_array_less(np.abs(out[MEAN].numpy() - (A_LIN * m.mean(axis=0) + B_LIN)), mean_tol)
    # epistemic: Var_t(m_t + e_t) with e_t ~ (0, v_t / S): bias <= mean(v) / S (double sampling) and a
    # cross term 2 Cov_t(m, e) with standard deviation ~ 2 sqrt(Var_t(m) mean(v) / (S T)).
    var_m = m.var(axis=0)
    epi_tol = A_LIN**2 * (mean_v / draws + 5.0 * 2.0 * np.sqrt(var_m * mean_v / (draws * num)))
    np.testing.assert_array_less(np.abs(out[EPISTEMIC_VAR].numpy() - A_LIN**2 * var_m), epi_tol)
    # aleatoric: mean of T population variances of S draws; each has relative variance (2 + kurtosis) / S
    # and bias -v/S.
    ale_sd = A_LIN**2 * np.sqrt((2.0 + excess_kurtosis) * (v**2).sum(axis=0) / draws) / num
    ale_tol = 5.0 * ale_sd + A_LIN**2 * mean_v / draws
    np.testing.assert_array_less(np.abs(out[ALEATORIC_VAR].numpy() - A_LIN**2 * mean_v), ale_tol)
    np.testing.assert_allclose(out[TOTAL_VAR], out[EPISTEMIC_VAR] + out[ALEATORIC_VAR], rtol=1e-12)
    # The design separates the parts (a swap or a missing a^2 / units factor fails above).
    assert np.all(var_m > 3.0 * mean_v)


@pytest.mark.parametrize("family", ["normal", "laplace", "generalized_normal", "point"])
def test_split_3_plus_4_equals_one_call_and_propagate(family):
    size = fam.params_size(family)
    raw = np.random.default_rng(1).normal(size=(7, *SHAPE, size))
    raw[..., 0] = 0.25 + 0.05 * raw[..., 0]  # about -0 HU +- 200 HU: both segments of the mu-map
    raw[..., 1:2] = raw[..., 1:2] - 4.0 if size > 1 else raw[..., 1:2]
    one = finalize(_stream(family, raw, "mu_map_511kev", CT_UNITS, 64, seed=5, splits=(7,)))
    split = finalize(_stream(family, raw, "mu_map_511kev", CT_UNITS, 64, seed=5, splits=(3, 4)))
    ones = finalize(_stream(family, raw, "mu_map_511kev", CT_UNITS, 64, seed=5, splits=(1,) * 7))
    reference = propagate(
        family,
        raw,
        lambda y: mu_map_511kev(y * CT_UNITS.scale + CT_UNITS.offset),
        draws_per_member=64,
        seed=5,
    )
    for key in DECOMPOSITION_KEYS:
        # Same draws (seed (5, t) for global pass t); only the rounding of the Chan merge differs.
        np.testing.assert_allclose(split[key], one[key], rtol=1e-10, atol=1e-18)
        np.testing.assert_allclose(ones[key], one[key], rtol=1e-10, atol=1e-18)
        np.testing.assert_allclose(one[key], reference[key], rtol=1e-10, atol=1e-18)
    if family == "point":
        np.testing.assert_allclose(one[ALEATORIC_VAR], 0.0, atol=1e-30)  # rounding of equal draws
    else:
        assert np.all(one[ALEATORIC_VAR].numpy() > 0)
    other = finalize(_stream(family, raw, "mu_map_511kev", CT_UNITS, 64, seed=6, splits=(7,)))
    assert family == "point" or not np.allclose(other[ALEATORIC_VAR], one[ALEATORIC_VAR])


def test_inside_tf_function_with_a_dynamic_number_of_passes():
    raw, _, _ = _head("normal", 7, dtype=np.float32)
    spec = tf.TensorSpec(SHAPE, tf.float32)
    state_spec = init_state(SHAPE)._replace(
        count=tf.TensorSpec((), tf.float32), mean=spec, m2=spec, aleatoric=spec
    )

    @tf.function(input_signature=[state_spec, tf.TensorSpec((None, *SHAPE, 2), tf.float32)])
    def step(state, batch):
        out = derived_update(state, "normal", batch, mu_map_511kev, CT_UNITS, draws=32, seed=3)
        assert out.mean.shape == SHAPE  # static shape survives map_fn in the graph
        return out

    graph = init_state(SHAPE)
    for batch in (raw[:3], raw[3:]):
        graph = step(graph, tf.constant(batch))
    eager = _stream("normal", raw, mu_map_511kev, CT_UNITS, 32, seed=3, splits=(3, 4), dtype=tf.float32)
    assert step.experimental_get_tracing_count() == 1
    for key in DECOMPOSITION_KEYS:
        np.testing.assert_allclose(finalize(graph)[key], finalize(eager)[key], rtol=1e-5, atol=1e-12)


def _phi(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _cdf(z):
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@pytest.mark.parametrize(
    ("loc_hu", "slope", "intercept"),
    [
        (-200.0, 9.6e-5, 0.096),  # > 15 sd below the 47 HU break: mu = 9.6e-5 * (HU + 1000)
        (1000.0, 5.10e-5, 0.0981),  # 47 sd above: mu = 5.10e-5 * (HU + 1000) + 0.0471
    ],
)
def test_mu_map_far_from_the_break_is_linear(loc_hu, slope, intercept):
    num, draws = 7, 2000
    raw, loc, scale = _head("normal", num, seed=2, loc_hu=loc_hu, loc_sd_hu=5.0, scale_norm=10.0 / 4095.0)
    out = finalize(_stream("normal", raw, "mu_map_511kev", CT_UNITS, draws, seed=9, splits=(4, 3)))
    m = loc * CT_UNITS.scale + CT_UNITS.offset
    v = (scale * CT_UNITS.scale) ** 2  # 10-15 HU sd
    assert np.all(np.abs(m - 47.0) > 10.0 * np.sqrt(v))
    mean_v = v.mean(axis=0)
    np.testing.assert_array_less(
        np.abs(out[MEAN].numpy() - (slope * m.mean(axis=0) + intercept)),
        5.0 * slope * np.sqrt(mean_v / (draws * num)),
    )
    var_m = m.var(axis=0)
    epi_tol = slope**2 * (mean_v / draws + 10.0 * np.sqrt(var_m * mean_v / (draws * num)))
    np.testing.assert_array_less(np.abs(out[EPISTEMIC_VAR].numpy() - slope**2 * var_m), epi_tol)
    ale_tol = slope**2 * (5.0 * np.sqrt(2.0 * (v**2).sum(axis=0) / draws) / num + mean_v / draws)
    np.testing.assert_array_less(np.abs(out[ALEATORIC_VAR].numpy() - slope**2 * mean_v), ale_tol)


def test_mu_map_across_the_break_follows_the_piecewise_closed_form():
    # 40 +- 10 HU straddles the break at 47 HU (not 1047 HU): the mean of mu is the lower-segment line
    # plus (a - 9.6e-5) E[(HU - 47)+] + g P(HU > 47), g = the -1.5e-5 cm^-1 step of the coefficients.
    num, draws = 7, 20000
    raw, loc, scale = _head("normal", num, seed=4, loc_hu=40.0, loc_sd_hu=0.0, scale_norm=10.0 / 4095.0)
    out = finalize(_stream("normal", raw, "mu_map_511kev", CT_UNITS, draws, seed=1, splits=(7,)))
    m = loc * CT_UNITS.scale + CT_UNITS.offset
    sd = scale * CT_UNITS.scale
    gap = (5.10e-5 - 9.6e-5) * 1047.0 + 0.0471
    expected = np.empty(m.shape)
    for index, (mu_t, sd_t) in enumerate(zip(m.ravel(), sd.ravel())):
        z = (47.0 - mu_t) / sd_t
        tail = 1.0 - _cdf(z)
        excess = sd_t * _phi(z) + (mu_t - 47.0) * tail  # E[(HU - 47)+]
        expected.flat[index] = 9.6e-5 * (mu_t + 1000.0) + (5.10e-5 - 9.6e-5) * excess + gap * tail
    expected_mean = expected.mean(axis=0)
    linear_mean = 9.6e-5 * (m.mean(axis=0) + 1000.0)
    sem = 9.6e-5 * np.sqrt((sd**2).mean(axis=0) / (draws * num))  # <= 9.6e-5 * 15 / sqrt(140000) = 3.8e-6
    np.testing.assert_array_less(np.abs(out[MEAN].numpy() - expected_mean), 5.0 * sem)
    # the kink is visible: the straight lower-segment line is off by > 10 standard errors
    assert np.all(np.abs(out[MEAN].numpy() - linear_mean) > 10.0 * sem)


def test_derived_moments_shapes_and_point_family():
    raw = np.random.default_rng(0).normal(size=(3, 2, *SHAPE, 1))  # (b, windows, 4, 5, 1)
    means, variances = derived_moments("point", raw, _linear, draws=4, seed=0, first_pass=10)
    assert means.shape == (3, 2, *SHAPE) == variances.shape
    np.testing.assert_allclose(means, A_LIN * raw[..., 0] + B_LIN, rtol=1e-12)
    np.testing.assert_array_equal(variances, 0.0)


def test_errors():
    raw, _, _ = _head("normal", 2)
    state = init_state(SHAPE, tf.float64)
    with pytest.raises(ValueError, match="draws"):
        derived_update(state, "normal", raw, mu_map_511kev, CT_UNITS, draws=0)
    with pytest.raises(ValueError, match="draws"):
        derived_update(state, "normal", raw, mu_map_511kev, CT_UNITS, draws=2.5)
    with pytest.raises(ValueError, match="draws"):
        derived_update(state, "normal", raw, mu_map_511kev, CT_UNITS, draws=True)
    with pytest.raises(ValueError, match="Unknown distribution family"):
        derived_update(state, "cauchy", raw, mu_map_511kev, CT_UNITS)
    with pytest.raises(ValueError, match="parameter channels"):
        derived_update(state, "generalized_normal", raw, mu_map_511kev, CT_UNITS)
    with pytest.raises(ValueError, match="Unknown derived quantity"):
        derived_update(state, "normal", raw, "dose", CT_UNITS)
    with pytest.raises(ValueError, match="draw axis"):
        derived_update(state, "normal", raw, lambda y: tf.reduce_mean(y), CT_UNITS, draws=3)
    with pytest.raises(ValueError, match="state's shape"):
        derived_update(state, "normal", raw, lambda y: tf.reduce_mean(y, axis=[1, 2]), draws=3)
    with pytest.raises(ValueError, match="scale"):
        derived_update(state, "normal", raw, mu_map_511kev, (0.0, 0.0), draws=3)
    with pytest.raises(ValueError, match="units"):
        derived_update(state, "normal", raw, mu_map_511kev, "window", draws=3)
    with pytest.raises(ValueError, match="seed"):
        derived_update(state, "normal", raw, mu_map_511kev, CT_UNITS, draws=3, seed=2**40)
    with pytest.raises(ValueError, match="seed"):
        derived_update(state, "normal", raw, mu_map_511kev, CT_UNITS, draws=3, seed=1.5)


def test_config_choices_are_the_registered_quantities():
    """[INFERENCE] derived lists its choices without importing inference; they must stay equal."""
    from tfuq.config.sections import DERIVED_CHOICES
    from tfuq.inference.derived import DERIVED_QUANTITIES

    assert set(DERIVED_CHOICES) == set(DERIVED_QUANTITIES)
