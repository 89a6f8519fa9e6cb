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
from tfuq.export.client import ServingClient, ServingError, http_transport, saved_model_transport
from tfuq.export.keras_import import HEADS, import_keras
from tfuq.export.remote_inference import serve_subject, serve_volume
from tfuq.export.serving import list_versions, models_config_text, next_version, write_models_config

__all__ = [
    "HEADS",
    "MC_SAMPLES_INPUT",
    "PREDICT_MC",
    "PREDICT_PARAMS",
    "SERVING_DEFAULT",
    "WINDOWS",
    "ServingClient",
    "ServingError",
    "export_saved_model",
    "http_transport",
    "import_keras",
    "input_names",
    "list_versions",
    "models_config_text",
    "next_version",
    "output_names",
    "saved_model_transport",
    "serve_subject",
    "serve_volume",
    "write_models_config",
]
