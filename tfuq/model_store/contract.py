"""A model_dir is a contract: the configuration its model was trained with, and what may change.

``tfuq train`` stores the resolved configuration in
``<model_dir>/training_config.ini`` (:data:`~tfuq.model_store.layout.CONFIG_FILE`)
when a run starts. A later ``tfuq train`` on the same model_dir continues that
model, so its configuration is compared with the stored one
(:func:`config_changes`): a change to what the model *is* or what it is
trained *on* (the network, the uncertainty family and dropout, the input and
target sections' files, normalisation and windows, the split, the optimiser,
the losses, the augmentation, the seed) is refused (:func:`check_continuation`)
unless the user starts afresh (``tfuq train --overwrite``, or another
model_dir). Only the keys of :data:`CONTINUATION_KEYS` may change: those that
say how long and how often the same training goes on, where it runs, and the
settings of the stages after training.

Values are compared as parsed values (``1e-3`` equals ``0.001``), paths inside
the model_dir relative to it (a moved model_dir keeps its contract); a key one
file lacks (a config written by another tfuq version) counts as its default,
and a key this version does not know is ignored.

Using a model is a looser contract (:func:`check_matches_model`). Commands
that use the trained model (``tfuq infer``, ``calibrate``, ``export``) read
the network from ``model.keras``, so a config whose network,
head or input geometry differs from the stored one would be silently ignored
(or, for the input normalisation and voxel grid, silently applied to a model
trained otherwise). :func:`check_matches_model` refuses it in one line naming
the differing keys. What must match (:func:`model_differences`) is the application; the
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

import configparser
import dataclasses
import fnmatch
import logging
import os
from pathlib import Path
from typing import Any

from tfuq.config import (
    APPLICATIONS,
    SECTIONS,
    Config,
    ConfigError,
    InputSource,
    field_specs,
    load_config,
    parse_value,
)
from tfuq.config.fields import ConfigValueError, FieldSpec, format_value
from tfuq.errors import UserError
from tfuq.model_store.layout import CONFIG_FILE
from tfuq.typing import PathLike

__all__ = [
    "CONTINUATION_KEYS",
    "NETWORK_KEYS",
    "SOURCE_KEYS",
    "TARGET_KEYS",
    "UNCERTAINTY_KEYS",
    "ConfigChange",
    "check_continuation",
    "check_matches_model",
    "config_changes",
    "load_stored_config",
    "model_differences",
    "read_stored_config",
]

#: ``SECTION.key`` (or ``SECTION.*``) that a run continuing a model_dir's training may change.
#: Everything else is the model_dir's contract. Chosen so that the trained weights stay a
#: continuation of the same training:
#:
#: - where and with what it runs: ``[SYSTEM]`` model_dir (a moved folder), threads, devices,
#:   strategy;
#: - how long: ``max_iter`` (a cosine or step schedule, and UP-GAN's default phases, stretch
#:   with it), ``lr_step_every_n``, ``starting_iter``;
#: - the remedies a stopped run is told to apply: ``lr`` (a constant rate comes from the config
#:   on resume) and ``grad_clip_norm``;
#: - how often it is checkpointed, logged and validated, and when it stops early:
#:   ``save_every_n``, ``max_checkpoints``, ``tensorboard_every_n``, ``log_every_n``,
#:   ``validation_every_n``, ``validation_max_iter``, ``early_stopping_*``, ``convergence_*``;
#: - the stages after training: ``[INFERENCE]``, ``[EVALUATION]``, ``[CALIBRATION]``,
#:   ``[EXPORT]``, and ``[UNCERTAINTY]`` mc_samples, flag_threshold, reliability, ensemble;
#: - ``[PHANTOM] cache_dir`` (where the same phantom is cached).
CONTINUATION_KEYS: tuple[str, ...] = (
    "SYSTEM.model_dir",
    "SYSTEM.num_threads",
    "SYSTEM.num_gpus",
    "SYSTEM.strategy",
    "TRAINING.starting_iter",
    "TRAINING.max_iter",
    "TRAINING.lr",
    "TRAINING.lr_step_every_n",
    "TRAINING.grad_clip_norm",
    "TRAINING.save_every_n",
    "TRAINING.max_checkpoints",
    "TRAINING.tensorboard_every_n",
    "TRAINING.log_every_n",
    "TRAINING.validation_every_n",
    "TRAINING.validation_max_iter",
    "TRAINING.early_stopping_patience",
    "TRAINING.early_stopping_start",
    "TRAINING.convergence_window",
    "TRAINING.convergence_tolerance",
    "INFERENCE.*",
    "EVALUATION.*",
    "CALIBRATION.*",
    "EXPORT.*",
    "UNCERTAINTY.mc_samples",
    "UNCERTAINTY.flag_threshold",
    "UNCERTAINTY.reliability",
    "UNCERTAINTY.ensemble",
    "PHANTOM.cache_dir",
)

#: Longest value shown in a message.
_SHOWN = 40
#: Changes named in a refusal.
_NAMED = 3


@dataclasses.dataclass(frozen=True)
class ConfigChange:
    """One key whose value differs between the stored and the new configuration.

    Attributes:
        section: INI section name.
        key: Key name; ``""`` for a section only one of the two has.
        stored: The stored value's text (``None``: absent).
        new: The new value's text (``None``: absent).
    """

    section: str
    key: str
    stored: str | None
    new: str | None

    @property
    def continues(self) -> bool:
        """Whether :data:`CONTINUATION_KEYS` allows it."""
        name = f"{self.section}.{self.key}"
        return bool(self.key) and any(fnmatch.fnmatchcase(name, p) for p in CONTINUATION_KEYS)

    def describe(self) -> str:
        """E.g. ``[NETWORK] base_filters 4 -> 8`` or ``[T2] (section added)``."""
        if not self.key:
            return f"[{self.section}] (section {'added' if self.stored is None else 'removed'})"
        return f"[{self.section}] {self.key} {_show(self.stored)} -> {_show(self.new)}"


def _show(text: str | None) -> str:
    if text is None:
        return "(absent)"
    text = text.strip() or "(empty)"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _parser(text: str, origin: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, empty_lines_in_values=False)
    try:
        parser.read_string(text, source=origin)
    except configparser.Error as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{origin}: not a valid INI file: {first}") from None
    return parser


def _specs(section: str) -> dict[str, FieldSpec]:
    cls = SECTIONS.get(section) or APPLICATIONS.get(section) or InputSource
    return field_specs(cls)


def _value(spec: FieldSpec, text: str | None, model_dir: str) -> Any:
    """The parsed value of ``text`` (its default when None), or the stripped text when it does not parse.

    A path inside ``model_dir`` (a ``path="model_dir"`` key) counts relative to it, so a moved
    model_dir keeps its contract.
    """
    if text is None:
        return spec.default
    try:
        value = parse_value(spec, text)
    except ConfigValueError:
        return text.strip()
    if spec.path == "model_dir" and isinstance(value, str) and model_dir and value:
        inside = os.path.normpath(value)
        if inside == model_dir or inside.startswith(model_dir.rstrip(os.sep) + os.sep):
            return ("<model_dir>", os.path.relpath(inside, model_dir))
    return value


def config_changes(stored: str, config: Config, *, origin: str = CONFIG_FILE) -> list[ConfigChange]:
    """Every difference between a stored configuration's INI text and ``config``, in file order.

    Args:
        stored: The stored ``training_config.ini`` text.
        config: The new configuration.
        origin: Name of the stored file, for messages.

    Returns:
        The changes (allowed ones have :attr:`ConfigChange.continues`).

    Raises:
        UserError: the stored text is not a valid INI file.
    """
    old, new = _parser(stored, origin), _parser(config.to_ini(), "the new configuration")
    old_dir = os.path.normpath(old.get("SYSTEM", "model_dir", fallback="").strip() or ".")
    new_dir = os.path.normpath(str(config.model_dir))
    sections = [*old.sections(), *(s for s in new.sections() if not old.has_section(s))]
    changes: list[ConfigChange] = []
    for section in sections:
        if not old.has_section(section):
            changes.append(ConfigChange(section, "", None, ""))
            continue
        if not new.has_section(section):
            changes.append(ConfigChange(section, "", "", None))
            continue
        specs = _specs(section)
        keys = [*old.options(section), *(k for k in new.options(section) if not old.has_option(section, k))]
        for key in keys:
            spec = specs.get(key)
            if spec is None:  # a key this version does not know cannot change what it trains
                continue
            before = old.get(section, key, fallback=None)
            after = new.get(section, key, fallback=None)
            if _value(spec, before, old_dir) == _value(spec, after, new_dir):
                continue
            default = format_value(spec.default)
            before = default if before is None else before
            after = default if after is None else after
            changes.append(ConfigChange(section, key, before, after))
    return changes


def read_stored_config(model_dir: PathLike) -> str | None:
    """The text of ``<model_dir>/training_config.ini`` (None when absent).

    Raises:
        UserError: it exists but cannot be read.
    """
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        raise UserError(
            f"{path}: cannot read the configuration this model was trained with ({reason}); restore the "
            "file, or start afresh with tfuq train --overwrite"
        ) from None


def check_continuation(
    model_dir: PathLike,
    stored: str,
    config: Config,
    *,
    remedy: str = (
        "train it in another [SYSTEM] model_dir, or start afresh with tfuq train --overwrite (the "
        "current model is moved into a replaced-<timestamp> folder)"
    ),
) -> list[ConfigChange]:
    """Refuse a configuration that changes the contract of ``model_dir``'s model.

    Args:
        model_dir: The model's folder (for the message).
        stored: Its stored configuration text.
        config: The new configuration.
        remedy: What the message tells the user to do.

    Returns:
        The allowed changes (:data:`CONTINUATION_KEYS`), for the caller to log.

    Raises:
        UserError: one line naming the first refused changes.
    """
    changes = config_changes(stored, config, origin=str(Path(model_dir) / CONFIG_FILE))
    refused = [c for c in changes if not c.continues]
    if refused:
        named = ", ".join(c.describe() for c in refused[:_NAMED])
        more = f" and {len(refused) - _NAMED} more" if len(refused) > _NAMED else ""
        raise UserError(
            f"{model_dir}: holds a model trained with another configuration ({named}{more}); {remedy}"
        )
    return changes


# Using a model: what a config must share with the one the model was trained with.

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


def load_stored_config(model_dir: Path) -> Config | None:
    """The configuration stored in ``<model_dir>/training_config.ini``, loaded, or None without one.

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


def _show_value(value: object) -> str:
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
            f"[{name}] {key} = {_show_value(getattr(mine, key))} "
            f"(trained with {_show_value(getattr(theirs, key))})"
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
            f"[{mine_name}] {key} = {_show_value(getattr(mine, key))} "
            f"(trained with {_show_value(getattr(theirs, key))})"
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
    stored = load_stored_config(config.model_dir)
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
