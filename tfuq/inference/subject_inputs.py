"""One subject prepared for inference: inputs normalised exactly as at training, optional truth.

Training (:func:`tfuq.data.training_windows.load_training_subject`) reads
every section with its ``axcodes``, puts it on the target's grid (resampled
to the target section's ``pixdim`` when set), and normalises each input
section with parameters fitted on that subject's own volume
(:func:`tfuq.data.fit_section_normalisation`, inside the mask section when
``normalise_foreground_only``). :func:`load_inference_subject` does the same
without needing the target: the grid is the first input's (resampled to the
target section's ``pixdim`` when set), and the target, mask and true-noise
sections are read when the subject has them (evaluation, calibration,
validation), and so is the lesion section (nearest neighbour, ``> 0``; never
a network input). The first input as read from disk is kept as the *reference*:
outputs are written on its grid, orientation and header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tfuq.config import Config, InputSource
from tfuq.data.geometry import align_pair
from tfuq.data.loading import fit_section_normalisation
from tfuq.data.nifti import Volume, load_volume
from tfuq.data.normalisation import NormalisationParams, normalise
from tfuq.data.subjects import find_section_files
from tfuq.errors import UserError

__all__ = ["SubjectInputs", "find_inference_subjects", "load_inference_subject"]


@dataclasses.dataclass(frozen=True, eq=False)
class SubjectInputs:
    """A subject's arrays on the model grid.

    Attributes:
        id: Subject id.
        reference: The first input section's volume as read (the output grid).
        grid: The first input on the model grid (``reference`` itself unless
            the target section sets ``pixdim``).
        raw: ``(X, Y, Z, C)`` float32 inputs in their own units, one channel
            per input section.
        normalisation: Fitted parameters of each input channel.
        mask: Boolean ``(X, Y, Z)`` mask section, or None.
        target: Target section in its units, ``(X, Y, Z)`` float32, or None.
        noise_std: True noise std section (phantom), or None.
        lesion: Boolean ``(X, Y, Z)`` lesion/tumour map (``[REGRESSION]
            lesion`` section, non-zero voxels), or None.
    """

    id: str
    reference: Volume
    grid: Volume
    raw: np.ndarray
    normalisation: tuple[NormalisationParams, ...]
    mask: np.ndarray | None = None
    target: np.ndarray | None = None
    noise_std: np.ndarray | None = None
    lesion: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape of the model grid."""
        return tuple(int(n) for n in self.raw.shape[:3])  # type: ignore[return-value]

    def normalised(self, raw: np.ndarray | None = None) -> np.ndarray:
        """Inputs in normalised units, with this subject's parameters.

        Args:
            raw: Inputs ``(X, Y, Z, C)`` in input units (e.g. with an inserted
                anomaly); default the subject's own.

        Returns:
            float32 ``(X, Y, Z, C)``.
        """
        values = self.raw if raw is None else np.asarray(raw, dtype=np.float32)
        channels = [normalise(values[..., c], p) for c, p in enumerate(self.normalisation)]
        return np.stack(channels, axis=-1).astype(np.float32)


def _optional_sections(config: Config) -> dict[str, str]:
    """Role -> section name of the sections read when a subject has them."""
    roles = {
        "target": config.target_section,
        "mask": getattr(config.app, "mask", ""),
        "noise_std": getattr(config.app, "noise_std", ""),
        "lesion": getattr(config.app, "lesion", ""),
    }
    return {role: name for role, name in roles.items() if name and name not in config.input_sections}


def find_inference_subjects(config: Config, sources: Mapping[str, InputSource]) -> dict[str, dict[str, Path]]:
    """Subjects with a file in every input section, and their optional sections' files.

    Returns:
        Subject id -> section name -> file, sorted by id; the target, mask and
        noise-std sections appear only for subjects that have them.

    Raises:
        UserError: a section's folder is missing, or no subject has every input.
    """
    inputs = {name: find_section_files(sources[name], name=name) for name in config.input_sections}
    ids = sorted(set.intersection(*(set(files) for files in inputs.values())))
    if not ids:
        raise UserError(
            f"no subject has a file in every input section ({', '.join(config.input_sections)}); "
            "check path_to_search and filename_contains"
        )
    optional = {}
    for name in _optional_sections(config).values():
        try:
            optional[name] = find_section_files(sources[name], name=name)
        except UserError:  # e.g. inference data without targets
            optional[name] = {}
    return {
        i: {
            **{name: files[i] for name, files in inputs.items()},
            **{name: files[i] for name, files in optional.items() if i in files},
        }
        for i in ids
    }


def load_inference_subject(
    config: Config,
    subject: str,
    files: Mapping[str, Path],
    sources: Mapping[str, InputSource],
    *,
    need_target: bool = False,
) -> SubjectInputs:
    """Read and normalise one subject's inputs (and truth when present) on the model grid.

    Args:
        config: The loaded configuration.
        subject: Subject id.
        files: Section name -> file (from :func:`find_inference_subjects`).
        sources: Resolved input sources.
        need_target: Raise when the subject has no target file.

    Returns:
        SubjectInputs.

    Raises:
        UserError: unreadable files, grids that differ, a constant input, a
            multi-channel input section, or a missing target when needed.
    """
    roles = _optional_sections(config)
    if need_target and config.target_section not in files:
        raise UserError(f"[{config.target_section}] subject {subject}: no target file; it is needed here")
    names = [*config.input_sections, *(n for n in roles.values() if n in files)]
    volumes = {name: load_volume(files[name], axcodes=sources[name].axcodes or None) for name in names}
    first = config.input_sections[0]
    reference = volumes[first]
    pixdim = sources[config.target_section].pixdim or None
    orders = {name: sources[name].interp_order for name in names}
    if roles.get("lesion") in orders:  # labels: nearest neighbour whatever the section says
        orders[roles["lesion"]] = 0
    aligned = align_pair(volumes, target=first, pixdim=pixdim, order_by_name=orders)
    mask_name = roles.get("mask", getattr(config.app, "mask", ""))
    mask = None
    if mask_name and mask_name in aligned:
        mask = aligned[mask_name].array.reshape(aligned[mask_name].shape) > 0
    norms, channels = [], []
    for name in config.input_sections:
        volume = aligned[name]
        if volume.num_channels != 1:
            raise UserError(f"{volume.name}: [{name}] expected one channel, found {volume.num_channels}")
        norms.append(fit_section_normalisation(sources[name], volume, mask))
        channels.append(volume.array.reshape(volume.shape).astype(np.float32))
    extra = {
        role: aligned[name].array.reshape(aligned[name].shape).astype(np.float32)
        for role, name in roles.items()
        if role not in ("mask", "lesion") and name in aligned
    }
    lesion_name = roles.get("lesion", "")
    if lesion_name in aligned:
        extra["lesion"] = aligned[lesion_name].array.reshape(aligned[lesion_name].shape) > 0
    return SubjectInputs(
        id=subject,
        reference=reference,
        grid=aligned[first],
        raw=np.stack(channels, axis=-1),
        normalisation=tuple(norms),
        mask=mask,
        **extra,
    )
