"""Data: NIfTI I/O, geometry, subjects and splits, normalisation, the phantom, windows.

The tf.data pipeline (``make_training_dataset``, ``make_validation_dataset``)
is re-exported lazily so that importing :mod:`tfuq.data` does not import
TensorFlow.
"""

import importlib
from typing import Any

from tfuq.data.augmentation import (
    Augmentation,
    AugmentationSettings,
    augment_crop,
    augment_intensity,
    bias_field,
    draw_augmentation,
)
from tfuq.data.geometry import align_pair, resample_to_grid, resample_to_pixdim, same_grid
from tfuq.data.loading import fit_section_normalisation, load_subject
from tfuq.data.nifti import NIFTI_SUFFIXES, Volume, load_volume, save_volume, volume_from_array
from tfuq.data.normalisation import (
    NORMALISATION_METHODS,
    NormalisationParams,
    denormalise,
    denormalise_std,
    denormalise_var,
    fit_normalisation,
    normalise,
)
from tfuq.data.phantom import PhantomSpec, insert_zero_cube, make_subject, write_phantom
from tfuq.data.sources import ensure_phantom, phantom_folder, resolve_sources, uses_phantom
from tfuq.data.split import (
    INFERENCE,
    PHASES,
    TRAINING,
    VALIDATION,
    load_or_create_split,
    make_split,
    read_split,
    subjects_in_phase,
    write_split,
)
from tfuq.data.subjects import InputSourceLike, Subject, find_section_files, find_subjects
from tfuq.data.training_windows import (
    SubjectArrays,
    WindowGeometry,
    load_training_subject,
    sample_windows,
    window_geometry,
)
from tfuq.data.windows import (
    BLENDING_MODES,
    DEFAULT_SIGMA_SCALE,
    DEFAULT_WEIGHT_FLOOR,
    MULTIRES_FACTORS,
    PADDING_MODES,
    SAMPLERS,
    WindowGrid,
    average_pool,
    balanced_locations,
    blending_weights,
    check_border,
    check_multires,
    check_window,
    crop_padded,
    grid_locations,
    multires_windows,
    pad_volume,
    sample_locations,
    uniform_locations,
    weighted_locations,
    window_grid,
)

_LAZY = {"make_training_dataset": "tfuq.data.pipeline", "make_validation_dataset": "tfuq.data.pipeline"}

__all__ = [
    "BLENDING_MODES",
    "DEFAULT_SIGMA_SCALE",
    "DEFAULT_WEIGHT_FLOOR",
    "INFERENCE",
    "MULTIRES_FACTORS",
    "NIFTI_SUFFIXES",
    "NORMALISATION_METHODS",
    "PADDING_MODES",
    "PHASES",
    "SAMPLERS",
    "TRAINING",
    "VALIDATION",
    "Augmentation",
    "AugmentationSettings",
    "InputSourceLike",
    "NormalisationParams",
    "PhantomSpec",
    "Subject",
    "SubjectArrays",
    "Volume",
    "WindowGeometry",
    "WindowGrid",
    "align_pair",
    "augment_crop",
    "augment_intensity",
    "average_pool",
    "balanced_locations",
    "bias_field",
    "blending_weights",
    "check_border",
    "check_multires",
    "check_window",
    "crop_padded",
    "denormalise",
    "denormalise_std",
    "denormalise_var",
    "draw_augmentation",
    "ensure_phantom",
    "find_section_files",
    "find_subjects",
    "fit_normalisation",
    "fit_section_normalisation",
    "grid_locations",
    "insert_zero_cube",
    "load_or_create_split",
    "load_subject",
    "load_training_subject",
    "load_volume",
    "make_split",
    "make_subject",
    "make_training_dataset",
    "make_validation_dataset",
    "multires_windows",
    "normalise",
    "pad_volume",
    "phantom_folder",
    "read_split",
    "resample_to_grid",
    "resample_to_pixdim",
    "resolve_sources",
    "same_grid",
    "sample_locations",
    "sample_windows",
    "save_volume",
    "subjects_in_phase",
    "uniform_locations",
    "uses_phantom",
    "volume_from_array",
    "weighted_locations",
    "window_geometry",
    "window_grid",
    "write_phantom",
    "write_split",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfuq.data' has no attribute {name!r}")
