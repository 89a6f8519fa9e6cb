"""RegressionTrainer: loss terms against NumPy, one SGD step against a hand-written gradient, clipping."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tfuq.distributions import SCALE_EPS  # noqa: E402
from tfuq.losses import L1Loss, L2Loss, NLLLoss  # noqa: E402
from tfuq.training.trainer import RegressionTrainer  # noqa: E402

RNG = np.random.default_rng(7)
X = RNG.normal(size=(3, 4, 4, 4, 1)).astype("float32")
TARGET = RNG.normal(size=(3, 4, 4, 4, 1)).astype("float32")
MASK = (RNG.uniform(size=(3, 4, 4, 4, 1)) > 0.3).astype("float32")
Y = np.concatenate([TARGET, MASK], axis=-1)


def network(channels: int = 2, l2: float = 0.0) -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4, 4, 4, 1))
    regularizer = keras.regularizers.L2(l2) if l2 else None
    outputs = keras.layers.Conv3D(channels, 1, kernel_regularizer=regularizer, name="head")(inputs)
    return keras.Model(inputs, outputs)


def softplus(v: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(v))) + np.maximum(v, 0)


def numpy_terms(kernel: np.ndarray, bias: np.ndarray, l2: float, decay: float) -> dict[str, float]:
    params = X @ kernel.reshape(1, -1) + bias  # 1x1x1 convolution of one input channel
    mu, sigma = params[..., 0], softplus(params[..., 1]) + SCALE_EPS
    y, m = TARGET[..., 0], MASK[..., 0]
    voxel = 0.5 * ((y - mu) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)
    per_sample = (voxel * m).sum(axis=(1, 2, 3)) / np.maximum(m.sum(axis=(1, 2, 3)), 1)
    nll = float(per_sample.mean())
    reg, penalty = l2 * float((kernel**2).sum()), decay * float((kernel**2).sum())
    return {"loss": nll + reg + penalty, "nll": nll, "dropout_kl": reg, "weight_penalty": penalty}


def test_terms_and_one_sgd_step_match_a_hand_written_gradient() -> None:
    l2, decay, lr = 0.05, 0.01, 0.1
    trainer = RegressionTrainer(network(l2=l2), NLLLoss("normal"), decay=decay)
    trainer.compile(optimizer=keras.optimizers.SGD(lr))
    kernel0, bias0 = (np.array(v) for v in trainer.network.get_layer("head").weights)
    expected = numpy_terms(kernel0, bias0, l2, decay)
    terms = {k: float(v) for k, v in trainer.train_step((X, Y)).items()}
    assert set(terms) == set(expected)
    for key, value in expected.items():
        assert terms[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key

    k, b = tf.Variable(kernel0.astype("float64")), tf.Variable(bias0.astype("float64"))
    with tf.GradientTape() as tape:
        params = tf.tensordot(tf.constant(X, tf.float64), tf.reshape(k, (1, -1)), 1) + b
        sigma = tf.nn.softplus(params[..., 1]) + SCALE_EPS
        voxel = 0.5 * tf.square((TARGET[..., 0] - params[..., 0]) / sigma) + tf.math.log(sigma)
        m = MASK[..., 0].astype("float64")
        nll = tf.reduce_mean(tf.reduce_sum(voxel * m, axis=(1, 2, 3)) / tf.reduce_sum(m, axis=(1, 2, 3)))
        total = nll + (l2 + decay) * tf.reduce_sum(tf.square(k))
    grad_k, grad_b = tape.gradient(total, [k, b])
    kernel1, bias1 = (np.array(v) for v in trainer.network.get_layer("head").weights)
    np.testing.assert_allclose(kernel1, kernel0 - lr * grad_k.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bias1, bias0 - lr * grad_b.numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(kernel1 - kernel0).max() > 1e-4


@pytest.mark.parametrize(("loss", "power"), [(L1Loss(), 1), (L2Loss(), 2)])
def test_pointwise_losses_on_the_loc_channel(loss: keras.losses.Loss, power: int) -> None:
    trainer = RegressionTrainer(network(channels=1), loss)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    mu = np.array(trainer.network(X))[..., 0]
    m = MASK[..., 0]
    per_sample = (np.abs(TARGET[..., 0] - mu) ** power * m).sum(axis=(1, 2, 3)) / m.sum(axis=(1, 2, 3))
    terms = trainer.train_step((X, Y))
    assert float(terms[loss.name]) == pytest.approx(per_sample.mean(), rel=1e-5)
    assert float(terms["loss"]) == float(terms[loss.name])


def test_gradient_clipping_bounds_the_global_step() -> None:
    clip = 1e-3
    trainer = RegressionTrainer(network(), NLLLoss("normal"), grad_clip_norm=clip)
    trainer.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [np.array(v) for v in trainer.network.trainable_variables]
    trainer.train_step((X, Y))
    after = [np.array(v) for v in trainer.network.trainable_variables]
    norm = np.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before)))
    assert norm == pytest.approx(clip, rel=1e-4)


def test_test_step_averages_over_the_windows_and_config_roundtrip() -> None:
    trainer = RegressionTrainer(network(), NLLLoss("normal"), decay=0.5, reg_type="L1", grad_clip_norm=2.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    first = float(trainer.loss_terms(X[:1], Y[:1], training=False)["loss"])
    second = float(trainer.loss_terms(X[1:], Y[1:], training=False)["loss"])
    for metric in trainer.metrics:
        metric.reset_state()
    trainer.test_step((X[:1], Y[:1]))
    logs = trainer.test_step((X[1:], Y[1:]))
    rest = len(X) - 1  # the mean over the windows, not over the batches
    assert float(logs["loss"]) == pytest.approx((first + rest * second) / (1 + rest), rel=1e-6)
    kernel = np.array(trainer.network.get_layer("head").weights[0])
    assert float(trainer.loss_terms(X, Y, training=False)["weight_penalty"]) == pytest.approx(
        0.5 * np.abs(kernel).sum(), rel=1e-6
    )
    clone = RegressionTrainer.from_config(trainer.get_config())
    assert (clone.decay, clone.reg_type, clone.grad_clip_norm, clone.voxel_loss.family) == (
        0.5,
        "L1",
        2.0,
        "normal",
    )
    with pytest.raises(ValueError, match="reg_type"):
        RegressionTrainer(network(), NLLLoss("normal"), reg_type="L3")
