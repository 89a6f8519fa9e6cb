"""``tfuq train CONFIG``: train the configured model end to end, resuming where it stopped.

The steps of :func:`run_training`:

1. devices and precision (:mod:`tfuq.training.strategy`), seeds;
2. the start step from ``[TRAINING] starting_iter`` and the checkpoints
   (:func:`~tfuq.training.checkpoints.resolve_start`);
3. the inputs (:func:`~tfuq.training.inputs.prepare_inputs`): subjects and
   their split, the target normalisation stored in
   ``<model_dir>/normalisation.json``, and the tf.data pipelines, one per
   worker, distributed over the replicas; a resumed run replays the
   deterministic window stream up to its step, so it continues with the
   windows an uninterrupted run would have seen;
4. the trainer: :class:`~tfuq.training.trainer.RegressionTrainer` for
   ``[REGRESSION]``; for ``[GAN]``, ``tfuq.training.gan.build_gan_trainer``;
5. Keras ``fit`` (under ``multi_worker``: :func:`~tfuq.training.loop.distributed_fit`,
   see there) for ``max_iter`` iterations with the callbacks of
   :mod:`tfuq.training.callbacks` (checkpoints every ``save_every_n``,
   CSV/TensorBoard logs, validation every ``validation_every_n``, early
   stopping, NaN guard, progress);
6. the final checkpoint, ``<model_dir>/model.keras`` (the network) and
   ``<model_dir>/training_config.ini`` (the resolved configuration).

Keras epochs are only a bookkeeping unit here: one epoch is the greatest
common divisor of the checkpoint and validation periods, so that every
checkpoint step starts an epoch and validations fall on their steps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfuq.atomic import write_text
from tfuq.config import Config
from tfuq.errors import UserError
from tfuq.model_store.layout import CHECKPOINT_DIR, CONFIG_FILE, MODEL_FILE
from tfuq.training import callbacks as cb
from tfuq.training.build import build_trainer, check_training_config
from tfuq.training.checkpoints import (
    TrainingCheckpoints,
    checkpoint_steps,
    resolve_start,
    save_network,
)
from tfuq.training.inputs import TrainingInputs, prepare_inputs
from tfuq.training.loop import distributed_fit
from tfuq.training.strategy import is_chief, make_strategy, precision_policy
from tfuq.training.summaries import TensorBoardLog, prediction_images

__all__ = ["TrainingResult", "run_training", "train"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingResult:
    """What a run did.

    Attributes:
        model_dir: The run's folder.
        start_step: Step it resumed from (0 from scratch).
        final_step: Step reached.
        stopped: ``"max_iter"``, ``"converged"``, ``"early_stopping"`` or ``"already_trained"``.
        trainer: The trained ``keras.Model`` trainer (its network is ``trainer.network``
            or ``trainer.generator``).
    """

    model_dir: Path
    start_step: int
    final_step: int
    stopped: str
    trainer: Any = dataclasses.field(repr=False, default=None)


def train(config: Config) -> None:
    """Train ``config``'s model (the ``tfuq train`` stage); see :func:`run_training`."""
    run_training(config)


def _config_learning_rate(config: Config, trainer: keras.Model) -> None:
    """A constant learning rate comes from the config, not the checkpoint (e.g. lowered after a NaN)."""
    from tfuq.training.trainer import RegressionTrainer

    if not isinstance(trainer, RegressionTrainer) or config.training.lr_schedule != "constant":
        return
    restored = float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate))
    if not math.isclose(restored, config.training.lr, rel_tol=1e-6):
        logger.info(
            "learning rate %g from [TRAINING] lr replaces the checkpoint's %g", config.training.lr, restored
        )
        trainer.optimizer.learning_rate = config.training.lr


def _network_of(trainer: keras.Model) -> keras.Model | None:
    for name in ("network", "generator"):
        network = getattr(trainer, name, None)
        if isinstance(network, keras.Model):
            return network
    return None


def _epoch_length(config: Config, validating: bool) -> int:
    t = config.training
    periods = [p for p in (t.save_every_n, t.validation_every_n if validating else 0) if p > 0]
    return math.gcd(*periods) if periods else t.max_iter


