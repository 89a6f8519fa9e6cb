"""pix2pix / Bayesian cGAN trainer: one step per family, loss oracle, conditional pairs, learning, saving."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from utils import assert_keras_roundtrip

from tfuq.config import ConfigError, load_config
from tfuq.layers import ConcreteSpatialDropout2D, iter_layers
from tfuq.losses import lsgan_discriminator_loss, nll
from tfuq.networks import PatchDiscriminator, Pix2PixGenerator
from tfuq.training.gan import GANTrainer, build_gan_trainer
from tfuq.training.gan_losses import LossWeights

REPO = Path(__file__).resolve().parents[2]
SHAPE = (32, 32, 1)


def generator(family: str = "normal", dropout: str | None = "concrete") -> Pix2PixGenerator:
    return Pix2PixGenerator(SHAPE, family=family, depth=5, base_filters=4, dropout=dropout, name="g")


def discriminator() -> PatchDiscriminator:
    return PatchDiscriminator(SHAPE, condition_channels=1, base_filters=4, name="d")


def batch(seed: int = 0, n: int = 2) -> tuple[tf.Tensor, tf.Tensor]:
    """Inputs and [target, mask] targets: target = 2 x - 0.5, mask a centred box."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *SHAPE)).astype("float32")
    mask = np.zeros_like(x)
    mask[:, 4:28, 6:26] = 1.0
    return tf.constant(x), tf.constant(np.concatenate([2 * x - 0.5, mask], axis=-1))


def values(variables: list) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def changed(before: list[np.ndarray], variables: list) -> list[bool]:
    return [not np.array_equal(b, a) for b, a in zip(before, values(variables))]


@pytest.mark.parametrize(
    ("family", "adversarial"), [("normal", "lsgan"), ("point", "bce"), ("generalized_normal", "lsgan")]
)
def test_one_step_updates_generator_and_discriminator_and_logs_finite_terms(
    family: str, adversarial: str
) -> None:
    keras.utils.set_random_seed(1)
    trainer = GANTrainer(generator(family), discriminator(), adversarial_loss=adversarial)
    trainer.compile()
    g, d = trainer.generator.trainable_variables, trainer.discriminator.trainable_variables
    g0, d0 = values(g), values(d)
    logs = trainer.train_step(batch())
    expected = {"loss", "g_total", "g_adv", "g_l1", "g_kl", "d_loss"} | (
        {"g_nll"} if family != "point" else set()
    )
    assert set(logs) == expected
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert all(changed(g0, g)) and all(changed(d0, d))  # every weight, incl. the concrete p_logits
    assert int(trainer.gan_step.numpy()) == 1
    assert int(trainer.generator_optimizer.iterations.numpy()) == 1
    assert int(trainer.discriminator_optimizer.iterations.numpy()) == 1


class Spy(keras.Model):
    """A discriminator that records the (condition, image) pairs it judges."""

    def __init__(self, inner: keras.Model) -> None:
        super().__init__(name="spy")
        self.inner = inner
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def call(self, inputs: list, training: bool | None = None) -> tf.Tensor:
        condition, image = inputs
        self.calls.append((np.asarray(condition), np.asarray(image)))
        return self.inner([condition, image], training=training)


def test_generator_loss_is_the_weighted_sum_of_independent_terms_and_d_sees_input_pairs() -> None:
    keras.utils.set_random_seed(2)
    weights = LossWeights(adv=0.7, l1=3.0, nll=0.5, kl=2.0)
    spy = Spy(discriminator())
    trainer = GANTrainer(generator("normal", dropout=None), spy, loss_weights=weights, loss_border=2)
    trainer.compile()
    x, y = batch(3)
    # Oracle with the pre-step weights (no dropout: the training-mode forward is deterministic).
    params = trainer.generator(x, training=True).numpy()
    mu = params[..., :1]
    target, mask = y.numpy()[..., :1], y.numpy()[..., 1:]
    real = spy.inner([x, tf.constant(target)], training=True).numpy()
    fake = spy.inner([x, tf.constant(mu)], training=True).numpy()
    inner = (slice(None), slice(2, -2), slice(2, -2))
    residual, m = np.abs(target - mu)[inner], mask[inner]
    l1 = np.mean(np.sum(residual * m, axis=(1, 2, 3)) / np.sum(m, axis=(1, 2, 3)))
    nll_term = float(nll("normal", params, target, mask, border=2))
    adv = 0.5 * np.mean((fake - 1.0) ** 2)
    expected_total = 0.7 * adv + 3.0 * l1 + 0.5 * nll_term + 2.0 * 0.0
    spy.calls.clear()
    logs = {k: float(v) for k, v in trainer.train_step((x, y)).items()}
    np.testing.assert_allclose(logs["g_adv"], adv, rtol=1e-5)
    np.testing.assert_allclose(logs["g_l1"], l1, rtol=1e-5)
    np.testing.assert_allclose(logs["g_nll"], nll_term, rtol=1e-5)
    assert logs["g_kl"] == 0.0
    np.testing.assert_allclose(logs["g_total"], expected_total, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], expected_total, rtol=1e-5)
    np.testing.assert_allclose(logs["d_loss"], float(lsgan_discriminator_loss(real, fake)), rtol=1e-5)
    # The discriminator judged exactly the real pair (x, y) and the generated pair (x, mu).
    assert len(spy.calls) == 2
    (c_real, i_real), (c_fake, i_fake) = spy.calls
    np.testing.assert_array_equal(c_real, x.numpy())
    np.testing.assert_array_equal(c_fake, x.numpy())
    np.testing.assert_array_equal(i_real, target)
    np.testing.assert_allclose(i_fake, mu, rtol=1e-6, atol=1e-6)


