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
6. the final checkpoint and ``<model_dir>/model.keras`` (the network).

The whole run holds the model_dir's writer lock (:mod:`tfuq.model_store.lock`;
under ``multi_worker`` the chief's, the only writer): a second ``tfuq train``
on it fails at once. Before anything is written:

- ``--overwrite`` (``overwrite=True``) moves an earlier model aside
  (:func:`~tfuq.model_store.replace.move_aside`) and starts afresh;
- otherwise a model_dir holding a trained model is a contract: its stored
  ``training_config.ini`` is compared with the configuration
  (:mod:`tfuq.model_store.contract`); a change to what the model is or is
  trained on is refused, changes that continue the training are logged;
- the checkpoint to resume from is chosen among the intact ones
  (:func:`~tfuq.training.checkpoints.choose_start`): a damaged latest one is
  set aside with a warning and the previous one is used;
- the temporary files of writes interrupted by a kill are removed.

The configuration is stored in ``<model_dir>/training_config.ini`` (atomically)
once the trainer is ready, before the first step of a run that trains: from
then on the folder says what its model is, even if the run is killed. Every
step's CSV rows, validation and best checkpoint are written before its
checkpoint (:mod:`tfuq.training.callbacks`), so a run killed anywhere and
resumed ends with the logs, best checkpoint and weights of an uninterrupted
run (the weights bitwise with ``tf.config.experimental.enable_op_determinism``,
see ``tests/training/test_resume_after_kill.py``).

