"""A trained model as inference, calibration and export take it: network, target normalisation, members.

``tfuq train`` leaves in ``model_dir`` the network (``model.keras``), the
target normalisation (``normalisation.json``, :mod:`tfuq.model_store.normalisation`)
and checkpoints (names: :mod:`tfuq.model_store.layout`). :func:`load_trained_model`
reads the first two back (optionally with the weights of an earlier
checkpoint, ``[INFERENCE] inference_iter``); :func:`load_members` adds the
deep-ensemble members of ``[UNCERTAINTY] ensemble``, each with its own target
normalisation, so members trained on differently pooled targets still
combine in one unit system.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import keras
import tensorflow as tf

from tfuq.config import Config
from tfuq.data.normalisation import NormalisationParams
from tfuq.errors import UserError
from tfuq.model_store.keras_file import load_model
from tfuq.model_store.layout import CHECKPOINT_DIR, MODEL_FILE
from tfuq.model_store.normalisation import read_target_normalisation
from tfuq.model_store.precision import resolve_precision, with_precision
from tfuq.typing import PathLike

__all__ = ["TrainedModel", "load_members", "load_trained_model"]

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """One trained network and the normalisation its outputs are in.

    Attributes:
        model_dir: The run folder it was read from.
        model: The Keras network (inputs: one window, or one per MultiRes level).
        target_normalisation: Maps the network's normalised outputs back to
            the target's units.
    """

    model_dir: Path
    model: keras.Model
    target_normalisation: NormalisationParams


def _restore_checkpoint(model: keras.Model, model_dir: Path, step: int, *, best: bool = False) -> None:
    """Load the network weights of ``<model_dir>/checkpoints[/best]/ckpt-<step>`` into ``model``."""
    prefix = model_dir / CHECKPOINT_DIR / ("best" if best else "") / f"ckpt-{step}"
    try:
        names = {name for name, _ in tf.train.list_variables(str(prefix))}
    except (tf.errors.OpError, ValueError):
        raise UserError(
            f"{prefix}: no checkpoint of step {step}; set [INFERENCE] inference_iter = -1 or a saved step"
        ) from None
    attribute = "network" if any(n.startswith("model/network/") for n in names) else "generator"
    holder = tf.train.Checkpoint(model=tf.train.Checkpoint(**{attribute: model}))
    try:
        holder.restore(str(prefix)).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{prefix}: cannot restore the network from this checkpoint: {first}") from None


def load_trained_model(model_dir: PathLike, inference_iter: int = -1, *, best: bool = False) -> TrainedModel:
    """Read a trained network and its target normalisation from ``model_dir``.

    Args:
        model_dir: A folder written by ``tfuq train``.
        inference_iter: ``-1`` (default) for the final network; ``k > 0`` for
            the network weights of the checkpoint of step k.
        best: Take the weights of the lowest validation loss instead
            (``checkpoints/best``, written when training validates).

    Returns:
        TrainedModel.

    Raises:
        UserError: no ``model.keras`` (one line: run tfuq train first), no or
            a broken ``normalisation.json``, or a missing checkpoint.
    """
    folder = Path(model_dir)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise UserError(f"no trained model in {folder}; run tfuq train first")
    model = load_model(path, compile=False)
    if best:
        record = folder / CHECKPOINT_DIR / "best" / "best.json"
        try:
            step = int(json.loads(record.read_text(encoding="utf-8"))["step"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{record}: no readable best-validation record; train with validation") from None
        _restore_checkpoint(model, folder, step, best=True)
    elif inference_iter > 0:
        _restore_checkpoint(model, folder, inference_iter)
    params = read_target_normalisation(folder)
    if params is None:
        raise UserError(f"no normalisation.json in {folder}; run tfuq train first")
    return TrainedModel(folder, model, params)


def load_members(config: Config) -> list[TrainedModel]:
    """The configured model and the deep-ensemble members of ``[UNCERTAINTY] ensemble``.

    Every member is applied with the configuration's inputs, window,
    MultiRes geometry and ``[INFERENCE] precision``; only its weights and
    target normalisation are its own.

    Raises:
        UserError: a member without a trained model.
    """
    members = [load_trained_model(config.model_dir, config.inference.inference_iter)]
    for folder in config.uncertainty.ensemble:
        members.append(load_trained_model(folder))
    precision = resolve_precision(config, members[0].model_dir)
    if precision != "float32":
        members = [dataclasses.replace(m, model=with_precision(m.model, precision)) for m in members]
    if len(members) > 1:
        _LOG.info(
            "deep ensemble of %d members: %s", len(members), ", ".join(str(m.model_dir) for m in members)
        )
    return members
