"""Training: Keras ``fit`` for the regression families, checkpoints and resume, strategies, logs.

``tfuq train CONFIG`` runs :func:`tfuq.stages.train.train`. The pieces:
:class:`RegressionTrainer` (loss terms per step), :func:`build_optimizer`,
:class:`TrainingCheckpoints`, the callbacks, :func:`make_strategy` and the
stored target normalisation (:func:`fit_target_normalisation`).
"""

from tfuq.training.build import build_trainer, check_training_config, make_loss
from tfuq.training.checkpoints import TrainingCheckpoints, resolve_start, save_network
from tfuq.training.inputs import TrainingInputs, prepare_inputs
from tfuq.training.loop import distributed_fit
from tfuq.training.normalisation import (
    fit_pooled_normalisation,
    fit_target_normalisation,
)
from tfuq.training.optimizers import build_optimizer, build_schedule
from tfuq.training.strategy import distribute_dataset, make_strategy, precision_policy
from tfuq.training.trainer import RegressionTrainer

__all__ = [
    "RegressionTrainer",
    "TrainingCheckpoints",
    "TrainingInputs",
    "build_optimizer",
    "build_schedule",
    "build_trainer",
    "check_training_config",
    "distribute_dataset",
    "distributed_fit",
    "fit_pooled_normalisation",
    "fit_target_normalisation",
    "make_loss",
    "make_strategy",
    "precision_policy",
    "prepare_inputs",
    "resolve_start",
    "save_network",
]
