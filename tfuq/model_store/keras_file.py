"""Load ``.keras`` files safely: Keras' ``safe_mode`` on, tfuq's objects registered, no Lambda layers.

The one loader of tfuq: trained networks (``<model_dir>/model.keras``),
user models (``[NETWORK] name = keras:PATH``) and files converted by
``tfuq import-keras`` all go through :func:`load_model`. A ``Lambda`` layer
(arbitrary Python code that cannot be checked or served) is refused with a
one-line message naming it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

import tfuq.layers
import tfuq.losses
import tfuq.networks
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["load_model"]

#: Packages whose import registers tfuq's serialisable objects (imported above for that).
_REGISTERING = (tfuq.layers, tfuq.losses, tfuq.networks)


def _lambda_names(config: Any) -> Iterator[str]:
    """Names of Lambda layers anywhere in a serialised model config."""
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            yield str((config.get("config") or {}).get("name", "?"))
        for value in config.values():
            yield from _lambda_names(value)
    elif isinstance(config, list):
        for value in config:
            yield from _lambda_names(value)


def load_model(path: PathLike, *, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` model with safe_mode on and tfuq's objects registered.

    Args:
        path: A ``.keras`` file (e.g. ``<model_dir>/model.keras``).
        compile: Restore the training configuration too (as
            ``keras.saving.load_model``). Default True.

    Returns:
        keras.Model: the model.

    Raises:
        UserError: missing file, not a ``.keras`` archive, a Lambda layer, or
            a model Keras cannot rebuild (one line naming the file).

    Example:
        >>> model = load_model("demo_out/mr2ct/model.keras")  # doctest: +SKIP
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: no such model file; expected a .keras file.")
    if file.suffix != ".keras":
        raise UserError(f"{file}: expected a Keras v3 .keras file (saved with model.save('x.keras')).")
    try:
        with zipfile.ZipFile(file) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise UserError(f"{file}: not a readable .keras archive ({error}).") from None
    lambdas = sorted(set(_lambda_names(config)))
    if lambdas:
        raise UserError(
            f"{file}: contains Lambda layer(s) {', '.join(lambdas)}; tfuq loads models with safe_mode on "
            "and refuses Lambda layers (their Python code cannot be checked or served); replace each by "
            "a registered custom layer."
        )
    try:
        return keras.saving.load_model(file, compile=compile, safe_mode=True)
    except (ValueError, TypeError, OSError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"{file}: Keras cannot rebuild this model: {reason[:300]}") from None
