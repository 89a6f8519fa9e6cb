"""Load one subject's volumes, on the target's grid, as the config describes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tfuq.config import Config, InputSource
from tfuq.data.geometry import align_pair
from tfuq.data.nifti import Volume, load_volume
from tfuq.data.normalisation import NormalisationParams, fit_normalisation
from tfuq.data.subjects import Subject
from tfuq.errors import UserError

__all__ = ["fit_array_normalisation", "fit_section_normalisation", "load_subject"]


def load_subject(
    config: Config, subject: Subject, sources: Mapping[str, InputSource] | None = None
) -> dict[str, Volume]:
    """Read every section's file of ``subject`` and put them on a common grid.

    Each file is read with its section's ``axcodes`` (RAS+ when empty). The
    target section's grid is the reference: with ``pixdim`` set in the target
    section, it is resampled to those voxel sizes and the other sections onto
    it, each with its own ``interp_order``; without, every file must already
    be on the target's grid (otherwise a one-line error names both files).

    Args:
        config: The loaded configuration.
        subject: A subject from :func:`tfuq.data.subjects.find_subjects`.
        sources: Resolved sources (default ``config.sources``).

    Returns:
        Section name -> :class:`~tfuq.data.nifti.Volume`, in the subject's order.

    Raises:
        UserError: unreadable file, NaNs, or volumes on different grids.
    """
    sources = config.sources if sources is None else sources
    volumes = {
        name: load_volume(path, axcodes=sources[name].axcodes or None) for name, path in subject.files.items()
    }
    target = config.target_section if config.target_section in volumes else next(iter(volumes))
    pixdim = sources[target].pixdim or None
    orders = {name: sources[name].interp_order for name in volumes}
    return align_pair(volumes, target=target, pixdim=pixdim, order_by_name=orders)


def fit_section_normalisation(
    source: InputSource, volume: Volume, mask: np.ndarray | None = None
) -> NormalisationParams:
    """Fit the section's ``intensity_normalisation`` to one of its volumes.

    With ``normalise_foreground_only`` the statistics come from ``mask`` (e.g.
    the body mask section) or, without one, from voxels above the volume's
    minimum.

    Raises:
        UserError: the image cannot be normalised (e.g. it is constant); the
            message names the file and section.
    """
    return fit_array_normalisation(source, volume.array, mask, name=volume.name)


def fit_array_normalisation(
    source: InputSource, array: np.ndarray, mask: np.ndarray | None = None, *, name: str = ""
) -> NormalisationParams:
    """:func:`fit_section_normalisation` of an array (``name`` labels errors, e.g. the file)."""
    foreground = None
    if source.normalise_foreground_only:
        foreground = mask > 0 if mask is not None else array > array.min()
    try:
        return fit_normalisation(
            array,
            source.intensity_normalisation,
            mask=foreground,
            cutoff=source.cutoff,
            window=source.intensity_window,
        )
    except ValueError as err:
        raise UserError(f"{name}: [{source.name}] intensity_normalisation: {err}") from err
