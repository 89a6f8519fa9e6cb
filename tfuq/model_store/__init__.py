"""The model store: what a ``model_dir`` holds, and the one way to read and write it.

- :mod:`~tfuq.model_store.layout`: every file and folder name of a model_dir;
- :mod:`~tfuq.model_store.keras_file`: the one ``.keras`` loader (safe mode);
- :mod:`~tfuq.model_store.network`: the network of a configuration (built, or
  a user's ``keras:`` file);
- :mod:`~tfuq.model_store.normalisation`: ``normalisation.json``;
- :mod:`~tfuq.model_store.trained`: the trained-model bundle (network and
  target normalisation, a checkpoint's weights, deep-ensemble members).
"""

from tfuq.model_store.keras_file import load_model
from tfuq.model_store.layout import (
    CALIBRATION_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    MODEL_FILE,
    NORMALISATION_FILE,
    model_file,
)
from tfuq.model_store.network import build_network
from tfuq.model_store.normalisation import (
    normalisation_record,
    read_target_normalisation,
    write_normalisation,
)
from tfuq.model_store.trained import TrainedModel, load_members, load_trained_model

__all__ = [
    "CALIBRATION_DIR",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "MODEL_FILE",
    "NORMALISATION_FILE",
    "TrainedModel",
    "build_network",
    "load_members",
    "load_model",
    "load_trained_model",
    "model_file",
    "normalisation_record",
    "read_target_normalisation",
    "write_normalisation",
]
