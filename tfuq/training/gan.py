"""Conditional GAN training: pix2pix and the Bayesian conditional GAN, and the trainer factory.

:class:`GANTrainer` trains a generator (e.g.
:class:`~tfuq.networks.Pix2PixGenerator`) against a conditional PatchGAN
discriminator that judges (input, image) pairs: the real pair
``(x, y)`` and the generated pair ``(x, mu)`` with ``mu`` the generator's
mean (channel 0 of its head). One ``train_step`` runs the generator and the
discriminator once (training mode), computes both objectives from that same
forward pass (:mod:`tfuq.training.gan_losses`) and applies both updates
(simultaneous gradient steps, as the TensorFlow pix2pix tutorial does).

Generator loss: ``lambda_adv L_adv + lambda_l1 L1 + lambda_nll NLL +
lambda_kl KL``: pix2pix is the ``"point"`` family with (1, 100, -, -);
Zhao's Bayesian cGAN adds concrete dropout (KL = the generator's
``losses``, weight 100); a probabilistic head adds its NLL.

:func:`build_gan_trainer` builds and compiles the trainer of a ``[GAN]``
configuration: this one for ``[NETWORK] name = pix2pix``,
:class:`~tfuq.training.gan_upgan.UPGANTrainer` for ``upgan``.

Reference:
    Isola et al., CVPR 2017, arXiv:1611.07004. Zhao et al., "Bayesian
    conditional GAN for MRI brain image synthesis", arXiv:2005.11875.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf

from tfuq.config import Config, ConfigError
from tfuq.losses import split_target
from tfuq.training.gan_base import GanTrainerBase, replica_fraction
from tfuq.training.gan_losses import (
    D_LOSS,
    G_TOTAL,
    LossWeights,
    discriminator_loss,
    generator_loss,
    generator_terms,
)

__all__ = ["GANTrainer", "OptimizerFactory", "build_gan_trainer"]

#: ``(learning_rate, iterations, name) -> optimizer``.
OptimizerFactory = Callable[[float, int, str], Any]


@keras.saving.register_keras_serializable(package="tfuq")
class GANTrainer(GanTrainerBase):
    """pix2pix / Bayesian conditional GAN trainer (a ``keras.Model`` for ``fit``).

    Args:
        generator: Built generator ``(B, *spatial, C) -> (B, *spatial, P)``.
        discriminator: Conditional discriminator ``[condition (B, *spatial, C),
            image (B, *spatial, 1)] -> scores`` (:class:`~tfuq.networks.PatchDiscriminator`
            with ``condition_channels = C``).
        family: Head family; default ``generator.family``.
        adversarial_loss: ``"bce"`` (pix2pix) or ``"lsgan"``. Default ``"lsgan"``.
        loss_weights: :class:`~tfuq.training.gan_losses.LossWeights` or its
            dict; default adv 1, l1 100, nll 1, kl 100.
        loss_border: Voxels ignored at each window side for L1 and NLL.
        grad_clip_norm: Clip each network's gradient to this global norm; 0 = off.
        **kwargs: Base ``keras.Model`` arguments.

    Attributes:
        generator, discriminator: The networks.
        generator_optimizer, discriminator_optimizer: Set by :meth:`compile`.
        gan_step: Completed training steps (int64 weight, checkpointed).

    Data:
        ``fit`` takes ``(inputs, targets)`` batches: inputs ``(B, *spatial, C)``,
        targets ``(B, *spatial, 2)`` = ``[target, mask]`` (or ``[target]``),
        as :func:`tfuq.data.pipeline.make_training_dataset` yields them.

    Raises:
        ValueError: a bad argument, e.g. an unconditional discriminator.

    Example:
        >>> trainer = GANTrainer(Pix2PixGenerator((32, 32, 1), depth=5), PatchDiscriminator(
        ...     (32, 32, 1), condition_channels=1))  # doctest: +SKIP
        >>> trainer.compile()  # doctest: +SKIP
        >>> trainer.fit(dataset, steps_per_epoch=100)  # doctest: +SKIP
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        family: str | None = None,
        adversarial_loss: str = "lsgan",
        loss_weights: LossWeights | Mapping[str, float] | None = None,
        loss_border: int = 0,
        grad_clip_norm: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            generator,
            family=family,
            adversarial_loss=adversarial_loss,
            loss_weights=loss_weights,
            loss_border=loss_border,
            grad_clip_norm=grad_clip_norm,
            **kwargs,
        )
        inputs = getattr(discriminator, "inputs", None) if isinstance(discriminator, keras.Model) else ()
        if inputs is not None and len(inputs) != 2:  # a functional model must take the pair
            raise ValueError(
                "pix2pix's discriminator judges (input, image) pairs. Expected a keras.Model with inputs "
                f"[condition, image] (PatchDiscriminator(condition_channels=C)). Received: {discriminator!r}"
            )
        self.discriminator = discriminator
        self.built = True

    def _optimizer_variables(self) -> tuple[list[list[Any]], list[list[Any]]]:
        return [self.generator.trainable_variables], [self.discriminator.trainable_variables]

    def _loss_terms(self, data: Any, training: bool) -> dict[str, tf.Tensor]:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        params = tf.cast(self.generator(x, training=training), tf.float32)
        target, mask = split_target(y, params.shape.rank)
        target = tf.cast(target, tf.float32)
        real = self.discriminator([x, target[..., None]], training=training)
        fake = self.discriminator([x, params[..., :1]], training=training)
        terms = generator_terms(
            self.family,
            params,
            target,
            fake,
            mask=mask,
            adversarial=self.adversarial_loss,
            border=self.loss_border,
            regularization=self.generator.losses,
        )
        terms[G_TOTAL] = generator_loss(terms, self.loss_weights)
        terms[D_LOSS] = discriminator_loss(self.adversarial_loss, real, fake)
        return terms

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One simultaneous generator and discriminator update; returns the loss logs."""
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            values = self._loss_terms(data, training=True)
            g_scaled = self.generator_optimizer.scale_loss(replica_fraction(values[G_TOTAL]))
            d_scaled = self.discriminator_optimizer.scale_loss(replica_fraction(values[D_LOSS]))
        self._apply_both(
            (self.generator_optimizer, g_tape, g_scaled, g_vars),
            (self.discriminator_optimizer, d_tape, d_scaled, d_vars),
        )
        self.gan_step.assign_add(1)
        return self._record(values)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        """The loss terms in inference mode (validation), no update; running means over the windows."""
        targets = keras.utils.unpack_x_y_sample_weight(data)[1]
        self._record_validation(self._loss_terms(data, training=False), targets)
        return self._results()

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument (networks serialised)."""
        return {
            **super().get_config(),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GANTrainer:
        """Rebuild from :meth:`get_config`."""
        return cls(**cls._deserialize(config, "generator", "discriminator"))


def _fail(config: Config, key: str, message: str) -> ConfigError:
    return ConfigError(f"{config.path}: {key}: {message}")


def _optimizer(config: Config, learning_rate: float, iterations: int, name: str) -> Any:
    """``[TRAINING]``'s optimiser at ``learning_rate`` whose schedule spans ``iterations``."""
    from tfuq.training.optimizers import build_optimizer

    training = dataclasses.replace(config.training, max_iter=max(int(iterations), 1))
    try:
        return build_optimizer(training, learning_rate=learning_rate, clip=False, name=name)
    except ValueError as err:
        raise _fail(config, "[TRAINING] optimiser", str(err)) from None


def build_gan_trainer(
    config: Config,
    *,
    optimizer_factory: OptimizerFactory | None = None,
    compile: bool = True,
) -> keras.Model:
    """The GAN trainer of a ``[GAN]`` configuration, networks built and (by default) compiled.

    Builds the generator and discriminator(s) with
    :func:`tfuq.networks.build_model` / :func:`tfuq.networks.build_discriminators`,
    the loss weights from ``[GAN] lambda_*``, and the optimisers from
    ``[TRAINING]`` (generator: ``lr``; discriminator: ``[GAN]
    discriminator_lr``; UP-GAN: one pair per progressive phase running
    ``[GAN] phase_iter`` iterations and one pair for the fine-tuning at
    ``finetune_lr_factor`` times those rates). Call it inside a
    ``tf.distribute`` strategy's scope to train under that strategy.

    Args:
        config: A loaded configuration with a ``[GAN]`` section.
        optimizer_factory: ``(learning_rate, iterations, name) -> optimizer``;
            default :func:`~tfuq.training.optimizers.build_optimizer` on
            ``[TRAINING]`` with ``max_iter`` = the optimiser's iterations (the
            horizon of a cosine or step schedule); gradient clipping
            (``grad_clip_norm``) is done by the trainer.
        compile: Compile with those optimisers (else the caller compiles).

    Returns:
        keras.Model: :class:`GANTrainer` (pix2pix) or
        :class:`~tfuq.training.gan_upgan.UPGANTrainer` (upgan); its
        ``.generator`` is what inference and export use.

    Raises:
        ConfigError: not a ``[GAN]`` application, a network that is not a GAN,
            or settings the networks or the schedule cannot take (one line).

    Example:
        >>> trainer = build_gan_trainer(load_config("configs/demo_t1t2.ini"))  # doctest: +SKIP
        >>> trainer.fit(dataset, steps_per_epoch=50, epochs=4)  # doctest: +SKIP
    """
    from tfuq.model_store import build_network
    from tfuq.networks import build_discriminators
    from tfuq.training.gan_schedule import ProgressiveSchedule
    from tfuq.training.gan_upgan import UPGANTrainer

    if config.application != "GAN":
        raise _fail(config, f"[{config.application}]", "GAN training needs a [GAN] application section")
    name = config.network.name
    if name not in ("pix2pix", "upgan"):
        raise _fail(config, "[NETWORK] name", f"a [GAN] application trains pix2pix or upgan, got {name!r}")
    gan, training = config.app, config.training
    factory = optimizer_factory or functools.partial(_optimizer, config)
    schedule = ProgressiveSchedule.from_config(config) if name == "upgan" else None
    generator = build_network(config)
    discriminators = build_discriminators(config)
    common = {
        "family": config.family,
        "adversarial_loss": gan.adversarial_loss,
        "loss_weights": LossWeights.from_config(gan),
        "loss_border": gan.loss_border,
        "grad_clip_norm": training.grad_clip_norm,
    }
    if schedule is None:
        trainer: GanTrainerBase = GANTrainer(generator, discriminators[0], name="gan_trainer", **common)
        g_opt: Any = factory(training.lr, training.max_iter, "generator_optimizer")
        d_opt: Any = factory(gan.discriminator_lr, training.max_iter, "discriminator_optimizer")
    else:
        trainer = UPGANTrainer(
            generator,
            discriminators,
            phase_iterations=schedule.phase_iterations,
            name="upgan_trainer",
            **common,
        )
        lengths = [*schedule.phase_iterations, schedule.finetune_iterations(training.max_iter)]
        factors = [1.0] * schedule.num_phases + [gan.finetune_lr_factor]
        stages = [f"phase_{m}" for m in range(schedule.num_phases)] + ["finetune"]
        g_opt = [
            factory(training.lr * f, n, f"generator_optimizer_{s}")
            for f, n, s in zip(factors, lengths, stages)
        ]
        d_opt = [
            factory(gan.discriminator_lr * f, n, f"discriminator_optimizer_{s}")
            for f, n, s in zip(factors, lengths, stages)
        ]
    if compile:
        trainer.compile(generator_optimizer=g_opt, discriminator_optimizer=d_opt, jit_compile=False)
    return trainer
