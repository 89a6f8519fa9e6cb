"""Test helpers for tfuq.export: a tiny NIfTI application and a "trained" model without training.

The model is built from the config with :func:`tfuq.networks.build_model`
and saved where ``tfuq train`` leaves it (``model.keras`` and
``normalisation.json`` in ``model_dir``), so export and inference run on it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import keras
import nibabel as nib
import numpy as np

from tfuq.config import Config, load_config
from tfuq.data.normalisation import NormalisationParams
from tfuq.model_store import write_normalisation
from tfuq.networks import build_model

__all__ = ["AFFINE", "UNITS", "load", "make_app", "save_trained"]

#: The CT window normalisation of the target.
UNITS = NormalisationParams("window", -1024.0, 4095.0)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def make_app(folder: Path, *extra: str, subjects: int = 2, shape=(12, 10, 9), name: str = "app") -> Path:
    """Paired MR/CT NIfTI files and an INI for a tiny U-Net (8^3 windows); returns the INI path.

    ``extra`` lines are appended to the INI (e.g. ``"[UNCERTAINTY]", "dropout = none"``).
    """
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(subjects):
        mr = rng.normal(100.0, 20.0, shape).astype(np.float32)
        ct = (8.0 * mr - 700.0 + rng.normal(0.0, 30.0, shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(mr, AFFINE), data / f"s{k}_mr.nii.gz")
        nib.save(nib.Nifti1Image(ct, AFFINE), data / f"s{k}_ct.nii.gz")
    ini = folder / f"{name}.ini"
    text = textwrap.dedent(
        f"""
        [SYSTEM]
        model_dir = {folder / "model"}
        seed = 3
        [MR]
        path_to_search = {data}
        filename_contains = _mr
        spatial_window_size = 8, 8, 8
        intensity_normalisation = zscore
        [CT]
        path_to_search = {data}
        filename_contains = _ct
        spatial_window_size = 8, 8, 8
        intensity_normalisation = window
        intensity_window = -1024, 3071
        [NETWORK]
        name = unet
        depth = 1
        base_filters = 4
        [INFERENCE]
        batch_size = 3
        [REGRESSION]
        image = MR
        output = CT
        """
    )
    ini.write_text(text + "\n".join(extra) + "\n")
    return ini


def save_trained(config: Config, *, normalisation: bool = True) -> keras.Model:
    """Build the config's network (seeded weights) and save it as ``tfuq train`` would."""
    keras.utils.set_random_seed(config.system.seed)
    model = build_model(config)
    config.model_dir.mkdir(parents=True, exist_ok=True)
    model.save(config.model_dir / "model.keras")
    if normalisation:
        write_normalisation(config.model_dir, config, UNITS)
    return model


def load(ini: Path, *overrides: str) -> Config:
    """``load_config`` with ``SECTION.key=value`` overrides."""
    return load_config(ini, list(overrides))
