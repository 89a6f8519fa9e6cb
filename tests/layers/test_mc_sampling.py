"""The MC-sampling switch: finds every stochastic layer, keeps BatchNorm in inference mode."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfuq.layers import (
    ConcreteDropout,
    ConcreteSpatialDropout2D,
    DistributionHead,
    MCDropout,
    MCSpatialDropout2D,
    mc_sampling,
    set_mc_sampling,
    stochastic_layers,
)

X = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")


def _model(rate: float = 0.5) -> keras.Model:
    """Conv -> BN (non-trivial moving stats) -> MC dropout -> nested block -> head."""
    inner_in = keras.Input((6, 6, 8))
    inner_out = ConcreteSpatialDropout2D(keras.layers.Conv2D(8, 1), seed=2, name="cd")(inner_in)
    block = keras.Model(inner_in, inner_out, name="block")
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    bn = keras.layers.BatchNormalization(name="bn")
    h = bn(h)
    h = MCSpatialDropout2D(rate, seed=1, name="mcd")(h)
    h = block(h)
    model = keras.Model(inputs, DistributionHead("normal", rank=2)(h))
    bn.moving_mean.assign(np.linspace(-1, 1, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 3, 8).astype("float32"))
    return model


def test_finds_stochastic_layers_in_nested_models_and_wrappers():
    model = _model()
    names = sorted(layer.name for layer in stochastic_layers(model))
    assert names == ["cd", "mcd"]
    switched = set_mc_sampling(model, True)
    assert all(layer.mc_active for layer in switched) and len(switched) == 2
    set_mc_sampling(model, False)
    assert not any(layer.mc_active for layer in switched)


def test_batchnorm_stays_in_inference_mode():
    model = _model(rate=0.0)
    model.get_layer("block").get_layer("cd").p_logit.assign(-30.0)  # p ~ 1e-13: no drop
    plain = model.predict(X, verbose=0)
    with mc_sampling(model):
        mc = model.predict(X, verbose=0)
        eager = model(X).numpy()
    np.testing.assert_array_equal(mc, plain)
    np.testing.assert_allclose(eager, plain, rtol=1e-6, atol=1e-6)
    # The test can fail: training=True would switch BN to batch statistics.
    assert not np.allclose(model(X, training=True).numpy(), plain, atol=1e-3)


def test_mc_sampling_does_not_update_batchnorm_statistics():
    model = _model(rate=0.5)
    bn = model.get_layer("bn")
    before = bn.moving_mean.numpy().copy()
    with mc_sampling(model):
        for _ in range(3):
            model.predict(X, verbose=0)
            model(X)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)


def test_predict_retraces_on_switch_and_restores_state():
    model = _model(rate=0.5)
    first = model.predict(X, verbose=0)
    np.testing.assert_array_equal(model.predict(X, verbose=0), first)
    with mc_sampling(model) as same:
        assert same is model
        a, b = model.predict(X, verbose=0), model.predict(X, verbose=0)
        assert not np.array_equal(a, b)
        assert not np.array_equal(a, first)
    np.testing.assert_array_equal(model.predict(X, verbose=0), first)
    assert not any(layer.mc_active for layer in stochastic_layers(model))


def test_context_restores_a_previous_on_state():
    model = _model()
    set_mc_sampling(model, True)
    with mc_sampling(model, enabled=False):
        assert not any(layer.mc_active for layer in stochastic_layers(model))
        np.testing.assert_array_equal(model(X).numpy(), model(X).numpy())
    assert all(layer.mc_active for layer in stochastic_layers(model))


def test_a_function_traced_before_the_switch_keeps_its_behaviour():
    # Documented: the attribute is read at trace time.
    model = _model(rate=0.5)
    fn = tf.function(lambda x: model(x))
    first = fn(X).numpy()
    with mc_sampling(model):
        np.testing.assert_array_equal(fn(X).numpy(), first)
        retraced = tf.function(lambda x: model(x))
        assert not np.array_equal(retraced(X).numpy(), retraced(X).numpy())


def test_enabled_must_be_bool():
    with pytest.raises(ValueError, match="bool"):
        set_mc_sampling(_model(), 1)


class _Block(keras.layers.Layer):
    """A custom layer that owns its stochastic sub-layers as attributes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.parts = [keras.layers.Dense(4), MCDropout(0.5, seed=0, name="inner_mcd")]

    def call(self, x):
        for part in self.parts:
            x = part(x)
        return x


def test_sequential_and_custom_blocks_are_covered():
    model = keras.Sequential(
        [keras.Input((3,)), _Block(), ConcreteDropout(keras.layers.Dense(2), name="outer_cd")]
    )
    x = np.ones((4, 3), "float32")
    model(x)
    assert sorted(layer.name for layer in stochastic_layers(model)) == ["inner_mcd", "outer_cd"]
    first = model.predict(x, verbose=0)
    with mc_sampling(model):
        assert not np.array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(model.predict(x, verbose=0), first)
