"""Concrete dropout: regulariser and mask against NumPy, statistics, switches, learned p."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special
from utils import run_layer_test

from tfuq.layers import (
    ConcreteDropout,
    ConcreteSpatialDropout2D,
    ConcreteSpatialDropout3D,
    concrete_dropout_mask,
    concrete_dropout_regularizer,
    set_mc_sampling,
)
from tfuq.losses import NLLLoss

RANK_CASES = {
    ConcreteDropout: (lambda dt: keras.layers.Dense(5, dtype=dt), (2, 3), (2, 5)),
    ConcreteSpatialDropout2D: (
        lambda dt: keras.layers.Conv2D(4, 3, padding="same", dtype=dt),
        (2, 5, 4, 3),
        (2, 5, 4, 4),
    ),
    ConcreteSpatialDropout3D: (
        lambda dt: keras.layers.Conv3D(2, 1, dtype=dt),
        (1, 3, 4, 5, 3),
        (1, 3, 4, 5, 2),
    ),
}


def _np_regularizer(kernel, p, k, wr, dr):
    """Gal et al. 2017 / Zhao eq. 4-6, transcribed."""
    return wr * np.sum(kernel**2) / (1 - p) + dr * k * (p * np.log(p) + (1 - p) * np.log(1 - p))


@pytest.mark.parametrize(("cls", "dtype"), list(itertools.product(RANK_CASES, ["float32", "float64"])))
def test_layer_contract(cls, dtype, tmp_path):
    make, in_shape, out_shape = RANK_CASES[cls]
    layer = run_layer_test(
        cls,
        {"layer": make(dtype), "seed": 4, "init_min": 0.2, "init_max": 0.3, "dtype": dtype},
        input_shape=in_shape,
        expected_output_shape=out_shape,
        tmp_path=tmp_path,
        input_dtype=dtype,
        expected_output_dtype=dtype,
        expected_weight_names={"p_logit", "kernel", "bias"},
    )
    assert 0.2 - 1e-6 <= layer.dropout_rate <= 0.3 + 1e-6
    config = layer.get_config()
    assert config["seed"] == 4 and config["init_min"] == 0.2
    default_t = 0.1 if cls is ConcreteDropout else 2.0 / 3.0
    assert cls(make(dtype)).temperature == pytest.approx(default_t)


def test_defaults_follow_zhao():
    layer = ConcreteDropout(keras.layers.Dense(2))
    assert (layer.weight_regularizer, layer.dropout_regularizer) == (1e-6, 1e-5)
    layer(np.zeros((1, 3), "float32"))
    assert layer.dropout_rate == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("p", [1e-4, 0.1, 0.5, 0.9])
def test_regularizer_matches_numpy(p):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 6, 4))
    logit = special.logit(p)
    got = concrete_dropout_regularizer(kernel, logit, 6, 1e-2, 1e-1)
    expected = _np_regularizer(kernel, p, 6, 1e-2, 1e-1)
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_layer_adds_its_regularizer_with_add_loss():
    layer = ConcreteSpatialDropout2D(
        keras.layers.Conv2D(4, 3), weight_regularizer=0.01, dropout_regularizer=0.1, seed=0
    )
    layer(np.zeros((1, 5, 5, 7), "float32"))
    layer.p_logit.assign(special.logit(0.3))
    kernel = layer.layer.kernel.numpy().astype("float64")
    expected = _np_regularizer(kernel, 0.3, 7, 0.01, 0.1)
    layer(np.zeros((1, 5, 5, 7), "float32"))
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(expected, rel=1e-5)
    assert float(layer.regularization()) == pytest.approx(expected, rel=1e-5)


def test_model_losses_include_the_regularizer_in_evaluate():
    inputs = keras.Input((4,))
    cd = ConcreteDropout(keras.layers.Dense(1), weight_regularizer=0.5, seed=0)
    model = keras.Model(inputs, cd(inputs))
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.zeros((8, 1), "float32")
    mse = float(np.mean(model.predict(x, verbose=0) ** 2))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse + float(cd.regularization()), rel=1e-5)


def test_mask_function_matches_numpy():
    u = np.random.default_rng(1).uniform(size=100)
    for p, t in [(0.1, 0.1), (0.5, 2 / 3), (0.8, 1.0)]:
        expected = special.expit((np.log(p) - np.log(1 - p) + np.log(u) - np.log(1 - u)) / t)
        got = concrete_dropout_mask(special.logit(p), u, t)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10)


def _identity_dense(units: int) -> keras.layers.Dense:
    return keras.layers.Dense(units, use_bias=False, kernel_initializer="identity")


def test_dense_mask_drops_a_fraction_p():
    p = 0.3
    layer = ConcreteDropout(_identity_dense(256), init_min=p, init_max=p, seed=3)
    y = layer(np.ones((64, 256), "float32"), training=True).numpy()
    # out = (1 - z) / (1 - p); z > 0.5 happens with probability exactly p.
    assert np.all(y >= 0) and np.all(y <= 1 / (1 - p) + 1e-5)
    assert np.mean(y * (1 - p) < 0.5) == pytest.approx(p, abs=0.015)  # s.e. ~0.0036
    assert 0 < np.mean(y[0] * (1 - p) < 0.5) < 1  # element-wise, not shared


@pytest.mark.parametrize(
    ("cls", "conv", "shape"),
    [
        (ConcreteSpatialDropout2D, keras.layers.Conv2D, (64, 3, 2, 16)),
        (ConcreteSpatialDropout3D, keras.layers.Conv3D, (64, 2, 2, 2, 16)),
    ],
)
def test_spatial_mask_is_channel_wise_with_fraction_p(cls, conv, shape):
    p = 0.4
    layer = cls(conv(16, 1, use_bias=False), init_min=p, init_max=p, seed=5)
    layer.build(shape)
    layer.layer.kernel.assign(np.eye(16).reshape((1,) * (len(shape) - 2) + (16, 16)))
    layer.mc_active = True
    dropped = []
    for _ in range(10):
        y = layer(np.ones(shape, "float32")).numpy().reshape(shape[0], -1, 16)
        np.testing.assert_allclose(y, np.broadcast_to(y[:, :1], y.shape), rtol=1e-6)
        dropped.append(np.mean(y[:, 0] * (1 - p) < 0.5))
    assert np.mean(dropped) == pytest.approx(p, abs=0.03)  # 10240 draws, s.e. ~0.005


@pytest.mark.parametrize("cls", list(RANK_CASES))
def test_deterministic_when_off_and_stochastic_when_on(cls):
    make, in_shape, _ = RANK_CASES[cls]
    layer = cls(make("float32"), init_min=0.5, init_max=0.5, seed=0)
    x = np.random.default_rng(0).normal(size=in_shape).astype("float32")
    a = layer(x).numpy()
    np.testing.assert_array_equal(layer(x, training=False).numpy(), a)
    np.testing.assert_array_equal(layer.layer(x).numpy(), a)  # exactly the wrapped layer
    assert not np.array_equal(layer(x, training=True).numpy(), a)
    set_mc_sampling(layer, True)
    assert not np.array_equal(layer(x).numpy(), layer(x).numpy())


def test_gradient_reaches_p_logit():
    layer = ConcreteSpatialDropout2D(keras.layers.Conv2D(3, 1), seed=0)
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 5)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 2) + tf.add_n(layer.losses)
    grad = tape.gradient(loss, layer.p_logit)
    assert np.isfinite(float(grad)) and float(grad) != 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init_min": 0.0}, "init_min"),
        ({"init_min": 0.3, "init_max": 0.2}, "init_max"),
        ({"temperature": 0.0}, "temperature"),
        ({"weight_regularizer": -1.0}, "weight_regularizer"),
        ({"dropout_regularizer": -1.0}, "dropout_regularizer"),
        ({"seed": "a"}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConcreteDropout(keras.layers.Dense(2), **kwargs)


def test_wrapped_layer_needs_a_kernel_and_rank_is_checked():
    with pytest.raises(ValueError, match="kernel"):
        ConcreteDropout(keras.layers.ReLU())(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="rank 4"):
        ConcreteSpatialDropout2D(keras.layers.Conv2D(2, 1))(np.zeros((1, 3, 3, 3, 2), "float32"))


def _learned_p(n: int, seed: int, steps: int = 300) -> list[float]:
    """Toy heteroscedastic regression y = x sin x + noise; Gal et al. regularisers l^2/N, 2/N."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, size=(n, 1)).astype("float32")
    y = (x * np.sin(x) + rng.normal(size=x.shape) * (0.1 + 0.1 * np.abs(x))).astype("float32")
    reg = {"weight_regularizer": 1e-4 / n, "dropout_regularizer": 2.0 / n}
    inputs = keras.Input((1,))
    h = ConcreteDropout(keras.layers.Dense(32, activation="relu"), seed=1, **reg)(inputs)
    h = ConcreteDropout(keras.layers.Dense(32, activation="relu"), seed=2, **reg)(h)
    model = keras.Model(inputs, ConcreteDropout(keras.layers.Dense(2), seed=3, **reg)(h))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=NLLLoss("normal"))
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(min(n, 100))
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return [layer.dropout_rate for layer in model.layers if isinstance(layer, ConcreteDropout)]


