"""Optimisers and learning-rate schedules from ``[TRAINING]``.

``optimiser`` picks the Keras optimiser: ``adam`` and ``adamw`` (decoupled
weight decay, Loshchilov & Hutter; Reinhold et al. use lr 3e-3, weight decay
1e-6, betas 0.9/0.99), ``sgd``, ``momentum`` and ``nesterov`` (SGD with
``[TRAINING] momentum``), ``rmsprop`` and ``adagrad``. ``lr_schedule`` is
``constant``, ``cosine`` (cosine decay to 0 over ``max_iter``) or ``step``
(``lr * lr_step_factor ** floor(step / lr_step_every_n)``).
``grad_clip_norm`` clips the gradients to a global norm.

Reference: Loshchilov & Hutter, "Decoupled weight decay regularization",
ICLR 2019, arXiv:1711.05101.
"""

from __future__ import annotations

from typing import Any

import keras

from tfuq.config import TrainingSection

__all__ = ["OPTIMISERS", "build_optimizer", "build_schedule", "learning_rate_at"]

#: ``[TRAINING] optimiser`` names.
OPTIMISERS = ("adam", "adamw", "sgd", "momentum", "nesterov", "rmsprop", "adagrad")


def build_schedule(training: TrainingSection, learning_rate: float | None = None) -> Any:
    """The learning rate as a float (constant) or a Keras schedule of the iteration.

    Args:
        training: The ``[TRAINING]`` section (``lr_schedule``, ``max_iter``,
            ``lr_step_every_n``, ``lr_step_factor``).
        learning_rate: Initial rate; default ``training.lr``.

    Returns:
        float or ``keras.optimizers.schedules.LearningRateSchedule``.

    Raises:
        ValueError: an unknown schedule or a non-positive learning rate.

    Example:
        >>> schedule = build_schedule(TrainingSection(lr_schedule="step", max_iter=30))
        >>> round(learning_rate_at(schedule, 10), 6)  # 1e-3 * 0.1 after max_iter // 3 steps
        0.0001
    """
    lr = training.lr if learning_rate is None else float(learning_rate)
    if not lr > 0:
        raise ValueError(f"Expected a learning rate > 0. Received: learning_rate={lr}")
    kind = training.lr_schedule
    if kind == "constant":
        return lr
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, training.max_iter))
    if kind == "step":
        every = training.lr_step_every_n or max(1, training.max_iter // 3)
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=every, decay_rate=training.lr_step_factor, staircase=True
        )
    raise ValueError(f"Expected lr_schedule in ('constant', 'cosine', 'step'). Received: {kind!r}")


def learning_rate_at(schedule: Any, step: int) -> float:
    """The learning rate a :func:`build_schedule` result gives at ``step``."""
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(keras.ops.convert_to_numpy(schedule(step)))
    return float(schedule)


def build_optimizer(
    training: TrainingSection,
    *,
    learning_rate: float | None = None,
    clip: bool = True,
    name: str | None = None,
) -> keras.optimizers.Optimizer:
    """The ``[TRAINING]`` optimiser with its schedule (and gradient clipping).

    Args:
        training: The ``[TRAINING]`` section.
        learning_rate: Initial rate; default ``training.lr`` (e.g. a GAN's
            discriminator rate).
        clip: Apply ``grad_clip_norm`` as Keras ``global_clipnorm``. Under a
            multi-replica strategy Keras clips each replica's gradient before
            summing them; :class:`~tfuq.training.trainer.RegressionTrainer`
            therefore clips the summed gradient itself and passes ``clip=False``.
        name: Optimiser name; default Keras'.

    Returns:
        keras.optimizers.Optimizer: not yet built (its variables are made on
        first use or by ``optimizer.build(variables)``).

    Raises:
        ValueError: unknown optimiser, or ``weight_decay`` with an optimiser
            other than ``adamw``.

    Example:
        >>> opt = build_optimizer(TrainingSection(optimiser="adamw", lr=3e-3, weight_decay=1e-6))
    """
    kind = training.optimiser
    if kind not in OPTIMISERS:
        raise ValueError(f"Expected optimiser in {OPTIMISERS}. Received: {kind!r}")
    if training.weight_decay and kind != "adamw":
        raise ValueError(
            f"weight_decay is the decoupled decay of adamw. Expected optimiser = adamw or weight_decay = 0. "
            f"Received: optimiser={kind!r}, weight_decay={training.weight_decay}"
        )
    common: dict[str, Any] = {"learning_rate": build_schedule(training, learning_rate)}
    if clip and training.grad_clip_norm > 0:
        common["global_clipnorm"] = training.grad_clip_norm
    if name:
        common["name"] = name
    betas = {"beta_1": training.beta_1, "beta_2": training.beta_2}
    if kind == "adam":
        return keras.optimizers.Adam(**betas, **common)
    if kind == "adamw":
        return keras.optimizers.AdamW(weight_decay=training.weight_decay, **betas, **common)
    if kind == "sgd":
        return keras.optimizers.SGD(**common)
    if kind in ("momentum", "nesterov"):
        return keras.optimizers.SGD(momentum=training.momentum, nesterov=kind == "nesterov", **common)
    if kind == "rmsprop":
        return keras.optimizers.RMSprop(**common)
    return keras.optimizers.Adagrad(**common)