def test_kl_term_is_the_concrete_dropout_regulariser_of_the_generator() -> None:
    keras.utils.set_random_seed(3)
    trainer = GANTrainer(generator("point"), discriminator(), adversarial_loss="bce")
    trainer.compile()
    wrappers = [
        layer for layer in iter_layers(trainer.generator) if isinstance(layer, ConcreteSpatialDropout2D)
    ]
    assert len(wrappers) == 3  # Zhao: after transposed convolutions 2-4
    expected = 0.0
    for layer in wrappers:  # Gal et al. eq. 3 / Zhao eq. 4, in NumPy from the pre-step weights
        kernel = layer.layer.kernel.numpy().astype(np.float64)
        p = 1.0 / (1.0 + np.exp(-float(layer.p_logit.numpy())))
        k = layer.input_channels
        expected += 1e-6 * np.sum(kernel**2) / (1 - p) + 1e-5 * k * (p * np.log(p) + (1 - p) * np.log(1 - p))
    logs = {k: float(v) for k, v in trainer.train_step(batch()).items()}
    np.testing.assert_allclose(logs["g_kl"], expected, rtol=1e-5)
    combined = logs["g_adv"] + 100 * logs["g_l1"] + 100 * logs["g_kl"]  # default weights (Zhao)
    np.testing.assert_allclose(logs["g_total"], combined, rtol=1e-6)


def test_a_few_dozen_fit_steps_lower_the_l1_and_nll_terms() -> None:
    keras.utils.set_random_seed(4)
    trainer = GANTrainer(generator("normal", dropout=None), discriminator(), loss_weights={"l1": 10.0})
    trainer.compile(keras.optimizers.Adam(5e-3, beta_1=0.5), keras.optimizers.Adam(2e-4, beta_1=0.5))
    x, y = batch(5, n=4)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    history = trainer.fit(data, steps_per_epoch=6, epochs=6, verbose=0).history  # epoch means
    assert history["g_l1"][-1] < 0.6 * history["g_l1"][0]  # measured 0.587 -> 0.276
    assert history["g_nll"][-1] < history["g_nll"][0] - 0.5  # measured 1.26 -> 0.41
    assert int(trainer.gan_step.numpy()) == 36
    validation = trainer.evaluate(data, steps=1, verbose=0, return_dict=True)
    assert {"loss", "g_l1", "g_nll", "d_loss"} <= set(validation)


def test_generator_save_and_trainer_config_round_trip(tmp_path: Path) -> None:
    keras.utils.set_random_seed(5)
    trainer = GANTrainer(generator("normal"), discriminator(), adversarial_loss="bce", loss_border=1)
    trainer.compile()
    trainer.train_step(batch())
    x, _ = batch(1)
    assert_keras_roundtrip(trainer.generator, x, tmp_path)
    np.testing.assert_array_equal(trainer.predict(x, verbose=0), trainer.generator(x, training=False))
    clone = GANTrainer.from_config(trainer.get_config())
    assert clone.generator.get_config() == trainer.generator.get_config()
    assert clone.discriminator.get_config() == trainer.discriminator.get_config()
    assert (clone.family, clone.adversarial_loss, clone.loss_border) == ("normal", "bce", 1)
    assert clone.loss_weights == trainer.loss_weights


