"""Training: Keras ``fit`` for the regression families, checkpoints and resume, strategies, logs.

``tfuq train CONFIG`` runs :func:`tfuq.training.job.train`. The pieces:
:class:`RegressionTrainer` (loss terms per step), :func:`build_optimizer`,
:class:`TrainingCheckpoints`, the callbacks, :func:`make_strategy` and the
stored target normalisation (:func:`fit_target_normalisation`).
"""

from tfuq.training.checkpoints import TrainingCheckpoints, resolve_start, save_network
from tfuq.training.job import TrainingResult, run_training, train
from tfuq.training.normalisation import (
    fit_pooled_normalisation,
    fit_target_normalisation,
    read_target_normalisation,
    write_normalisation,
)
from tfuq.training.optimizers import build_optimizer, build_schedule
from tfuq.training.strategy import distribute_dataset, make_strategy, precision_policy
from tfuq.training.trainer import RegressionTrainer

__all__ = [
    "RegressionTrainer",
    "TrainingCheckpoints",
    "TrainingResult",
    "build_optimizer",
    "build_schedule",
    "distribute_dataset",
    "fit_pooled_normalisation",
    "fit_target_normalisation",
    "make_strategy",
    "precision_policy",
    "read_target_normalisation",
    "resolve_start",
    "run_training",
    "save_network",
    "train",
    "write_normalisation",
]
