"""``tfuq train CONFIG``: train the configured model end to end, resuming where it stopped.

The steps of :func:`run_training`:

1. devices and precision (:mod:`tfuq.training.strategy`), seeds;
2. subjects and their split (``[SYSTEM] dataset_split_file``, made on first use);
3. the start step from ``[TRAINING] starting_iter`` and the checkpoints
   (:func:`~tfuq.training.checkpoints.resolve_start`);
4. the target normalisation for every subject, stored in
   ``<model_dir>/normalisation.json`` (:mod:`tfuq.training.normalisation`);
5. the tf.data pipelines, one per worker, distributed over the replicas; a
   resumed run replays the deterministic window stream up to its step so it
   continues with the windows an uninterrupted run would have seen;
6. the trainer: :class:`~tfuq.training.trainer.RegressionTrainer` for
   ``[REGRESSION]``; for ``[GAN]``, ``tfuq.training.gan.build_gan_trainer``;
7. Keras ``fit`` (under ``multi_worker``: :func:`~tfuq.training.loop.distributed_fit`,
   see there) for ``max_iter`` iterations with the callbacks of
   :mod:`tfuq.training.callbacks` (checkpoints every ``save_every_n``,
   CSV/TensorBoard logs, validation every ``validation_every_n``, early
   stopping, NaN guard, progress);
8. the final checkpoint, ``<model_dir>/model.keras`` (the network) and
   ``<model_dir>/training_config.ini`` (the resolved configuration).

Keras epochs are only a bookkeeping unit here: one epoch is the greatest
common divisor of the checkpoint and validation periods, so that every
checkpoint step starts an epoch and validations fall on their steps.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfuq.atomic import write_text
from tfuq.config import Config, ConfigError
from tfuq.errors import NotAvailableError, UserError
from tfuq.training import callbacks as cb
from tfuq.training.checkpoints import (
    CHECKPOINT_DIR,
    MODEL_FILE,
    TrainingCheckpoints,
    checkpoint_steps,
    resolve_start,
    save_network,
)
from tfuq.training.loop import distributed_fit
from tfuq.training.normalisation import (
    fit_target_normalisation,
    read_target_normalisation,
    write_normalisation,
)
from tfuq.training.strategy import distribute_dataset, is_chief, make_strategy, precision_policy
from tfuq.training.summaries import TensorBoardLog, prediction_images

__all__ = ["CONFIG_FILE", "TrainingResult", "build_trainer", "make_loss", "run_training", "train"]

logger = logging.getLogger(__name__)

#: The resolved configuration written next to the model.
CONFIG_FILE = "training_config.ini"


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


def _fail(config: Config, key: str, message: str) -> ConfigError:
    return ConfigError(f"{config.path}: {key}: {message}")


def _check(config: Config) -> None:
    net = config.network
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


def _split(config: Config, sources: Any, chief: bool) -> dict[str, str]:
    from tfuq.data.split import load_or_create_split, make_split, read_split
    from tfuq.data.subjects import find_subjects

    ids = [s.id for s in find_subjects(sources)]
    fractions = {
        "validation_fraction": config.training.exclude_fraction_for_validation,
        "inference_fraction": config.training.exclude_fraction_for_inference,
        "seed": config.system.seed,
    }
    path = Path(config.system.dataset_split_file)
    if chief:
        return load_or_create_split(path, ids, **fractions)
    if path.exists():  # non-chief workers never write; the split is a function of ids and seed
        listed = read_split(path)
        return {i: listed[i] for i in ids if i in listed}
    return make_split(ids, **fractions)


def make_loss(config: Config) -> keras.losses.Loss:
    """The data term: NLL of the family, or L1/L2 (``loss_type``; the ``none`` family uses L2)."""
    from tfuq.losses import L1Loss, L2Loss, NLLLoss

    if config.training.loss_type == "l1":
        return L1Loss()
    if config.training.loss_type == "l2" or config.family == "point":
        return L2Loss()
    return NLLLoss(config.family)  # the pipeline's mask channel already excludes loss_border


def build_trainer(config: Config) -> keras.Model:
    """The compiled trainer of ``config`` (call under the strategy's scope and precision policy).

    ``[REGRESSION]``: a :class:`~tfuq.training.trainer.RegressionTrainer` with
    the ``[TRAINING]`` optimiser, built (a ``LossScaleOptimizer`` under
    ``mixed_float16``); ``[GAN]``: ``tfuq.training.gan.build_gan_trainer(config)``.

    Raises:
        ConfigError: an optimiser setting that does not apply.
        NotAvailableError: ``[GAN]`` before the GAN trainers exist.
    """
    from tfuq.networks import build_model
    from tfuq.training.optimizers import build_optimizer
    from tfuq.training.trainer import RegressionTrainer

    if config.application == "GAN":
        if importlib.util.find_spec("tfuq.training.gan") is None:
            raise NotAvailableError(
                f"{config.path}: [GAN] training is not available yet; it lands with issue #5"
            )
        from tfuq.training.gan import build_gan_trainer

        trainer = build_gan_trainer(config)
        if not getattr(trainer, "compiled", False):
            trainer.compile(optimizer=build_optimizer(config.training), jit_compile=False)
        return trainer
    net = config.network
    trainer = RegressionTrainer(
        build_model(config),
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
        NotAvailableError: ``[GAN]`` configs before the GAN trainers exist.
    """
    from tfuq.data.pipeline import make_training_dataset, make_validation_dataset
    from tfuq.data.sources import resolve_sources
    from tfuq.data.split import TRAINING, VALIDATION, subjects_in_phase

    _check(config)
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
    sources = resolve_sources(config)
    split = _split(config, sources, chief)
    train_ids, valid_ids = subjects_in_phase(split, TRAINING), subjects_in_phase(split, VALIDATION)
    if not train_ids:
        raise UserError(
            f"{config.system.dataset_split_file}: no Training subject; check the split and the data"
        )

    target_norm = read_target_normalisation(model_dir) if start else None
    if target_norm is None:
        target_norm = fit_target_normalisation(config, train_ids, sources)
        if chief:
            write_normalisation(model_dir, config, target_norm)

    validating = t.validation_every_n > 0 and bool(valid_ids)
    if t.validation_every_n > 0 and not valid_ids:
        logger.warning(
            "validation_every_n = %d but no Validation subject: not validating", t.validation_every_n
        )
    data = {"sources": sources, "target_normalisation": target_norm}

    def train_pipeline(shards: int, index: int, batch: int) -> tf.data.Dataset:
        return make_training_dataset(
            config,
            train_ids,
            num_shards=shards,
            shard_index=index,
            batch_size=batch,
            fixed_stream=True,
            **data,
        )

    def valid_pipeline(shards: int, index: int, batch: int) -> tf.data.Dataset:
        return make_validation_dataset(
            config, valid_ids, num_shards=shards, shard_index=index, batch_size=batch, **data
        )

    global_batch = config.network.batch_size
    if start:
        logger.info("resuming from step %d (replaying the window stream to that step)", start)
    train_data = distribute_dataset(strategy, train_pipeline, global_batch, skip_steps=start)
    valid_data = None
    if validating:
        valid_data = distribute_dataset(
            strategy, valid_pipeline, global_batch, take_steps=t.validation_max_iter
        )

    keras.utils.set_random_seed(config.system.seed)  # initial weights are a function of the seed
    with precision_policy(config.system.mixed_precision), strategy.scope():
        trainer = build_trainer(config)
    checkpoints = TrainingCheckpoints(trainer, ckpt_dir, max_to_keep=t.max_checkpoints, chief=chief)
    best = TrainingCheckpoints(trainer, ckpt_dir / "best", max_to_keep=1, chief=chief)
    try:
        if start:
            checkpoints.restore(start)
        logger.info(
            "training %s on %d subject(s), steps %d -> %d, %s with %d replica(s), global batch %d",
            config.network.name,
            len(train_ids),
            start,
            t.max_iter,
            type(strategy).__name__,
            strategy.num_replicas_in_sync,
            global_batch,
        )
        clock = cb.StepClock(start, t.max_iter)
        guard = cb.NaNGuard(clock)

        def sample() -> tf.data.Dataset:  # one fixed window for the TensorBoard images
            if validating:
                return valid_pipeline(1, 0, 1)
            return make_training_dataset(config, train_ids[:1], batch_size=1, **data)

        callbacks = _callbacks(config, clock, guard, checkpoints, best, trainer, chief, validating, sample)
        stopped = "already_trained"
        if start < t.max_iter:
            epoch = _epoch_length(config, validating)
            first = start // epoch
            fit_args = {
                "epochs": first + math.ceil((t.max_iter - start) / epoch),
                "initial_epoch": first,
                "steps_per_epoch": epoch,
                "validation_data": valid_data,
                "validation_freq": max(1, t.validation_every_n // epoch) if validating else 1,
                "callbacks": callbacks,
            }
            if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                distributed_fit(trainer, strategy, train_data, **fit_args)  # Keras fit cannot (loop.py)
            else:
                with warnings.catch_warnings():  # tf.data has no shuffle flag; validation ends unannounced
                    warnings.filterwarnings("ignore", message=r"`shuffle=True` was passed")
                    warnings.filterwarnings("ignore", message=r"Your input ran out of data")
                    trainer.fit(train_data, verbose=0, **fit_args)
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
    validating: bool,
    sample: Any,
) -> list[keras.callbacks.Callback]:
    t = config.training
    log_dir = config.model_dir / "logs"
    out: list[keras.callbacks.Callback] = [
        clock,
        guard,
        cb.CheckpointSaver(clock, checkpoints, t.save_every_n, guard),
        cb.CSVLog(clock, log_dir, t.log_every_n, enabled=chief),
    ]
    if validating:
        out.append(cb.BestCheckpoint(clock, best, enabled=chief))
        if t.early_stopping_patience:
            out.append(cb.ValidationEarlyStopping(t.early_stopping_patience))
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
                images=_image_source(config, trainer, sample),
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