Keras epochs are only a bookkeeping unit here: one epoch is the greatest
common divisor of the checkpoint and validation periods, so that every
checkpoint step starts an epoch and validations fall on their steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfuq.atomic import recover_interrupted, write_text
from tfuq.config import Config
from tfuq.errors import UserError
from tfuq.log import LOGGER_NAME
from tfuq.model_store.contract import check_continuation, read_stored_config
from tfuq.model_store.layout import CHECKPOINT_DIR, CONFIG_FILE, LOG_DIR, MODEL_FILE
from tfuq.model_store.lock import model_dir_lock
from tfuq.model_store.replace import move_aside
from tfuq.training import callbacks as cb
from tfuq.training.build import build_trainer, check_training_config
from tfuq.training.checkpoints import (
    TrainingCheckpoints,
    checkpoint_steps,
    choose_start,
    remove_interrupted_saves,
    save_network,
    set_aside_damaged,
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


#: Best-validation checkpoints kept: the one ``best.json`` names survives the save of the next.
_BEST_KEPT = 2


def train(config: Config, *, overwrite: bool = False) -> None:
    """Train ``config``'s model (the ``tfuq train`` stage); see :func:`run_training`."""
    run_training(config, overwrite=overwrite)


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


def run_training(
    config: Config, *, strategy: tf.distribute.Strategy | None = None, overwrite: bool = False
) -> TrainingResult:
    """Train ``config``'s model; resume from its checkpoints when ``starting_iter = -1``.

    Args:
        config: The loaded configuration.
        strategy: Use this strategy instead of ``[SYSTEM] strategy`` (tests).
        overwrite: Start afresh: move the model already in the model_dir aside
            (into ``replaced-<timestamp>/``, nothing is deleted) instead of
            continuing it.

    Returns:
        TrainingResult.

    Raises:
        UserError: data or config problems, another run writing to the
            model_dir, a configuration that changes the stored model's,
            ``starting_iter = 0`` over an existing run, a damaged checkpoint
            asked for by its step, or a non-finite loss (the message names
            the step and the last good checkpoint, which is kept).
    """
    # the strategy first: MultiWorkerMirroredStrategy configures collective ops, which TensorFlow allows
    # only before its context exists, and the checks below build an optimiser (a TF variable)
    strategy = make_strategy(config.system) if strategy is None else strategy
    check_training_config(config)
    if overwrite and config.training.starting_iter > 0:
        raise UserError(
            f"--overwrite starts afresh; it cannot resume from [TRAINING] starting_iter = "
            f"{config.training.starting_iter}: drop one of the two"
        )
    chief = is_chief(strategy)
    lock = (
        model_dir_lock(config.model_dir, command=f"tfuq train {config.path}")
        if chief
        else contextlib.nullcontext()  # other workers write nothing into the model_dir
    )
    with lock:
        start = _prepare_model_dir(config, chief=chief, overwrite=overwrite)
        return _run(config, strategy, start, chief=chief)


def _active_logs() -> list[Path]:
    """The log files this process writes (they stay when the model_dir's model is moved aside)."""
    handlers = logging.getLogger(LOGGER_NAME).handlers
    return [Path(h.baseFilename) for h in handlers if isinstance(h, logging.FileHandler)]


def _prepare_model_dir(config: Config, *, chief: bool, overwrite: bool) -> int:
    """Check the model_dir's contract, choose the intact checkpoint, clean up; the start step."""
    model_dir = config.model_dir
    ckpt_dir = model_dir / CHECKPOINT_DIR
    stored = read_stored_config(model_dir)
    if overwrite:
        if not chief:
            return 0  # the chief moves the model aside; a new one starts from scratch
        move_aside(config, stored=stored, keep=_active_logs())
        stored = None
    trained = bool(checkpoint_steps(ckpt_dir)) or (model_dir / MODEL_FILE).exists()
    if trained and stored is not None:
        for change in check_continuation(model_dir, stored, config):
            logger.info("continuing the model in %s with a changed setting: %s", model_dir, change.describe())
    elif trained:
        logger.warning(
            "%s: no %s records what the model there was trained with; this run's configuration is stored",
            model_dir,
            CONFIG_FILE,
        )
    start, damaged = choose_start(config.training.starting_iter, ckpt_dir)
    if start == 0 and (model_dir / MODEL_FILE).exists():
        raise UserError(
            f"{model_dir / MODEL_FILE}: a trained model exists but there is no checkpoint to resume from; "
            "refusing to overwrite it: start afresh with tfuq train --overwrite (it is moved aside), or use "
            "another [SYSTEM] model_dir"
        )
    if not chief:
        return start
    removed = [
        *(
            folder / name
            for folder in (model_dir, model_dir / LOG_DIR, ckpt_dir / "best")
            for name in recover_interrupted(folder)
        ),
        *remove_interrupted_saves(ckpt_dir),
        *remove_interrupted_saves(ckpt_dir / "best"),
    ]
    if removed:
        names = ", ".join(str(p.relative_to(model_dir)) for p in removed)
        logger.warning("removed what writes interrupted by a kill left in %s: %s", model_dir, names)
    if damaged:
        folder = set_aside_damaged(ckpt_dir, sorted(damaged))
        newest = max(damaged)
        logger.warning(
            "%s: checkpoint %d is damaged (%s); resuming from the previous intact checkpoint (step %d); "
            "the damaged files are in %s",
            ckpt_dir,
            newest,
            damaged[newest],
            start,
            folder,
        )
    return start


def _run(config: Config, strategy: tf.distribute.Strategy, start: int, *, chief: bool) -> TrainingResult:
    """Train from ``start`` (the model_dir is locked and ready)."""
    t = config.training
    model_dir = config.model_dir
    ckpt_dir = model_dir / CHECKPOINT_DIR
    data = prepare_inputs(config, strategy, start=start, chief=chief)

    keras.utils.set_random_seed(config.system.seed)  # initial weights are a function of the seed
    with precision_policy(config.system.mixed_precision), strategy.scope():
        trainer = build_trainer(config)
    checkpoints = TrainingCheckpoints(trainer, ckpt_dir, max_to_keep=t.max_checkpoints, chief=chief)
    best = TrainingCheckpoints(trainer, ckpt_dir / "best", max_to_keep=_BEST_KEPT, chief=chief)
    try:
        if start:
            checkpoints.restore(start)
            _config_learning_rate(config, trainer)
        if chief and (start < t.max_iter or not (model_dir / CONFIG_FILE).exists()):
            write_text(model_dir / CONFIG_FILE, config.to_ini(), overwrite=True)  # the contract from now on
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
    log_dir = config.model_dir / LOG_DIR
    csv_log = cb.CSVLog(clock, log_dir, t.log_every_n, enabled=chief)
    out: list[keras.callbacks.Callback] = [clock, guard, csv_log]
    if data.validating:
        history = csv_log.valid_path
        out.append(
            cb.BestCheckpoint(clock, best, enabled=chief, start=t.early_stopping_start, history=history)
        )
        if t.early_stopping_patience:
            out.append(
                cb.ValidationEarlyStopping(
                    t.early_stopping_patience, clock, start=t.early_stopping_start, history=history
                )
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
    # the commit point of a step: after its row, validation and best checkpoint (callbacks.py)
    out.append(cb.CheckpointSaver(clock, checkpoints, t.save_every_n, guard))
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
