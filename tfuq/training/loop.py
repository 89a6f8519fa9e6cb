"""A ``fit``-shaped training loop for strategies that Keras 3 ``fit`` cannot drive.

Keras 3 ``fit`` fails under ``tf.distribute.MultiWorkerMirroredStrategy``:
before training it reduces one input batch across the workers to build the
model symbolically, which that strategy cannot do for nested batches
(keras-team/keras#20585). :func:`distributed_fit` runs the same thing
without that step: the trainer's own ``train_step`` and ``test_step`` under
``strategy.run`` in a ``tf.function``, per-step outputs averaged over all
replicas of all workers (so every worker sees the same logs and takes the
same stopping decisions), and the same Keras callbacks with the same
``on_*`` calls and ``val_`` logs as ``fit``. A trainer with stages (it has
``current_stage``, as :class:`~tfuq.training.gan_upgan.UPGANTrainer`) gets
one traced step per stage, as its own ``make_train_function`` does under
``fit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

__all__ = ["distributed_fit"]


def _mean_over_replicas(strategy: tf.distribute.Strategy, outputs: Any) -> Any:
    return tf.nest.map_structure(
        lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), outputs
    )


def distributed_fit(
    trainer: keras.Model,
    strategy: tf.distribute.Strategy,
    train_data: Any,
    *,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback],
    validation_data: Any = None,
    validation_freq: int = 1,
) -> None:
    """Train like ``trainer.fit(train_data, ...)`` with the arguments of the same names.

    Args:
        trainer: A compiled ``keras.Model`` with ``train_step`` / ``test_step``
            returning dicts of scalars, built under ``strategy.scope()``.
        strategy: The strategy the trainer was built under.
        train_data: An endless distributed dataset (``strategy.distribute_datasets_from_function``).
        epochs: Index of the last epoch + 1.
        initial_epoch: Index of the first epoch.
        steps_per_epoch: Steps per epoch.
        callbacks: Keras callbacks (``model`` is set to ``trainer``).
        validation_data: A finite distributed dataset evaluated after every
            ``validation_freq``-th epoch, or None.
        validation_freq: Epochs between validations.
    """
    callback_list = keras.callbacks.CallbackList(list(callbacks), model=trainer)
    traced: dict[Any, Any] = {}

    def train_function(iterator: Any) -> Any:
        # One traced step per training stage: a trainer whose step differs between stages (UP-GAN's
        # progressive schedule: other variables trained, other optimisers) has ``current_stage``.
        stage = getattr(trainer, "current_stage", None)
        if stage not in traced:

            @tf.function
            def step(iterator: Any) -> Any:
                outputs = strategy.run(trainer.train_step, args=(next(iterator),))
                return _mean_over_replicas(strategy, outputs)

            traced[stage] = step
        return traced[stage](iterator)

    @tf.function
    def test_function(batch: Any) -> Any:
        return _mean_over_replicas(strategy, strategy.run(trainer.test_step, args=(batch,)))

    trainer.stop_training = False
    iterator = iter(train_data)
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        for metric in trainer.metrics:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        logs: dict[str, Any] = {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = train_function(iterator)
            callback_list.on_train_batch_end(step, logs)
            if trainer.stop_training:
                break
        epoch_logs = dict(logs)
        if validation_data is not None and (epoch + 1) % validation_freq == 0:
            for metric in trainer.metrics:
                metric.reset_state()
            callback_list.on_test_begin()
            val_logs: dict[str, Any] = {}
            for step, batch in enumerate(validation_data):
                callback_list.on_test_batch_begin(step)
                val_logs = test_function(batch)
                callback_list.on_test_batch_end(step, val_logs)
            callback_list.on_test_end(val_logs)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if trainer.stop_training:
            break
    callback_list.on_train_end()