def test_checkpoint_of_the_trainer_restores_networks_optimizers_and_step(tmp_path: Path) -> None:
    keras.utils.set_random_seed(6)
    trainer = GANTrainer(generator("normal"), discriminator())
    trainer.compile()
    for seed in range(2):
        trainer.train_step(batch(seed))
    path = tf.train.Checkpoint(model=trainer).save(str(tmp_path / "ckpt"))
    keras.utils.set_random_seed(7)
    other = GANTrainer(generator("normal"), discriminator())
    other.compile()
    tf.train.Checkpoint(model=other).restore(path).assert_existing_objects_matched()
    assert int(other.gan_step.numpy()) == 2
    for a, b in zip(trainer.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for opt_a, opt_b in (
        (trainer.generator_optimizer, other.generator_optimizer),
        (trainer.discriminator_optimizer, other.discriminator_optimizer),
    ):
        assert int(opt_b.iterations.numpy()) == 2
        for a, b in zip(opt_a.variables, opt_b.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def tiny_t1t2(tmp_path: Path, *overrides: str):
    return load_config(
        REPO / "configs" / "demo_t1t2.ini",
        [
            f"SYSTEM.model_dir={tmp_path}",
            "T1.spatial_window_size=32, 32, 1",
            "T2.spatial_window_size=32, 32, 1",
            "NETWORK.depth=5",
            "NETWORK.base_filters=4",
            *overrides,
        ],
    )


def test_build_gan_trainer_from_the_demo_config(tmp_path: Path) -> None:
    config = tiny_t1t2(tmp_path, "GAN.discriminator_lr=0.001", "GAN.lambda_adv=2")
    trainer = build_gan_trainer(config)
    assert isinstance(trainer, GANTrainer) and trainer.compiled
    assert isinstance(trainer.generator, Pix2PixGenerator) and trainer.generator.family == "point"
    assert trainer.discriminator.condition_channels == 1
    assert trainer.adversarial_loss == "bce"
    assert trainer.loss_weights == LossWeights(adv=2.0, l1=100.0, nll=0.0, kl=100.0)
    g, d = trainer.generator_optimizer, trainer.discriminator_optimizer
    assert isinstance(g, keras.optimizers.Adam) and isinstance(d, keras.optimizers.Adam)
    np.testing.assert_allclose([float(g.learning_rate.numpy()), g.beta_1, g.beta_2], [2e-4, 0.5, 0.999])
    np.testing.assert_allclose(float(d.learning_rate.numpy()), 1e-3)
    assert np.isfinite(float(trainer.train_step(batch())["g_total"]))
    uncompiled = build_gan_trainer(config, compile=False)
    assert not uncompiled.compiled


def test_build_gan_trainer_refuses_configs_that_are_not_gans(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[GAN\]"):
        build_gan_trainer(load_config(REPO / "configs" / "demo_mr2ct.ini"))
    with pytest.raises(ConfigError, match="pix2pix or upgan"):
        build_gan_trainer(tiny_t1t2(tmp_path, "NETWORK.name=unet"))


def test_compile_rejects_keras_losses_and_wrong_optimizer_counts() -> None:
    trainer = GANTrainer(generator("point", dropout=None), discriminator())
    with pytest.raises(ValueError, match="defines its own losses"):
        trainer.compile(loss="mae")
    with pytest.raises(ValueError, match="Expected 1 optimizer"):
        trainer.compile(generator_optimizer=["adam", "adam"])
    with pytest.raises(ValueError, match="pairs"):
        GANTrainer(generator(), PatchDiscriminator(SHAPE, base_filters=4))


def test_grad_clip_norm_bounds_each_networks_step() -> None:
    keras.utils.set_random_seed(8)
    trainer = GANTrainer(generator("normal", dropout=None), discriminator(), grad_clip_norm=1e-3)
    trainer.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0))  # step = -gradient
    networks = (trainer.generator, trainer.discriminator)
    before = [values(network.trainable_variables) for network in networks]
    trainer.train_step(batch())
    for network, old in zip(networks, before):
        step = [a - b for a, b in zip(values(network.trainable_variables), old)]
        norm = np.sqrt(sum(np.sum(s.astype(np.float64) ** 2) for s in step))
        np.testing.assert_allclose(norm, 1e-3, rtol=1e-3)  # the raw gradients are far larger


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_one_step_under_mixed_precision(policy: str) -> None:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(9)
        trainer = GANTrainer(generator("normal"), discriminator())
        trainer.compile()
        scaled = isinstance(trainer.generator_optimizer, keras.optimizers.LossScaleOptimizer)
        assert scaled == (policy == "mixed_float16")
        g = trainer.generator.trainable_variables
        g0 = values(g)
        for _ in range(10):  # float16 loss scaling skips the steps whose scaled gradients overflow
            logs = trainer.train_step(batch())
            if any(changed(g0, g)):
                break
    finally:
        keras.config.set_dtype_policy(previous)
    assert all(np.isfinite(float(v)) and v.dtype == tf.float32 for v in logs.values())
    assert any(changed(g0, g))
