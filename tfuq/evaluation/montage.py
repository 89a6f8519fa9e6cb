"""Per-subject montage: input, target, mean, |error| and uncertainty maps on three mid slices.

Rows are the three orthogonal slices through the volume centre (or a given
point): sagittal (fixed axis 0), coronal (fixed axis 1) and axial (fixed
axis 2) of a volume in RAS voxel order; given the affine, volumes stored in
another orientation (e.g. L-P-S) are reoriented to RAS for display first, so
slices appear in the neurological convention (superior up, anterior up in
axial slices, the subject's right on the right). Columns are the maps, each
with its own colour bar and units. Target and mean share one intensity
window so they can be compared; error and std maps start at 0. Panel sizes
follow the physical extent of each slice.

Reference:
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis",
    Fig. 3 (input, truth, synthesis, absolute error and uncertainty maps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nibabel import orientations

from tfuq.evaluation.checks import as_map
from tfuq.evaluation.plots import new_figure, save_figure
from tfuq.typing import PathLike

__all__ = ["MONTAGE_COLUMNS", "mid_slices", "plot_montage", "to_ras"]

#: Default column order and colour maps of a subject montage.
MONTAGE_COLUMNS = {
    "input": "gray",
    "target": "gray",
    "mean": "gray",
    "|error|": "magma",
    "epistemic std": "inferno",
    "aleatoric std": "inferno",
}
_SHARED_WINDOW = ("target", "mean")
_ROW_NAMES = ("sagittal", "coronal", "axial")
#: Width of one image panel in inches (colour bar and labels come on top).
_PANEL_WIDTH = 2.0


def to_ras(volume: np.ndarray, affine: Any) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorder and flip the axes of a 3D volume to RAS voxel order (display only).

    Args:
        volume: 3D array in the voxel order of ``affine``.
        affine: 4x4 voxel-to-world matrix of that volume.

    Returns:
        ``(ras_volume, spacing)``: the reoriented view (no resampling) and the
        voxel size along its three axes (mm).

    Raises:
        ValueError: not 3D, or the affine is not 4x4.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3 or matrix.shape != (4, 4):
        raise ValueError(f"Expected a 3D volume and a 4x4 affine. Received: {volume.shape}, {matrix.shape}")
    ornt = orientations.io_orientation(matrix)
    transform = orientations.ornt_transform(ornt, orientations.axcodes2ornt(("R", "A", "S")))
    zooms = np.sqrt(np.sum(np.square(matrix[:3, :3]), axis=0))
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(transform):
        spacing[int(target)] = float(zooms[axis])
    return orientations.apply_orientation(volume, transform), (spacing[0], spacing[1], spacing[2])


def mid_slices(volume: np.ndarray, center: Sequence[int] | None = None) -> list[np.ndarray]:
    """The three orthogonal slices through ``center`` (default the middle voxel).

    Args:
        volume: 3D array ``(X, Y, Z)``.
        center: Voxel index of the crossing point, or None for ``shape // 2``.

    Returns:
        ``[volume[c0], volume[:, c1], volume[:, :, c2]]``, each transposed so
        that its second in-plane axis runs vertically (display with
        ``origin="lower"``).

    Raises:
        ValueError: not 3D, or ``center`` outside the volume.
    """
    if volume.ndim != 3:
        raise ValueError(f"Expected a 3D volume. Received: shape {volume.shape}")
    point = [n // 2 for n in volume.shape] if center is None else [int(c) for c in center]
    if len(point) != 3 or not all(0 <= c < n for c, n in zip(point, volume.shape)):
        raise ValueError(f"center must be 3 indices inside {volume.shape}. Received: center={center!r}")
    return [volume[point[0]].T, volume[:, point[1]].T, volume[:, :, point[2]].T]


def _window(
    name: str, values: Sequence[np.ndarray], shared: tuple[float, float] | None
) -> tuple[float, float]:
    if shared is not None and name in _SHARED_WINDOW:
        return shared
    data = np.concatenate([v.reshape(-1) for v in values])
    low = 0.0 if MONTAGE_COLUMNS.get(name, "gray") != "gray" else float(np.percentile(data, 0.5))
    high = float(np.percentile(data, 99.5))
    return (low, high) if high > low else (low, low + 1.0)


def plot_montage(
    path: PathLike,
    volumes: Mapping[str, Any],
    *,
    units: Mapping[str, str] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    affine: Any | None = None,
    center: Sequence[int] | None = None,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Montage of several volumes on three orthogonal mid slices, with colour bars.

    Args:
        path: Destination PNG: 2.6 inches per column; rows 2 inches wide
            panels as tall as the slices' physical aspect, plus 0.6 inch
            (1 inch with a title).
        volumes: Column title -> 3D volume, all of one shape, in column order
            (e.g. the keys of :data:`MONTAGE_COLUMNS`: input, target, mean,
            |error|, epistemic std, aleatoric std). Unknown names use a grey map.
        units: Column title -> units shown on its colour bar (e.g.
            ``{"target": "HU", "input": "a.u."}``).
        spacing: Voxel size (mm) along the three axes, for the aspect ratio;
            ignored when ``affine`` is given.
        affine: Optional 4x4 voxel-to-world matrix of the volumes: they are
            reoriented to RAS for display and the spacing is taken from it.
        center: Crossing point of the slices (in RAS voxel order when an
            affine is given); default the volume centre.
        title: Figure title (e.g. the subject id).
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: no volume, shapes differ, non-3D or non-finite volumes.
    """
    if not volumes:
        raise ValueError("volumes is empty. Expected at least one 3D volume.")
    arrays = {name: as_map(v, name) for name, v in volumes.items()}
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"Expected volumes of one shape. Received: {shapes}")
    if affine is not None:
        oriented = {name: to_ras(a, affine) for name, a in arrays.items()}
        arrays = {name: pair[0] for name, pair in oriented.items()}
        spacing = next(iter(oriented.values()))[1]
    sx, sy, sz = (float(s) for s in spacing)
    nx, ny, nz = next(iter(arrays.values())).shape
    aspects = (sz / sy, sz / sx, sy / sx)  # (height spacing) / (width spacing) per row
    heights = (nz * sz / (ny * sy), nz * sz / (nx * sx), ny * sy / (nx * sx))  # panel height / width
    slices = {name: mid_slices(a, center) for name, a in arrays.items()}
    shared_names = [n for n in _SHARED_WINDOW if n in slices]
    shared = _window("target", [s for n in shared_names for s in slices[n]], None) if shared_names else None
    units = dict(units or {})
    height = _PANEL_WIDTH * sum(heights) + (1.0 if title else 0.6)
    fig = new_figure(2.6 * len(arrays), round(height, 2))
    axes = fig.subplots(3, len(arrays), squeeze=False, gridspec_kw={"height_ratios": heights})
    for col, (name, planes) in enumerate(slices.items()):
        low, high = _window(name, planes, shared)
        cmap = MONTAGE_COLUMNS.get(name, "gray")
        for row, plane in enumerate(planes):
            ax = axes[row, col]
            image = ax.imshow(plane, cmap=cmap, vmin=low, vmax=high, origin="lower", aspect=aspects[row])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(_ROW_NAMES[row])
        unit = units.get(name, "")
        fig.colorbar(image, ax=axes[:, col], shrink=0.8, label=f"{name} [{unit}]" if unit else name)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, overwrite=overwrite)
