"""Masked, border-cropped reduction of per-voxel losses, shared by every loss.

Every voxel-wise loss in :mod:`tfuq.losses` is computed as a map of shape
``(B, *spatial)`` and reduced here: crop ``border`` voxels from each side of
every spatial axis (NiftyNet's ``loss_border``: window edges see padded
context), then average over the voxels selected by an optional mask, per
sample, and finally over the batch.

Mathematical details:
    For sample b with per-voxel loss l and non-negative mask weights m (after
    cropping), ``L_b = sum(m * l) / max(sum(m), 1)``; the batch loss is
    ``mean_b L_b``. Without a mask, m = 1 everywhere (a plain mean). A sample
    whose mask is empty contributes 0.

The target tensor of a Keras loss may carry the mask as a second channel:
``y_true[..., 0]`` is the target and ``y_true[..., 1]`` the mask (see
:func:`split_target`), so a ``tf.data`` pipeline can batch both in one tensor.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["check_border", "crop_border", "masked_mean", "split_target", "voxel_target"]


def check_border(border: int) -> int:
    """Return ``border`` if it is an int >= 0, else raise ``ValueError``."""
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ValueError(
            f"The loss border is a number of voxels. Expected an int >= 0. Received: border={border!r}"
        )
    return border


def crop_border(x: Any, border: int, spatial_rank: int) -> tf.Tensor:
    """Remove ``border`` voxels from both ends of the spatial axes ``1..spatial_rank``.

    Args:
        x: Tensor ``(B, *spatial, ...)``; axes after the spatial ones are kept.
        border: Voxels cropped from each side of each spatial axis, >= 0.
        spatial_rank: Number of spatial axes (2 or 3, or 1 for profiles).

    Returns:
        tf.Tensor: ``x`` with each spatial size reduced by ``2 * border``.

    Raises:
        ValueError: ``border`` negative, or a static spatial size <= 2 * border.
    """
    check_border(border)
    x = tf.convert_to_tensor(x)
    if border == 0:
        return x
    for axis in range(1, spatial_rank + 1):
        size = x.shape[axis]
        if size is not None and size <= 2 * border:
            raise ValueError(
                f"The loss border removes every voxel of spatial axis {axis}. Expected a "
                f"spatial size > 2 * border = {2 * border}. Received: shape {tuple(x.shape)}"
            )
    index = (slice(None),) + (slice(border, -border),) * spatial_rank
    return x[index]


def voxel_target(y: Any, spatial_shape_rank: int) -> tf.Tensor:
    """Return a target or mask of shape ``(B, *spatial)``, dropping a trailing channel of 1.

    Args:
        y: Tensor ``(B, *spatial)`` or ``(B, *spatial, 1)``.
        spatial_shape_rank: Rank of ``(B, *spatial)``, i.e. ``params.ndim - 1``.

    Returns:
        tf.Tensor: ``y`` with shape ``(B, *spatial)``.

    Raises:
        ValueError: any other rank or a trailing axis that is not 1.
    """
    y = tf.convert_to_tensor(y)
    rank = y.shape.rank
    if rank == spatial_shape_rank + 1 and y.shape[-1] == 1:
        return y[..., 0]
    if rank == spatial_shape_rank:
        return y
    raise ValueError(
        f"A voxel-wise target must have shape (B, *spatial) or (B, *spatial, 1) of rank "
        f"{spatial_shape_rank} or {spatial_shape_rank + 1}. Received: shape {tuple(y.shape)}"
    )


def split_target(y_true: Any, params_rank: int) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Split a Keras ``y_true`` into ``(target, mask)`` by its channels.

    Args:
        y_true: ``(B, *spatial)`` or ``(B, *spatial, 1)`` (target only) or
            ``(B, *spatial, 2)`` (channel 0 target, channel 1 mask).
        params_rank: Rank of the prediction ``(B, *spatial, P)``.

    Returns:
        tuple: target ``(B, *spatial)`` and mask ``(B, *spatial)`` or None.

    Raises:
        ValueError: ``y_true`` has an unexpected rank or more than 2 channels.
    """
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == params_rank and y_true.shape[-1] == 2:
        return y_true[..., 0], y_true[..., 1]
    if y_true.shape.rank == params_rank and y_true.shape[-1] not in (1, None):
        raise ValueError(
            "y_true carries channels [target] or [target, mask] on its last axis. Expected 1 "
            f"or 2 channels. Received: y_true with shape {tuple(y_true.shape)}"
        )
    return voxel_target(y_true, params_rank - 1), None


def masked_mean(values: Any, mask: Any = None, border: int = 0) -> tf.Tensor:
    """Per-sample mean of a voxel map over the masked, border-cropped voxels.

    Args:
        values: Per-voxel loss ``(B, *spatial)``.
        mask: Optional non-negative weights ``(B, *spatial)`` or
            ``(B, *spatial, 1)`` (bool or float); None selects every voxel.
        border: Voxels cropped from each spatial side before reducing, >= 0.

    Returns:
        tf.Tensor: ``(B,)``, ``sum(mask * values) / max(sum(mask), 1)`` per sample.

    Raises:
        ValueError: bad ``border`` or a mask whose shape does not match.

    Example:
        >>> masked_mean(tf.ones((2, 4, 4)), border=1).shape
        TensorShape([2])
    """
    values = tf.convert_to_tensor(values)
    spatial_rank = values.shape.rank - 1
    values = crop_border(values, border, spatial_rank)
    axes = list(range(1, spatial_rank + 1))
    if mask is None:
        return tf.reduce_mean(values, axis=axes)
    mask = voxel_target(mask, spatial_rank + 1)
    mask = crop_border(tf.cast(mask, values.dtype), border, spatial_rank)
    if not mask.shape.is_compatible_with(values.shape):
        raise ValueError(
            "The loss mask must have the voxel shape of the target. Expected shape "
            f"{tuple(values.shape)} after cropping. Received: mask with shape {tuple(mask.shape)}"
        )
    # where() keeps a non-finite value outside the mask from poisoning the sum.
    total = tf.reduce_sum(mask * tf.where(mask > 0, values, tf.zeros_like(values)), axis=axes)
    count = tf.reduce_sum(mask, axis=axes)
    return total / tf.maximum(count, tf.ones_like(count))
