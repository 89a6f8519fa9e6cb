"""The data a training run consumes: split, fixed target normalisation, distributed pipelines.

:func:`prepare_inputs` resolves the sources (the phantom on first use),
reads or makes the dataset split (only the chief writes files), fixes the
target normalisation for every subject (stored in ``normalisation.json``,
:mod:`tfuq.training.normalisation`; a resumed run reuses the stored one) and
builds the training and validation pipelines: every worker builds the
global batches of one process and keeps its replicas' rows
(:func:`~tfuq.training.strategy.distribute_dataset`).

The training stream is a deterministic function of the seed that starts
afresh on every iteration (``fixed_stream``); a run resumed at step k skips
its first k global batches, so it sees the windows an uninterrupted run
would have seen.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfuq.config import Config
from tfuq.data.normalisation import NormalisationParams
from tfuq.errors import UserError
from tfuq.model_store.normalisation import read_target_normalisation, write_normalisation
from tfuq.training.normalisation import fit_target_normalisation
from tfuq.training.strategy import distribute_dataset

__all__ = ["TrainingInputs", "prepare_inputs"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingInputs:
    """Subjects, target normalisation and datasets of one run.

    Attributes:
        train_ids: Training subjects.
        valid_ids: Validation subjects.
        target_normalisation: The target's parameters for every subject.
        train_data: Endless distributed training dataset.
        valid_data: Finite distributed validation dataset (``validation_max_iter``
            global batches), or None when not validating.
        sample: ``() -> tf.data.Dataset`` of single windows (validation, else
            training) for TensorBoard images.
    """

    train_ids: list[str]
    valid_ids: list[str]
    target_normalisation: NormalisationParams
    train_data: Any
    valid_data: Any
    sample: Callable[[], tf.data.Dataset]

    @property
    def validating(self) -> bool:
        """Whether validation runs."""
        return self.valid_data is not None


def prepare_inputs(
    config: Config, strategy: tf.distribute.Strategy, *, start: int = 0, chief: bool = True
) -> TrainingInputs:
    """Split, target normalisation and distributed datasets of a run resumed at ``start``.

    Every input is checked before anything is written (see the module
    notes); the chief then writes a new split and a newly fitted
    ``normalisation.json``, other workers write nothing.

    Raises:
        UserError: no training subject, or data problems (one line).
        ConfigError: a window or sampling setting the data cannot take.
    """
    from tfuq.data.dataset import plan_dataset
    from tfuq.data.pipeline import make_training_dataset, make_validation_dataset
    from tfuq.data.sources import resolve_sources
    from tfuq.data.split import TRAINING, VALIDATION

    t = config.training
    sources = resolve_sources(config)
    plan = plan_dataset(config, sources)
    train_ids, valid_ids = plan.ids(TRAINING), plan.ids(VALIDATION)
    if not train_ids:
        raise UserError(
            f"{config.system.dataset_split_file}: no Training subject; check the split and the data"
        )
    stored = read_target_normalisation(config.model_dir) if start else None
    target = stored if stored is not None else fit_target_normalisation(config, train_ids, sources)
    # per-subject targets: the pipeline fits each subject's own target normalisation
    shared = {"sources": sources, "target_normalisation": None if config.per_subject_target else target}

    # every worker builds the whole global stream from the same seeds and keeps its replicas' rows
    # (distribute_dataset), so W workers train on the batches of one process
    def train_pipeline(batch: int) -> tf.data.Dataset:
        return make_training_dataset(config, train_ids, batch_size=batch, fixed_stream=True, **shared)

    def valid_pipeline(batch: int) -> tf.data.Dataset:
        # validation_max_iter global batches of windows (NiftyNet's meaning), the same ones at every
        # validation
        return make_validation_dataset(
            config,
            valid_ids,
            batch_size=batch,
            num_windows=t.validation_max_iter * config.network.batch_size,
            **shared,
        )

    def sample() -> tf.data.Dataset:
        if valid_ids:
            return valid_pipeline(1)
        return make_training_dataset(config, train_ids[:1], batch_size=1, **shared)

    batch = config.network.batch_size
    if start:
        logger.info("resuming from step %d (replaying the window stream to that step)", start)
    train_data = distribute_dataset(strategy, train_pipeline, batch, skip_steps=start)
    valid_data = None
    if t.validation_every_n > 0 and valid_ids:
        valid_data = distribute_dataset(strategy, valid_pipeline, batch, take_steps=t.validation_max_iter)
    elif t.validation_every_n > 0:
        logger.warning(
            "validation_every_n = %d but no Validation subject: not validating", t.validation_every_n
        )
    if chief:  # every subject the run reads is loaded (and checked) by now: the first writes
        plan.write_split()
        if stored is None:
            write_normalisation(config.model_dir, config, target)
    return TrainingInputs(train_ids, valid_ids, target, train_data, valid_data, sample)
