"""UP-GAN trainer: progressive freezing (weights and BatchNorm statistics), loss oracles, stages in fit."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from utils import assert_keras_roundtrip

from tfuq.config import load_config
from tfuq.losses import l1, lsgan_discriminator_loss, lsgan_generator_loss, nll
from tfuq.networks import UPGAN, PatchDiscriminator, uncertainty_attention
from tfuq.training.gan import build_gan_trainer
from tfuq.training.gan_losses import LossWeights
from tfuq.training.gan_upgan import UPGANTrainer

REPO = Path(__file__).resolve().parents[2]
SHAPE = (32, 32, 1)
FAMILY = "generalized_normal"


def make_trainer(phase_iterations=(2, 2), seed: int = 0, **kwargs) -> UPGANTrainer:
    num_phases = len(phase_iterations)
    keras.utils.set_random_seed(seed)
    generator = UPGAN(SHAPE, num_phases=num_phases, depth=2, base_filters=4)
    discriminators = [PatchDiscriminator(SHAPE, base_filters=4, name=f"d{m}") for m in range(num_phases)]
    trainer = UPGANTrainer(generator, discriminators, phase_iterations, **kwargs)
    trainer.compile()
    return trainer


def batch(seed: int = 0, n: int = 2) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, *SHAPE)).astype("float32")
    mask = np.zeros_like(x)
    mask[:, 2:30, 4:28] = 1.0
    return tf.constant(x), tf.constant(np.concatenate([1.5 * x - 0.2, mask], axis=-1))


def snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}


def changed(before: dict[str, np.ndarray], model: keras.Model) -> dict[str, bool]:
    after = snapshot(model)
    return {path: not np.array_equal(before[path], after[path]) for path in before}


def statistics(flags: dict[str, bool]) -> dict[str, bool]:
    return {p: c for p, c in flags.items() if p.endswith(("moving_mean", "moving_variance"))}


def test_progressive_stages_freeze_earlier_phases_with_their_batchnorm_statistics() -> None:
    trainer = make_trainer((1, 1, 1))
    networks = {f"g{m}": p for m, p in enumerate(trainer.phases)}
    networks |= {f"d{m}": d for m, d in enumerate(trainer.discriminators)}
    trainable = {name: {w.path for w in net.trainable_weights} for name, net in networks.items()}
    for stage in range(4):
        before = {name: snapshot(net) for name, net in networks.items()}
        assert float(trainer.train_step(batch(stage))["stage"]) == stage
        moved = {name: changed(before[name], net) for name, net in networks.items()}
        trained = range(3) if stage == 3 else [stage]
        for m in range(3):
            g, d = moved[f"g{m}"], moved[f"d{m}"]
            if m in trained:  # every weight of the trained phase and its D moves, and its BN statistics
                assert all(c for p, c in g.items() if p in trainable[f"g{m}"]), (stage, m)
                assert all(c for p, c in d.items() if p in trainable[f"d{m}"]), (stage, m)
                assert statistics(g) and all(statistics(g).values()), (stage, m)
            else:  # frozen (earlier) or not yet trained (later): nothing moves, statistics included
                assert statistics(g) and not any(g.values()), (stage, m)
                assert not any(d.values()), (stage, m)
    iterations = [int(o.iterations.numpy()) for o in trainer.generator_optimizer]
    assert iterations == [1, 1, 1, 1]
    assert [int(o.iterations.numpy()) for o in trainer.discriminator_optimizer] == [1, 1, 1, 1]
    assert int(trainer.gan_step.numpy()) == 4


def oracle(trainer: UPGANTrainer, x: tf.Tensor, y: tf.Tensor, trained: list[int], weights: LossWeights):
    """Each term with tfuq.losses, the earlier phases in inference mode, combined by hand."""
    target, mask = y[..., 0], y[..., 1]
    params, h = [], x
    for m, phase in enumerate(trainer.phases):
        if m:
            h = uncertainty_attention(FAMILY, params[-1], x)
        params.append(phase(h, training=m in trained))
        if m == trained[-1]:
            break
    totals = {"g_nll": 0.0, "g_adv": 0.0, "g_l1": 0.0, "d_loss": 0.0}
    for m in trained:
        fake = trainer.discriminators[m](params[m][..., :1], training=True)
        real = trainer.discriminators[m](target[..., None], training=True)
        totals["g_nll"] += float(nll(FAMILY, params[m], target, mask)) / len(trained)
        totals["g_adv"] += float(lsgan_generator_loss(fake)) / len(trained)
        totals["g_l1"] += float(l1(params[m], target, mask)) / len(trained)
        totals["d_loss"] += float(lsgan_discriminator_loss(real, fake)) / len(trained)
    totals["g_total"] = (
        weights.nll * totals["g_nll"] + weights.adv * totals["g_adv"] + weights.l1 * totals["g_l1"]
    )
    return totals


@pytest.mark.parametrize(("step", "trained"), [(2, [1]), (4, [0, 1])])
def test_generator_loss_matches_hand_combined_terms(step: int, trained: list[int]) -> None:
    weights = LossWeights(adv=0.5, l1=2.0, nll=1.0, kl=0.0)
    trainer = make_trainer(loss_weights=weights, seed=3)
    trainer.gan_step.assign(step)  # stage 1 (phase 1 alone, phase 0 frozen) and stage 2 (fine-tuning)
    x, y = batch(4)
    expected = oracle(trainer, x, y, trained, weights)
    logs = {k: float(v) for k, v in trainer.train_step((x, y)).items()}
    for key, value in expected.items():
        np.testing.assert_allclose(logs[key], value, rtol=2e-5, err_msg=key)
    assert logs["loss"] == logs["g_total"] and logs["g_kl"] == 0.0


def test_default_weights_are_upgan_lambdas_and_validation_reports_the_stage_phases() -> None:
    trainer = make_trainer(seed=5)
    assert trainer.loss_weights == LossWeights(adv=0.001, l1=0.0, nll=1.0, kl=100.0)
    x, y = batch(6)
    target, mask = y[..., 0], y[..., 1]
    params, h = [], x
    for m, phase in enumerate(trainer.phases):  # inference mode throughout
        h = uncertainty_attention(FAMILY, params[-1], x) if m else x
        params.append(phase(h, training=False))
    nlls = [float(nll(FAMILY, p, target, mask)) for p in params]
    for step, expected, stage in ((0, nlls[0], 0), (3, nlls[1], 1), (9, np.mean(nlls), 2)):
        trainer.gan_step.assign(step)
        trainer.reset_metrics()
        logs = trainer.test_step((x, y))
        assert float(logs["stage"]) == stage
        np.testing.assert_allclose(float(logs["g_nll"]), expected, rtol=1e-5)


def test_fit_runs_each_stage_in_turn_and_lowers_the_nll() -> None:
    trainer = make_trainer(phase_iterations=(8, 1), seed=7)
    trainer.compile(
        [keras.optimizers.Adam(lr) for lr in (5e-3, 4e-3, 1e-3)],
        [keras.optimizers.Adam(2e-4) for _ in range(3)],
        run_eagerly=True,
    )
    data = tf.data.Dataset.from_tensors(batch(8, n=4)).repeat()
    history = trainer.fit(data, steps_per_epoch=1, epochs=10, verbose=0).history  # one step per epoch
    assert history["stage"] == [0.0] * 8 + [1.0, 2.0]
    np.testing.assert_allclose(history["stage_lr"], [5e-3] * 8 + [4e-3, 1e-3], rtol=1e-6)
    assert np.mean(history["g_nll"][5:8]) < np.mean(history["g_nll"][:3]) - 0.4  # measured 1.16 -> 0.56
    assert int(trainer.gan_step.numpy()) == 10


@pytest.mark.slow
def test_compiled_fit_traces_one_function_per_stage() -> None:
    trainer = make_trainer(phase_iterations=(1, 1), seed=8)
    data = tf.data.Dataset.from_tensors(batch(9)).repeat()
    fit = trainer.fit(data, steps_per_epoch=1, epochs=4, verbose=0, validation_data=data, validation_steps=1)
    history = fit.history
    assert history["stage"] == [0.0, 1.0, 2.0, 2.0]
    assert history["val_stage"] == [1.0, 2.0, 2.0, 2.0]  # validated after the step
    assert all(np.isfinite(history["val_loss"]))


def test_checkpoint_restores_every_stage_optimizer_and_the_stage(tmp_path: Path) -> None:
    from tfuq.training.checkpoints import trainer_optimizers

    trainer = make_trainer(seed=9)
    for k in range(5):
        trainer.train_step(batch(k))
    assert len(trainer_optimizers(trainer)) == 6  # what tfuq train's checkpoints collect
    path = tf.train.Checkpoint(model=trainer).save(str(tmp_path / "ckpt"))
    other = make_trainer(seed=10)
    tf.train.Checkpoint(model=other).restore(path).assert_existing_objects_matched()
    assert other.current_stage == 2
    for a, b in zip(trainer.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for opt_a, opt_b in zip(
        trainer.generator_optimizer + trainer.discriminator_optimizer,
        other.generator_optimizer + other.discriminator_optimizer,
    ):
        for a, b in zip(opt_a.variables, opt_b.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_generator_save_and_trainer_config_round_trip(tmp_path: Path) -> None:
    trainer = make_trainer(seed=11, loss_border=1)
    trainer.train_step(batch())
    x, _ = batch(1)
    assert_keras_roundtrip(trainer.generator, x, tmp_path)
    clone = UPGANTrainer.from_config(trainer.get_config())
    assert clone.generator.get_config() == trainer.generator.get_config()
    assert [d.get_config() for d in clone.discriminators] == [d.get_config() for d in trainer.discriminators]
    assert clone.schedule == trainer.schedule and clone.loss_border == 1


def test_build_gan_trainer_from_the_demo_config(tmp_path: Path) -> None:
    config = load_config(
        REPO / "configs" / "demo_upgan.ini",
        [
            f"SYSTEM.model_dir={tmp_path}",
            "T1.spatial_window_size=32, 32, 1",
            "CT.spatial_window_size=32, 32, 1",
            "NETWORK.base_filters=4",
            "NETWORK.depth=2",
            "GAN.phase_iter=50, 60, 70",
        ],
    )
    trainer = build_gan_trainer(config)
    assert isinstance(trainer, UPGANTrainer) and isinstance(trainer.generator, UPGAN)
    assert trainer.schedule.phase_iterations == (50, 60, 70)
    assert trainer.loss_weights == LossWeights(adv=0.001, l1=0.0, nll=1.0, kl=0.0)
    assert trainer.adversarial_loss == "lsgan" and len(trainer.discriminators) == 3
    assert all(d.condition_channels == 0 for d in trainer.discriminators)  # UP-GAN's D judges images
    for optimizers, lr in ((trainer.generator_optimizer, 0.002), (trainer.discriminator_optimizer, 0.002)):
        assert len(optimizers) == 4
        schedules = [o.get_config()["learning_rate"]["config"] for o in optimizers]
        assert [s["decay_steps"] for s in schedules] == [50, 60, 70, 120]  # cosine over each stage
        np.testing.assert_allclose([s["initial_learning_rate"] for s in schedules], [lr] * 3 + [lr * 0.25])
        assert all(o.beta_1 == 0.9 and o.beta_2 == 0.999 for o in optimizers)


def test_a_step_traced_once_refuses_to_run_past_its_stage() -> None:
    trainer = make_trainer(phase_iterations=(1, 1), seed=12)
    step = tf.function(trainer.train_step)  # what a hand-written loop would do
    step(batch(0))  # stage 0: traced and run
    before = snapshot(trainer)
    with pytest.raises(tf.errors.InvalidArgumentError, match="traced for stage 0 ran in another stage"):
        step(batch(1))  # gan_step = 1 is stage 1
    after = snapshot(trainer)
    assert all(np.array_equal(before[p], after[p]) for p in before)  # nothing was updated
