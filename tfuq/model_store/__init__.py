"""The model store: what a ``model_dir`` holds, and the one way to read and write it.

- :mod:`~tfuq.model_store.layout`: every file and folder name of a model_dir;
- :mod:`~tfuq.model_store.keras_file`: the one ``.keras`` loader (safe mode);
- :mod:`~tfuq.model_store.network`: the network of a configuration (built, or
  a user's ``keras:`` file);
- :mod:`~tfuq.model_store.normalisation`: ``normalisation.json``;
- :mod:`~tfuq.model_store.trained`: the trained-model bundle (network and
  target normalisation, a checkpoint's weights, deep-ensemble members);
- :mod:`~tfuq.model_store.lock`: the writer lock of a model_dir;
- :mod:`~tfuq.model_store.contract`: the stored configuration as a contract
  (which changes continue a model);
- :mod:`~tfuq.model_store.replace`: moving a model aside to start afresh.
"""

from tfuq.model_store.contract import (
    CONTINUATION_KEYS,
    check_continuation,
    check_matches_model,
    config_changes,
    load_stored_config,
    model_differences,
)
from tfuq.model_store.keras_file import load_model
from tfuq.model_store.layout import (
    CALIBRATION_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOCK_FILE,
    MODEL_FILE,
    NORMALISATION_FILE,
    model_file,
)
from tfuq.model_store.lock import ModelDirLock, model_dir_lock
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
    "CONTINUATION_KEYS",
    "LOCK_FILE",
    "MODEL_FILE",
    "NORMALISATION_FILE",
    "ModelDirLock",
    "TrainedModel",
    "build_network",
    "check_continuation",
    "check_matches_model",
    "config_changes",
    "load_members",
    "load_model",
    "load_stored_config",
    "load_trained_model",
    "model_differences",
    "model_dir_lock",
    "model_file",
    "normalisation_record",
    "read_target_normalisation",
    "write_normalisation",
]
