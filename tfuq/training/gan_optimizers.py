"""Optimisers of the GAN trainers from ``[TRAINING]``, one per network and stage.

A GAN needs several optimisers (generator and discriminator; UP-GAN one pair
per progressive phase and one for the fine-tuning) that share the
``[TRAINING]`` settings but differ in learning rate and length. This module
builds one from the section, a learning rate and the number of iterations
it will run (the horizon of a decaying schedule).

Schedules (the optimiser's own iteration count t): ``constant``; ``cosine``
decays ``lr`` to 0 over the iterations (UP-GAN's cosine annealing);
``step`` multiplies ``lr`` by ``lr_step_factor`` every ``lr_step_every_n``
iterations (0 = a third of the iterations). ``grad_clip_norm`` > 0 clips the
global gradient norm.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["make_gan_optimizer"]


def _schedule(training: Any, learning_rate: float, iterations: int) -> Any:
    kind = getattr(training, "lr_schedule", "constant")
    steps = max(int(iterations), 1)
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    if kind == "step":
        every = int(getattr(training, "lr_step_every_n", 0)) or max(steps // 3, 1)
        factor = float(getattr(training, "lr_step_factor", 0.1))
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=every, decay_rate=factor, staircase=True
        )
    return float(learning_rate)


def make_gan_optimizer(training: Any, learning_rate: float, iterations: int, name: str) -> Any:
    """An optimiser configured by ``[TRAINING]`` with its own learning rate and length.

    Args:
        training: The ``[TRAINING]`` section (:class:`~tfuq.config.TrainingSection`).
        learning_rate: Initial learning rate, > 0.
        iterations: Iterations this optimiser will run (schedule horizon), >= 0.
        name: Optimiser name (names its variables in checkpoints).

    Returns:
        keras.optimizers.Optimizer: not built.

    Raises:
        ValueError: a learning rate <= 0 or an unknown optimiser name.

    Example:
        >>> opt = make_gan_optimizer(config.training, 2e-4, 1000, "generator_optimizer")  # doctest: +SKIP
    """
    if not learning_rate > 0:
        raise ValueError(f"Expected learning_rate > 0. Received: learning_rate={learning_rate!r}")
    lr = _schedule(training, learning_rate, iterations)
    clip = float(training.grad_clip_norm) or None
    common = {"learning_rate": lr, "global_clipnorm": clip, "name": name}
    kind = training.optimiser
    momentum = float(getattr(training, "momentum", 0.9))
    if kind == "adam":
        return keras.optimizers.Adam(beta_1=training.beta_1, beta_2=training.beta_2, **common)
    if kind == "adamw":
        return keras.optimizers.AdamW(
            weight_decay=training.weight_decay, beta_1=training.beta_1, beta_2=training.beta_2, **common
        )
    if kind == "sgd":
        return keras.optimizers.SGD(**common)
    if kind in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=momentum, nesterov=kind == "nesterov", **common)
    if kind == "rmsprop":
        return keras.optimizers.RMSprop(**common)
    if kind == "adagrad":
        return keras.optimizers.Adagrad(**common)
    raise ValueError(
        "Expected optimiser adam, adamw, sgd, momentum, nesterov, rmsprop or adagrad. "
        f"Received: optimiser={kind!r}"
    )
