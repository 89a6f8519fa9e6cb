"""The trainer of a configuration: its data term and its compiled ``keras.Model``.

:func:`build_trainer` is what ``tfuq train`` (:mod:`tfuq.stages.train`) and
the papers' experiments (:mod:`tfuq.experiments.validate_uq`) train.
"""

from __future__ import annotations

import keras

from tfuq.config import Config, ConfigError

__all__ = ["build_trainer", "check_training_config", "make_loss"]


def _fail(config: Config, key: str, message: str) -> ConfigError:
    return ConfigError(f"{config.path}: {key}: {message}")


def check_training_config(config: Config) -> None:
    """Refuse settings training cannot take, before any data is read (one-line ConfigError).

    A ``[NETWORK] name = keras:PATH`` user model is loaded and checked here
    too (file, head, window), so that a bad one is refused before the run
    writes its split or normalisation.
    """
    net = config.network
    if net.name.startswith("keras:"):
        from tfuq.model_store import build_network

        build_network(config)  # the same checks as the build; the model is loaded again under the strategy
    if config.application == "REGRESSION" and net.name == "upgan":
        raise _fail(config, "[NETWORK] name = upgan", "UP-GAN trains as a GAN: use a [GAN] section")
    if net.name == "multires" and net.deep_supervision:
        raise _fail(
            config,
            "[NETWORK] deep_supervision",
            "training does not supervise the coarser MultiRes levels yet (their field of view is larger "
            "than the target window); set deep_supervision = false",
        )
    if config.training.max_iter < 1:
        raise _fail(config, "[TRAINING] max_iter", "expected at least 1 iteration")
    if config.application == "REGRESSION":  # before any data is read
        from tfuq.training.optimizers import build_optimizer

        try:
            build_optimizer(config.training, clip=False)
        except ValueError as err:
            raise _fail(config, "[TRAINING] optimiser", str(err)) from None


def make_loss(config: Config) -> keras.losses.Loss:
    """The data term: NLL of the family, or L1/L2 (``loss_type``; the ``none`` family uses L2)."""
    from tfuq.losses import L1Loss, L2Loss, NLLLoss

    if config.training.loss_type == "l1":
        return L1Loss()
    if config.training.loss_type == "l2" or config.family == "point":
        return L2Loss()
    # the pipeline's mask channel already excludes loss_border
    return NLLLoss(config.family, beta=config.training.nll_beta)


def build_trainer(config: Config) -> keras.Model:
    """The compiled trainer of ``config`` (call under the strategy's scope and precision policy).

    ``[REGRESSION]``: a :class:`~tfuq.training.trainer.RegressionTrainer` with
    the ``[TRAINING]`` optimiser, built (a ``LossScaleOptimizer`` under
    ``mixed_float16``); ``[GAN]``: ``tfuq.training.gan.build_gan_trainer(config)``.

    Raises:
        ConfigError: an optimiser setting that does not apply.
    """
    from tfuq.model_store import build_network
    from tfuq.training.optimizers import build_optimizer
    from tfuq.training.trainer import RegressionTrainer

    if config.application == "GAN":
        from tfuq.training.gan import build_gan_trainer

        trainer = build_gan_trainer(config)
        if not getattr(trainer, "compiled", False):
            trainer.compile(optimizer=build_optimizer(config.training), jit_compile=False)
        return trainer
    net = config.network
    trainer = RegressionTrainer(
        build_network(config),
        make_loss(config),
        decay=net.decay,
        reg_type=net.reg_type,
        grad_clip_norm=config.training.grad_clip_norm,
        name="regression_trainer",
    )
    try:
        optimizer = build_optimizer(config.training, clip=False)
    except ValueError as err:
        raise _fail(config, "[TRAINING] optimiser", str(err)) from None
    if config.system.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=False)
    optimizer.build(trainer.network.trainable_variables)
    return trainer
