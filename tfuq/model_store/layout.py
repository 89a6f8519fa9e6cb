"""What a ``model_dir`` holds: every file and folder name, written once.

``tfuq train`` writes the network (``model.keras``), the configuration it was
trained with (``training_config.ini``), the target normalisation
(``normalisation.json``), ``checkpoints/`` and ``logs/``; ``tfuq calibrate`` adds
``calibration/`` (the recalibration, the QC references). A writer holds
``.tfuq.lock`` (:mod:`tfuq.model_store.lock`); ``tfuq train --overwrite``
moves an earlier model into ``replaced-<timestamp>/``. Every module that
reads or writes a model_dir takes the names from here.
"""

from __future__ import annotations

from pathlib import Path

from tfuq.typing import PathLike

__all__ = [
    "CALIBRATION_DIR",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "LOCK_FILE",
    "LOG_DIR",
    "MODEL_FILE",
    "NORMALISATION_FILE",
    "REPLACED_PREFIX",
    "model_file",
]

#: The final network (Keras v3 archive).
MODEL_FILE = "model.keras"
#: Training checkpoints (``ckpt-<step>``, ``best/``).
CHECKPOINT_DIR = "checkpoints"
#: The configuration the network was trained with (read back by ``tfuq infer MODEL_DIR``).
CONFIG_FILE = "training_config.ini"
#: Target normalisation and input settings (:mod:`tfuq.model_store.normalisation`).
NORMALISATION_FILE = "normalisation.json"
#: What ``tfuq calibrate`` stores (:mod:`tfuq.calibration.stored`).
CALIBRATION_DIR = "calibration"
#: Log files and the training CSVs (``training.csv``, ``validation.csv``, ``tensorboard/``).
LOG_DIR = "logs"
#: The writer lock (:mod:`tfuq.model_store.lock`).
LOCK_FILE = ".tfuq.lock"
#: ``replaced-<timestamp>/``: an earlier model moved aside by ``tfuq train --overwrite``.
REPLACED_PREFIX = "replaced-"


def model_file(model_dir: PathLike) -> Path:
    """``<model_dir>/model.keras``."""
    return Path(model_dir) / MODEL_FILE
