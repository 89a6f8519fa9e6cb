"""Native dilated convolutions: Keras's result without the space-to-batch round trip."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfuq.layers import DilatedConv2D, DilatedConv3D


@pytest.mark.parametrize(
    "cls, plain, shape, dilation",
    [
        (DilatedConv3D, keras.layers.Conv3D, (2, 9, 10, 11, 3), 2),
        (DilatedConv3D, keras.layers.Conv3D, (1, 12, 12, 12, 2), (1, 2, 4)),
        (DilatedConv2D, keras.layers.Conv2D, (3, 13, 12, 2), 3),
    ],
)
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_equals_keras_convolution_with_the_same_weights(cls, plain, shape, dilation, padding: str) -> None:
    """Oracle: keras's own Conv (space-to-batch on CPU) with the weights copied in."""
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    ours = cls(4, 3, dilation_rate=dilation, padding=padding, activation="relu")
    reference = plain(4, 3, dilation_rate=dilation, padding=padding, activation="relu")
    ours.build(shape)
    reference.build(shape)
    reference.set_weights(
        [np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in ours.weights]
    )
    ours.set_weights(reference.get_weights())
    np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), rtol=1e-4, atol=1e-4)
    graph = tf.function(ours).get_concrete_function(tf.TensorSpec(shape)).graph
    kinds = {op.type for op in graph.get_operations()}
    assert "SpaceToBatchND" not in kinds and ("Conv3D" in kinds or "Conv2D" in kinds)


def test_gradients_equal_keras_convolution() -> None:
    x = tf.constant(np.random.default_rng(2).normal(size=(2, 8, 8, 8, 2)).astype("float32"))
    ours = DilatedConv3D(3, 3, dilation_rate=2, padding="same")
    reference = keras.layers.Conv3D(3, 3, dilation_rate=2, padding="same")
    ours.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    grads = []
    for layer in (ours, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) ** 2)
        grads.append(tape.gradient(loss, [x, layer.kernel]))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-3)


def test_config_round_trip_and_keras_file(tmp_path) -> None:
    layer = DilatedConv3D(5, 3, dilation_rate=4, padding="same", name="d")
    clone = DilatedConv3D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    x = keras.Input((12, 12, 12, 2))
    model = keras.Model(x, layer(x))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.layers[1], DilatedConv3D)
    data = np.random.default_rng(3).normal(size=(1, 12, 12, 12, 2)).astype("float32")
    np.testing.assert_array_equal(loaded(data).numpy(), model(data).numpy())


def test_undilated_strided_or_channels_first_use_keras_op() -> None:
    from tfuq.layers.dilated_conv import native_dilated_conv

    x = tf.zeros((1, 8, 8, 8, 2))
    for layer in (DilatedConv3D(2, 3), DilatedConv3D(2, 3, strides=2)):
        layer.build(x.shape)
        assert native_dilated_conv(layer, x, layer.kernel) is None
