"""tfuq: uncertainty-aware medical image translation with Keras 3, TF and TFP.

Importing :mod:`tfuq` is cheap: TensorFlow, Keras and TFP are imported only
when a name that needs them is first used, so ``tfuq --help`` answers quickly.
Keras must run on the TensorFlow backend; any other backend is refused here
with one clear message.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from tfuq.version import __version__

_SUBPACKAGES = (
    "calibration",
    "config",
    "data",
    "distributions",
    "evaluation",
    "export",
    "inference",
    "layers",
    "losses",
    "networks",
    "training",
)
_LAZY_FUNCTIONS = {
    "load_model": "tfuq.model_store",
    "import_keras": "tfuq.export",
}

__all__ = ["__version__", *_SUBPACKAGES, *_LAZY_FUNCTIONS]


def _configured_keras_backend() -> str:
    """Return the Keras backend that Keras itself would pick, without importing it.

    Keras reads ``KERAS_BACKEND`` first, then ``backend`` in
    ``$KERAS_HOME/keras.json`` (default ``~/.keras/keras.json``).
    """
    if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
        try:
            return str(sys.modules["keras"].backend.backend())
        except Exception:  # a half-imported keras: fall back to the files
            pass
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            return str(json.load(handle).get("backend", "tensorflow"))
    except (OSError, ValueError):
        return "tensorflow"


def _check_backend() -> None:
    backend = _configured_keras_backend()
    if backend != "tensorflow":
        raise ImportError(
            f"tfuq needs the Keras TensorFlow backend, but Keras is set to {backend!r} "
            "(KERAS_BACKEND or keras.json). Set KERAS_BACKEND=tensorflow."
        )
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


_check_backend()


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"tfuq.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(_LAZY_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'tfuq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
