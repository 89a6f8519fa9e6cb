"""Deployment: SavedModel with in-graph MC uncertainty, TF Serving layout and client, Keras import."""

from tfuq.export.archive import (
    MC_SAMPLES_INPUT,
    PREDICT_MC,
    PREDICT_PARAMS,
    SERVING_DEFAULT,
    WINDOWS,
    export_saved_model,
    input_names,
    output_names,
)
from tfuq.export.recalibration import ExportedRecalibration, load_recalibrator
from tfuq.export.serving import list_versions, models_config_text, next_version, write_models_config

__all__ = [
    "MC_SAMPLES_INPUT",
    "PREDICT_MC",
    "PREDICT_PARAMS",
    "SERVING_DEFAULT",
    "WINDOWS",
    "ExportedRecalibration",
    "export_saved_model",
    "input_names",
    "list_versions",
    "load_recalibrator",
    "models_config_text",
    "next_version",
    "output_names",
    "write_models_config",
]
