"""The configuration a model was trained with, and a config that contradicts it.

``tfuq train`` stores its resolved configuration as
``<model_dir>/training_config.ini`` (:data:`~tfuq.model_store.layout.CONFIG_FILE`).
Commands that use the trained model (``tfuq infer``, ``calibrate``,
``export``) read the network from ``model.keras``, so a config whose network,
head or input geometry differs from the stored one would be silently ignored
(or, for the input normalisation and voxel grid, silently applied to a model
trained otherwise). :func:`check_matches_model` refuses it in one line naming
the differing keys.

What must match (:func:`model_differences`): the application; the
architecture keys of ``[NETWORK]`` (:data:`NETWORK_KEYS`); the head and
dropout of ``[UNCERTAINTY]`` (:data:`UNCERTAINTY_KEYS`); and, for each input
section in order and the target section, the keys that say what the network
sees (:data:`SOURCE_KEYS`: training window, voxel grid, orientation,
intensity normalisation). Input sections are matched by role, not name, so
a config may call the stored ``[MR]`` ``[T1]``. Everything else (data
folders, batch sizes, inference window and overlap, T, outputs, seeds) may
differ.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tfuq.config import Config, ConfigError, format_value, load_config
from tfuq.errors import UserError
from tfuq.model_store.layout import CONFIG_FILE

__all__ = [
    "NETWORK_KEYS",
    "SOURCE_KEYS",
    "TARGET_KEYS",
    "UNCERTAINTY_KEYS",
    "check_matches_model",
    "model_differences",
    "read_stored_config",
]

_LOG = logging.getLogger(__name__)

#: ``[NETWORK]`` keys that build the network (the others only batch and sample windows).
NETWORK_KEYS = (
    "name",
    "activation_function",
    "spatial_mode",
    "depth",
    "base_filters",
    "feature_norm",
    "blocks_per_stack",
    "residual_matching",
    "multires_factors",
    "branch_filters",
    "deep_supervision",
    "num_phases",
)
#: ``[UNCERTAINTY]`` keys built into the network's head and dropout layers.
UNCERTAINTY_KEYS = ("family", "dropout", "dropout_layers", "dropout_rate", "concrete_temperature")
#: Input section keys that say what the network sees.
SOURCE_KEYS = (
    "spatial_window_size",
    "pixdim",
    "axcodes",
    "intensity_normalisation",
    "cutoff",
    "intensity_window",
    "normalise_foreground_only",
)
#: Target section keys that say what its outputs are.
TARGET_KEYS = (*SOURCE_KEYS, "target_normalisation")


def read_stored_config(model_dir: Path) -> Config | None:
    """The configuration stored in ``<model_dir>/training_config.ini``, or None without one.

    Raises:
        UserError: the file exists but does not load (the message names it).
    """
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except ConfigError as error:
        raise UserError(f"{path}: the stored training config does not load: {error}") from None


def _show(value: object) -> str:
    return format_value(value) or "(empty)"


def model_differences(config: Config, stored: Config) -> list[str]:
    """The model-defining settings of ``config`` that differ from ``stored``, one phrase each.

    Args:
        config: The configuration a command was given.
        stored: The one the model was trained with.

    Returns:
        Phrases like ``[NETWORK] base_filters = 8 (trained with 4)``, in
        section order; empty when the model fits.
    """
    if config.application != stored.application:
        return [f"[{config.application}] (trained as [{stored.application}])"]
    out = []
    for name, keys in (("NETWORK", NETWORK_KEYS), ("UNCERTAINTY", UNCERTAINTY_KEYS)):
        mine, theirs = config.section(name), stored.section(name)
        out += [
            f"[{name}] {key} = {_show(getattr(mine, key))} (trained with {_show(getattr(theirs, key))})"
            for key in keys
            if getattr(mine, key) != getattr(theirs, key)
        ]
    inputs, trained = config.input_sections, stored.input_sections
    if len(inputs) != len(trained):
        role = "image" if config.application == "REGRESSION" else "conditioning"
        out.append(
            f"[{config.application}] {role} = {', '.join(inputs)} "
            f"({len(inputs)} input(s); trained with {len(trained)}: {', '.join(trained)})"
        )
        return out
    pairs = [(a, b, SOURCE_KEYS) for a, b in zip(inputs, trained)]
    pairs.append((config.target_section, stored.target_section, TARGET_KEYS))
    for mine_name, their_name, keys in pairs:
        mine, theirs = config.sources.get(mine_name), stored.sources.get(their_name)
        if mine is None or theirs is None:
            continue
        out += [
            f"[{mine_name}] {key} = {_show(getattr(mine, key))} (trained with {_show(getattr(theirs, key))})"
            for key in keys
            if getattr(mine, key) != getattr(theirs, key)
        ]
    return out


def check_matches_model(config: Config, command: str) -> None:
    """Refuse, in one line, a config that contradicts the model stored in its ``model_dir``.

    A model_dir without ``training_config.ini`` (a model saved by other
    means) is not checked.

    Args:
        config: The configuration ``command`` was given.
        command: For the message, e.g. ``"tfuq infer"``.

    Raises:
        UserError: a model-defining setting differs (:func:`model_differences`);
            the message names every differing key and the stored file.
    """
    stored = read_stored_config(config.model_dir)
    if stored is None:
        _LOG.debug("%s: no %s; the config is not checked against the model", config.model_dir, CONFIG_FILE)
        return
    differences = model_differences(config, stored)
    if differences:
        raise UserError(
            f"{command}: {config.path} contradicts the model in {config.model_dir}, trained with "
            f"{config.model_dir / CONFIG_FILE}: {'; '.join(differences)}; use the settings it was trained "
            "with (or give the model_dir itself: tfuq infer MODEL_DIR), or train into another model_dir"
        )
