"""Data: NIfTI I/O, geometry, subjects and splits, normalisation, the phantom."""

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

__all__ = [
    "INFERENCE",
    "NIFTI_SUFFIXES",
    "NORMALISATION_METHODS",
    "PHASES",
    "TRAINING",
    "VALIDATION",
    "InputSourceLike",
    "NormalisationParams",
    "PhantomSpec",
    "Subject",
    "Volume",
    "align_pair",
    "denormalise",
    "denormalise_std",
    "denormalise_var",
    "ensure_phantom",
    "find_section_files",
    "find_subjects",
    "fit_normalisation",
    "fit_section_normalisation",
    "insert_zero_cube",
    "load_or_create_split",
    "load_subject",
    "load_volume",
    "make_split",
    "make_subject",
    "normalise",
    "phantom_folder",
    "read_split",
    "resample_to_grid",
    "resample_to_pixdim",
    "resolve_sources",
    "same_grid",
    "save_volume",
    "subjects_in_phase",
    "uses_phantom",
    "volume_from_array",
    "write_phantom",
    "write_split",
]
