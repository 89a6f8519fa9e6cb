"""Shared setup of the infer / calibrate / evaluate / validate-uq job tests.

A tiny phantom job (4 subjects of 24 x 16 x 32 voxels: 2 Training, 1
Validation, 1 Inference) and *analytic* models saved as ``model.keras`` with
a ``normalisation.json``, whose predictions are known in closed form:

    loc   = gain * x + bump * (1 - x)^4        (x: the normalised input)
    scale = base + slope * x^2                 (normalised target units)
    beta  = power                              (generalized normal only)

so infer, calibration and the validation experiments can be checked against
exact oracles. Import as ``from uq_job_setup import ...`` (tests/ is on
``sys.path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfuq.config import Config, load_config
from tfuq.data.normalisation import NormalisationParams
from tfuq.distributions import unconstrain

__all__ = [
    "CT_PARAMS",
    "TINY_INI",
    "AnalyticHead",
    "save_analytic_model",
    "tiny_config",
]

#: The CT window normalisation of the tiny job: y = (HU + 1024) / 4095.
CT_PARAMS = NormalisationParams("window", -1024.0, 4095.0)

TINY_INI = """\
[SYSTEM]
model_dir = {model_dir}
seed = 0

[PHANTOM]
kind = wholebody
num_subjects = 4
shape = 24, 16, 32
cache_dir = {cache_dir}

[MR]
path_to_search = phantom:
filename_contains = _mr
spatial_window_size = 16, 16, 16
intensity_normalisation = percentile

[CT]
path_to_search = phantom:
filename_contains = _ct
filename_not_contains = _noise_std
spatial_window_size = 16, 16, 16
intensity_normalisation = window

[BODY]
path_to_search = phantom:
filename_contains = _mask
interp_order = 0

[NOISE]
path_to_search = phantom:
filename_contains = _noise_std
interp_order = 1

[NETWORK]
name = unet
batch_size = 2
depth = 2
base_filters = 4
queue_length = 2

[TRAINING]
max_iter = 2
save_every_n = 0
tensorboard_every_n = 0
exclude_fraction_for_validation = 0.25
exclude_fraction_for_inference = 0.25

[INFERENCE]
spatial_window_size = 24, 16, 32
batch_size = 4

[EVALUATION]
size_sweep =
anomaly_trials = 2
anomaly_size = 4

[UNCERTAINTY]
family = normal
dropout = mc
dropout_rate = 0.2
mc_samples = 2

[REGRESSION]
image = MR
output = CT
mask = BODY
noise_std = NOISE
"""


@keras.saving.register_keras_serializable(package="tfuq_tests")
class AnalyticHead(keras.layers.Layer):
    """Head channels of a closed-form prediction from the first input channel (see the module notes)."""

    def __init__(
        self,
        family: str = "normal",
        gain: float = 1.0,
        bump: float = 0.0,
        base: float = 0.01,
        slope: float = 0.0,
        power: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.family, self.gain, self.bump = family, gain, bump
        self.base, self.slope, self.power = base, slope, power

    def call(self, x: Any) -> Any:
        v = x[..., 0]
        loc = self.gain * v + self.bump * (1.0 - v) ** 4
        scale = self.base + self.slope * v * v
        power = keras.ops.full_like(v, self.power) if self.family == "generalized_normal" else None
        return unconstrain(self.family, loc, scale, power)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], 3 if self.family == "generalized_normal" else 2)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "family": self.family,
            "gain": self.gain,
            "bump": self.bump,
            "base": self.base,
            "slope": self.slope,
            "power": self.power,
        }


def tiny_config(
    tmp: Path, overrides: list[str] | tuple[str, ...] = (), *, model_dir: Path | None = None
) -> Config:
    """Write the tiny INI into ``tmp`` and load it (phantom cached in ``tmp/phantom``)."""
    ini = tmp / "tiny.ini"
    folder = model_dir or tmp / "run"
    ini.write_text(TINY_INI.format(model_dir=folder, cache_dir=tmp / "phantom"), encoding="utf-8")
    return load_config(ini, list(overrides))


def save_analytic_model(
    model_dir: Path,
    params: NormalisationParams = CT_PARAMS,
    **head: Any,
) -> keras.Model:
    """Save an :class:`AnalyticHead` model as ``model_dir/model.keras`` with its ``normalisation.json``."""
    import json

    inputs = keras.Input((None, None, None, 1))
    model = keras.Model(inputs, AnalyticHead(**head)(inputs))
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / "model.keras")
    record = {"target": {"section": "CT", **params.to_dict()}, "inputs": {}}
    (model_dir / "normalisation.json").write_text(json.dumps(record), encoding="utf-8")
    return model


def normalised_mr(path: Path) -> np.ndarray:
    """The MR of a phantom file normalised as training does (1 % / 99 % percentiles), independently."""
    import nibabel as nib

    mr = np.asarray(nib.load(path).dataobj, dtype=np.float64)
    low, high = np.percentile(mr, [1.0, 99.0])
    return (mr - low) / (high - low)