def run_training(config: Config, *, strategy: tf.distribute.Strategy | None = None) -> TrainingResult:
    """Train ``config``'s model; resume from its checkpoints when ``starting_iter = -1``.

    Args:
        config: The loaded configuration.
        strategy: Use this strategy instead of ``[SYSTEM] strategy`` (tests).

    Returns:
        TrainingResult.

    Raises:
        UserError: data or config problems, ``starting_iter = 0`` over an
            existing run, or a non-finite loss (the message names the step
            and the last good checkpoint, which is kept).
    """
    check_training_config(config)
    t = config.training
    strategy = make_strategy(config.system) if strategy is None else strategy
    chief = is_chief(strategy)
    model_dir = config.model_dir
    ckpt_dir = model_dir / CHECKPOINT_DIR

    start = resolve_start(t.starting_iter, checkpoint_steps(ckpt_dir), ckpt_dir)
    if start == 0 and (model_dir / MODEL_FILE).exists():
        raise UserError(
            f"{model_dir / MODEL_FILE}: a trained model exists but there is no checkpoint to resume from; "
            "refusing to overwrite it: move it away or use another [SYSTEM] model_dir"
        )
    data = prepare_inputs(config, strategy, start=start, chief=chief)

    keras.utils.set_random_seed(config.system.seed)  # initial weights are a function of the seed
    with precision_policy(config.system.mixed_precision), strategy.scope():
        trainer = build_trainer(config)
    checkpoints = TrainingCheckpoints(trainer, ckpt_dir, max_to_keep=t.max_checkpoints, chief=chief)
    best = TrainingCheckpoints(trainer, ckpt_dir / "best", max_to_keep=1, chief=chief)
    try:
        if start:
            checkpoints.restore(start)
            _config_learning_rate(config, trainer)
        logger.info(
            "training %s on %d subject(s), steps %d -> %d, %s with %d replica(s), global batch %d",
            config.network.name,
            len(data.train_ids),
            start,
            t.max_iter,
            type(strategy).__name__,
            strategy.num_replicas_in_sync,
            config.network.batch_size,
        )
        clock = cb.StepClock(start, t.max_iter)
        guard = cb.NaNGuard(clock)
        callbacks = _callbacks(config, clock, guard, checkpoints, best, trainer, chief, data)
        stopped = "already_trained"
        if start < t.max_iter:
            epoch = _epoch_length(config, data.validating)
            first = start // epoch
            fit_args = {
                "epochs": first + math.ceil((t.max_iter - start) / epoch),
                "initial_epoch": first,
                "steps_per_epoch": epoch,
                "validation_data": data.valid_data,
                "validation_freq": max(1, t.validation_every_n // epoch) if data.validating else 1,
                "callbacks": callbacks,
            }
            if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                distributed_fit(trainer, strategy, data.train_data, **fit_args)  # Keras fit cannot (loop.py)
            else:
                with warnings.catch_warnings():  # tf.data has no shuffle flag; validation ends unannounced
                    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")
                    warnings.filterwarnings("ignore", message=r"Your input ran out of data")
                    trainer.fit(data.train_data, verbose=0, **fit_args)
            stopped = _reason(callbacks, clock)
        if not guard.ok:
            raise UserError(_nan_message(guard, checkpoints, ckpt_dir))
        checkpoints.save(clock.step)
        if chief:
            _save_outputs(config, trainer)
        logger.info("trained to step %d (%s); model in %s", clock.step, stopped, model_dir / MODEL_FILE)
        return TrainingResult(model_dir, start, clock.step, stopped, trainer)
    finally:
        checkpoints.close()
        best.close()


def _callbacks(
    config: Config,
    clock: cb.StepClock,
    guard: cb.NaNGuard,
    checkpoints: TrainingCheckpoints,
    best: TrainingCheckpoints,
    trainer: keras.Model,
    chief: bool,
    data: TrainingInputs,
) -> list[keras.callbacks.Callback]:
    t = config.training
    log_dir = config.model_dir / "logs"
    out: list[keras.callbacks.Callback] = [
        clock,
        guard,
        cb.CheckpointSaver(clock, checkpoints, t.save_every_n, guard),
        cb.CSVLog(clock, log_dir, t.log_every_n, enabled=chief),
    ]
    if data.validating:
        out.append(cb.BestCheckpoint(clock, best, enabled=chief, start=t.early_stopping_start))
        if t.early_stopping_patience:
            out.append(
                cb.ValidationEarlyStopping(t.early_stopping_patience, clock, start=t.early_stopping_start)
            )
    if t.convergence_window:
        out.append(
            cb.ConvergenceStop(clock, t.convergence_window, t.convergence_tolerance, log_dir / "training.csv")
        )
    if chief and t.tensorboard_every_n:
        out.append(
            TensorBoardLog(
                clock,
                log_dir / "tensorboard",
                t.tensorboard_every_n,
                images=_image_source(config, trainer, data.sample),
                image_every_n=t.save_every_n,
            )
        )
    out.append(cb.Progress(clock, enabled=chief))
    return out


def _image_source(config: Config, trainer: keras.Model, sample: Any) -> Any:
    """A closure giving the mid-slice images of one fixed window (None when the trainer has no network)."""
    network = _network_of(trainer)
    if network is None:
        return None
    cache: dict[str, Any] = {}

    def images() -> dict[str, Any]:
        if "batch" not in cache:
            cache["batch"] = next(iter(sample()))
        return prediction_images(network, config.family, cache["batch"])

    return images


def _reason(callbacks: list[keras.callbacks.Callback], clock: cb.StepClock) -> str:
    for callback in callbacks:
        if isinstance(callback, cb.ConvergenceStop) and callback.stopped:
            return "converged"
        if isinstance(callback, cb.ValidationEarlyStopping) and callback.stopped:
            return "early_stopping"
    return "max_iter" if clock.step >= clock.stop else "stopped"


def _nan_message(guard: cb.NaNGuard, checkpoints: TrainingCheckpoints, ckpt_dir: Path) -> str:
    values = ", ".join(f"{k} = {v}" for k, v in guard.bad_values.items())
    kept = checkpoints.last_saved
    where = (
        f"the last good checkpoint (step {kept}) is kept in {ckpt_dir}" if kept else "no checkpoint was saved"
    )
    return (
        f"training stopped at step {guard.bad_step}: the loss is not finite ({values}); {where}; "
        "lower [TRAINING] lr, set grad_clip_norm, or check the data for extreme values"
    )


def _save_outputs(config: Config, trainer: keras.Model) -> None:
    network = _network_of(trainer)
    if network is None:
        logger.warning("the trainer has no network or generator attribute: %s not written", MODEL_FILE)
    else:
        save_network(network, config.model_dir / MODEL_FILE)
    write_text(config.model_dir / CONFIG_FILE, config.to_ini(), overwrite=True)