def test_learned_dropout_rate_falls_as_the_training_set_grows():
    # Gal, Hron & Kendall 2017, Fig. 2: less data -> more epistemic uncertainty -> larger p.
    small, large = _learned_p(10, seed=0), _learned_p(1000, seed=0)
    assert np.mean(small) > 3 * np.mean(large), (small, large)
    assert small[1] > large[1] and small[2] > large[2], (small, large)


def test_mixed_precision_keeps_p_in_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((4, 4, 3))
        cd = ConcreteSpatialDropout2D(
            keras.layers.Conv2D(4, 1), weight_regularizer=0.0, init_min=0.13, init_max=0.13
        )
        model = keras.Model(inputs, cd(inputs))
        x = np.ones((2, 4, 4, 3), "float32")
        assert keras.backend.standardize_dtype(model(x, training=True).dtype) == "bfloat16"
        assert cd.p_logit.dtype == "float32" and cd.losses[0].dtype == "float32"
        assert cd.dropout_rate == pytest.approx(0.13, rel=1e-6)
        # Inside call p_logit is read in float32, not rounded to bfloat16 (~3 digits)
        # (weight term off: the wrapped kernel is read in the compute dtype there).
        assert float(cd.losses[0]) == pytest.approx(float(cd.regularization()), rel=1e-6)
        model.compile(optimizer="adam", loss="mse")
        loss = model.fit(x, np.zeros((2, 4, 4, 4), "float32"), epochs=1, verbose=0)
        assert np.isfinite(loss.history["loss"][0])
    finally:
        keras.config.set_dtype_policy(previous)
