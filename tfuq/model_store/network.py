"""The network of a configuration: built by :mod:`tfuq.networks`, or a user's ``.keras`` file.

``[NETWORK] name = keras:PATH`` names a user model (converted by ``tfuq
import-keras``); it is read with the one safe loader
(:func:`tfuq.model_store.load_model`) and checked against the configured
window and head. Every other name is built by
:func:`tfuq.networks.build_model`.
"""

from __future__ import annotations

from pathlib import Path

import keras

from tfuq.config import Config
from tfuq.distributions import params_size
from tfuq.model_store.keras_file import load_model
from tfuq.networks.factory import build_model, fail, input_geometry

__all__ = ["build_network"]


def build_network(config: Config) -> keras.Model:
    """The (generator) network of ``config``: a user model for ``keras:PATH``, else built.

    Raises:
        ConfigError: a setting the network cannot take, a missing user model file, or a user
            model whose input or output does not fit the configuration (one line).
    """
    name = config.network.name
    if name.startswith("keras:"):
        return _load_user_model(config, name[len("keras:") :])
    return build_model(config)


def _load_user_model(config: Config, path: str) -> keras.Model:
    """``[NETWORK] name = keras:path``: a (``tfuq import-keras``-converted) user model.

    The model is loaded with safe_mode on and must map the configured input
    window to ``params_size(config.family)`` channels.

    Raises:
        ConfigError: missing file, or a model whose input or output does not
            fit the configuration (one line).
    """
    if not Path(path).is_file():
        raise fail(config, "[NETWORK] name", f"no Keras model file at {path}")
    model = load_model(path, compile=False)
    channels = model.outputs[0].shape[-1]
    expected = params_size(config.family)
    if channels != expected:
        raise fail(
            config,
            "[NETWORK] name",
            f"{path} outputs {channels} channels; a {config.family!r} head needs {expected} "
            f"(convert it with tfuq import-keras --head {config.uncertainty.family})",
        )
    window = input_geometry(config).spatial
    accepted = tuple(model.inputs[0].shape[1:-1])
    if len(accepted) != len(window) or any(a is not None and a != w for a, w in zip(accepted, window)):
        raise fail(config, "[NETWORK] name", f"{path} takes windows {accepted}, the config gives {window}")
    return model
