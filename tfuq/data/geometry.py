"""Voxel grids in world space: comparison, resampling, pairing of modalities.

A grid is a spatial shape plus a ``(4, 4)`` voxel -> world (mm) affine.
Resampling is done in world space: output voxel ``j`` takes the value of the
input at index ``inv(A_in) @ A_out @ j`` (spline interpolation of the given
order, :func:`scipy.ndimage.affine_transform`), so images on arbitrary,
rotated or anisotropic grids land on a common one without moving anatomy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from tfuq.data.nifti import Volume
from tfuq.errors import UserError

__all__ = ["align_pair", "pixdim_shape", "resample_to_grid", "resample_to_pixdim", "same_grid"]

_MAX_ORDER = 5


def same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> bool:
    """Whether two volumes share spatial shape and affine (to ``atol`` mm).

    Args:
        a: First volume.
        b: Second volume.
        atol: Absolute tolerance on every affine entry. Default 1e-3.

    Returns:
        True when ``a.shape == b.shape`` and the affines agree.
    """
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, rtol=0.0, atol=atol))


def resample_to_grid(
    volume: Volume,
    affine: npt.ArrayLike,
    shape: Sequence[int],
    *,
    order: int = 3,
    cval: float | None = None,
) -> Volume:
    """Resample ``volume`` onto the grid ``(affine, shape)`` in world space.

    Output voxel ``j`` gets the input value at continuous index
    ``inv(volume.affine) @ affine @ j``; points outside the input get
    ``cval``. Each channel is resampled separately.

    Args:
        volume: Source volume, array ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        affine: ``(4, 4)`` voxel -> world map of the output grid, in the same
            world frame as ``volume.affine``.
        shape: Output spatial shape ``(X', Y', Z')``.
        order: Spline order 0-5 (0 nearest, for labels; 1 linear; 3 cubic).
            Default 3.
        cval: Value outside the source field of view. Default None: the
            volume's minimum (air in CT, background in MR).

    Returns:
        A :class:`Volume` on the new grid, array dtype as the source's,
        shape ``(X', Y', Z'[, C])``; written back in the source file's
        orientation by :func:`~tfuq.data.nifti.save_volume`.

    Raises:
        ValueError: Invalid order, shape or affine.

    Example:
        >>> target = resample_to_grid(ct, mr.affine, mr.shape, order=1)  # doctest: +SKIP
    """
    _check_order(order)
    out_shape = tuple(int(n) for n in shape)
    if len(out_shape) != 3 or min(out_shape) < 1:
        raise ValueError(f"Expected 3 positive sizes. Received: shape={tuple(shape)}")
    out_affine = np.asarray(affine, dtype=np.float64)
    if out_affine.shape != (4, 4):
        raise ValueError(f"Expected a 4x4 affine. Received: affine.shape={out_affine.shape}")
    # Output index -> input index.
    mapping = np.linalg.solve(volume.affine, out_affine)
    source = volume.array
    fill = float(np.min(source)) if cval is None else float(cval)
    channels = source[..., None] if source.ndim == 3 else source
    resampled = np.empty((*out_shape, channels.shape[-1]), dtype=source.dtype)
    for c in range(channels.shape[-1]):
        ndimage.affine_transform(
            channels[..., c],
            mapping[:3, :3],
            offset=mapping[:3, 3],
            output_shape=out_shape,
            output=resampled[..., c],
            order=order,
            mode="constant",
            cval=fill,
        )
    if source.ndim == 3:
        resampled = resampled[..., 0]
    return volume.on_grid(resampled, out_affine)


def resample_to_pixdim(volume: Volume, pixdim: float | Sequence[float], *, order: int = 3) -> Volume:
    """Resample ``volume`` to voxel sizes ``pixdim``, keeping its field of view.

    Axis directions are kept; the new size along axis ``k`` is
    ``max(1, round(n_k * spacing_k / pixdim_k))`` and the grid is centred
    on the old grid's centre, so the field of view is kept to within one
    voxel. Volumes already at ``pixdim`` are returned unchanged.

    Args:
        volume: Source volume.
        pixdim: Voxel size in mm, one number or one per array axis.
        order: Spline order 0-5. Default 3.

    Returns:
        The resampled :class:`Volume`.

    Raises:
        ValueError: ``pixdim`` is not 1 or 3 positive numbers.
    """
    sizes = _pixdim(pixdim)
    old_spacing = np.asarray(volume.spacing)
    if np.allclose(old_spacing, sizes, rtol=0.0, atol=1e-6):
        return volume
    old_shape = np.asarray(volume.shape, dtype=np.float64)
    new_shape = np.asarray(pixdim_shape(volume.shape, volume.spacing, sizes))
    new_affine = volume.affine.copy()
    new_affine[:3, :3] = volume.affine[:3, :3] / old_spacing * sizes
    centre = volume.affine @ np.append((old_shape - 1) / 2.0, 1.0)
    new_affine[:3, 3] = centre[:3] - new_affine[:3, :3] @ ((new_shape - 1) / 2.0)
    return resample_to_grid(volume, new_affine, tuple(new_shape), order=order)


def pixdim_shape(
    shape: Sequence[int], spacing: Sequence[float], pixdim: float | Sequence[float]
) -> tuple[int, int, int]:
    """The shape :func:`resample_to_pixdim` gives a grid of ``shape`` and ``spacing``.

    ``max(1, round(n_k * spacing_k / pixdim_k))`` per axis (halves round up);
    the shape itself when the spacing already is ``pixdim``.

    Raises:
        ValueError: ``pixdim`` is not 1 or 3 positive numbers.

    Example:
        >>> pixdim_shape((10, 10, 5), (1.0, 1.0, 2.0), 2.0)
        (5, 5, 5)
    """
    sizes = _pixdim(pixdim)
    old = np.asarray(spacing, dtype=np.float64)
    if np.allclose(old, sizes, rtol=0.0, atol=1e-6):
        return tuple(int(n) for n in shape)  # type: ignore[return-value]
    new = np.maximum(1, np.floor(np.asarray(shape, dtype=np.float64) * old / sizes + 0.5)).astype(int)
    return tuple(int(n) for n in new)  # type: ignore[return-value]


def align_pair(
    volumes: Mapping[str, Volume],
    *,
    target: str,
    pixdim: float | Sequence[float] | None = None,
    order_by_name: Mapping[str, int] | None = None,
) -> dict[str, Volume]:
    """Put the volumes of one subject (one per input section) on a common grid.

    With ``pixdim``, the ``target`` volume is resampled to those voxel sizes
    and every other volume onto the target's grid. Without it, all volumes
    must already share the target's grid.

    Args:
        volumes: Section name -> volume, e.g. ``{"MR": mr, "CT": ct}``.
        target: Section whose grid the others follow.
        pixdim: Optional voxel size(s) in mm for the common grid.
        order_by_name: Spline order per section (e.g. ``interp_order`` of
            each input section; 0 for labels). Default 3 for all.

    Returns:
        Section name -> volume on the common grid, in the input's order.

    Raises:
        ValueError: ``target`` is not one of ``volumes``.
        UserError: Without ``pixdim``, a volume is on a different grid than
            the target; the message names both files, shapes and spacings.
    """
    if target not in volumes:
        raise ValueError(f"Expected target to be one of {sorted(volumes)}. Received: target={target!r}")
    orders = dict(order_by_name or {})
    reference = volumes[target]
    if pixdim is not None:
        reference = resample_to_pixdim(reference, pixdim, order=orders.get(target, 3))
    aligned: dict[str, Volume] = {}
    for name, volume in volumes.items():
        if name == target:
            aligned[name] = reference
        elif same_grid(volume, reference):
            aligned[name] = volume
        elif pixdim is not None:
            aligned[name] = resample_to_grid(
                volume, reference.affine, reference.shape, order=orders.get(name, 3)
            )
        else:
            raise UserError(
                f"{name} image {volume.name} (shape {volume.shape}, spacing {_fmt(volume.spacing)}) "
                f"is not on the grid of {target} image {reference.name} (shape {reference.shape}, "
                f"spacing {_fmt(reference.spacing)}); set pixdim in the input sections to resample."
            )
    return aligned


def _pixdim(pixdim: float | Sequence[float]) -> np.ndarray:
    sizes = np.atleast_1d(np.asarray(pixdim, dtype=np.float64))
    if sizes.size == 1:
        sizes = np.repeat(sizes, 3)
    if sizes.shape != (3,) or not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError(f"Expected 1 or 3 positive voxel sizes. Received: pixdim={pixdim}")
    return sizes


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 0 <= order <= _MAX_ORDER:
        raise ValueError(f"Expected an interpolation order in 0..{_MAX_ORDER}. Received: order={order!r}")


def _fmt(spacing: Sequence[float]) -> str:
    return "(" + ", ".join(f"{s:.4g}" for s in spacing) + ")"
