"""Checks of a job's input images, made before the job writes anything.

Two kinds, so that no voxel is read twice:

- :func:`check_subject_files`, from the headers only, for every subject of a
  job before any of them is loaded: each file is a readable NIfTI image
  (not empty, not cut short where the header tells), a 3D volume with one
  value per voxel (not 2D, not 4D with several volumes), the sections of a
  subject share one grid (shape and affine to 1e-3 mm, unless ``pixdim``
  resamples them onto the target's), and the training window fits the
  volume;
- :func:`check_image_values`, on the voxels, where a job reads them anyway:
  NaN and infinite voxels are refused by :func:`~tfuq.data.nifti.load_volume`
  (as are files cut short inside their compressed data), and this adds an
  input image that is zero everywhere and a mask with no voxel in it.

A training window larger than a volume is refused unless
``[NETWORK] volume_padding_size`` pads the volume up to it: a window filled
mostly with padding is almost always a wrong window size or a wrong image,
and padding that the user asked for is the way to say it is meant.

Every failure is a :class:`~tfuq.errors.UserError` of one line naming the
subject, the section and the file, and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tfuq.config import Config, InputSource
from tfuq.data.geometry import pixdim_shape
from tfuq.data.nifti import Volume, VolumeGeometry, read_geometry
from tfuq.data.subjects import Subject
from tfuq.errors import UserError

__all__ = ["GRID_TOLERANCE_MM", "check_image_values", "check_subject_files"]

#: Largest difference of any affine entry (mm) between images on "one grid", as :func:`~tfuq.data.same_grid`.
GRID_TOLERANCE_MM = 1e-3


def check_subject_files(
    config: Config,
    subjects: Iterable[Subject],
    sources: Mapping[str, InputSource],
    *,
    window: Sequence[int] | None = None,
    padding: Sequence[int] = (0, 0, 0),
) -> None:
    """Check every file of every subject from its header (no voxel is read).

    Args:
        config: The loaded configuration (its target section is the grid reference).
        subjects: The subjects of the job.
        sources: Resolved input sources (axis codes, ``pixdim``).
        window: The training window ``(X, Y, Z)``; None skips the window
            check (no training window, or volumes resized to it).
        padding: ``[NETWORK] volume_padding_size`` per axis.

    Raises:
        UserError: a file that is not a readable 3D NIfTI volume, with
            several channels, off its subject's grid, or smaller than the
            window; see the module notes.
    """
    target = config.target_section
    for subject in subjects:
        grids = {
            name: read_geometry(path, axcodes=sources[name].axcodes or None)
            for name, path in subject.files.items()
        }
        for name, grid in grids.items():
            if grid.num_channels != 1:
                raise UserError(
                    f"{grid.path}: [{name}] expected a 3D volume (one value per voxel); found "
                    f"{grid.num_channels} volumes (a 4D file): give one volume per file"
                )
        reference = grids.get(target) or next(iter(grids.values()))
        pixdim = sources[target].pixdim if target in grids else ()
        if pixdim:
            shape = pixdim_shape(reference.shape, reference.spacing, pixdim)
        else:
            for name, grid in grids.items():
                if not _same_grid(grid, reference):
                    raise UserError(
                        f"subject {subject.id}: [{name}] {grid.path} {_describe(grid)} is not on the grid of "
                        f"[{target}] {reference.path} {_describe(reference)}; a subject's images must share "
                        "one grid: resample them, or set pixdim in the input sections to resample"
                    )
            shape = reference.shape
        if window is not None:
            _check_window(subject.id, shape, reference.path, tuple(window), tuple(padding))


def check_image_values(volume: Volume, section: str, *, role: str) -> None:
    """Refuse an input image that is zero everywhere, or a mask with no voxel.

    Args:
        volume: The loaded image (NaN and infinite voxels are already refused
            by :func:`~tfuq.data.nifti.load_volume`).
        section: Its section name, for the message.
        role: ``"input"`` (a network input) or ``"mask"`` (the loss mask).

    Raises:
        UserError: the check failed (one line naming file and section).
        ValueError: an unknown ``role``.
    """
    if role == "input":
        if not np.any(volume.array):
            raise UserError(
                f"{volume.name}: [{section}] the image is zero everywhere; expected a scan (a failed "
                "conversion or export?)"
            )
    elif role == "mask":
        if not np.any(volume.array > 0):
            raise UserError(
                f"{volume.name}: [{section}] the mask is empty (no voxel > 0), so no voxel of this subject "
                "would count; fix the mask, or leave the subject out"
            )
    else:
        raise ValueError(f"Expected role 'input' or 'mask'. Received: role={role!r}")


def _same_grid(a: VolumeGeometry, b: VolumeGeometry) -> bool:
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, rtol=0.0, atol=GRID_TOLERANCE_MM))


def _describe(grid: VolumeGeometry) -> str:
    spacing = ", ".join(f"{s:.4g}" for s in grid.spacing)
    origin = ", ".join(f"{o:.4g}" for o in grid.affine[:3, 3])
    return f"(shape {grid.shape}, spacing ({spacing}), origin ({origin}))"


def _check_window(
    subject_id: str, shape: tuple[int, ...], path: Path, window: tuple[int, ...], padding: tuple[int, ...]
) -> None:
    for axis, (w, n, p) in enumerate(zip(window, shape, padding)):
        if w > n + 2 * p:
            largest = tuple(min(a, b + 2 * q) for a, b, q in zip(window, shape, padding))
            needed = max(-(-(a - b) // 2) for a, b in zip(window, shape))
            raise UserError(
                f"subject {subject_id}: the training window {window} is larger than its volume {shape} "
                f"({path}) on axis {axis}; set spatial_window_size to at most "
                f"{', '.join(map(str, largest))}, or pad the volumes with [NETWORK] volume_padding_size "
                f">= {needed}"
            )
