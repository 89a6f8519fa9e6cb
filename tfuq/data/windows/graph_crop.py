"""Windows cut with TensorFlow ops: padded crops, block means and MultiRes levels in the graph.

The tf.data training pipeline (:mod:`tfuq.data.pipeline`) cuts its windows
with these functions inside ``Dataset.map``, from volumes held as tensors, so
no window passes through Python. They compute exactly what their NumPy
references compute for the same start:

- :func:`crop_padded_tf` is :func:`tfuq.data.windows.padding.crop_padded`
  (same :data:`~tfuq.data.windows.padding.PADDING_MODES`, same index rule
  for ``edge``/``reflect``/``symmetric``, fill per channel for
  ``constant``/``minimum``): a copy, so equal bit for bit;
- :func:`average_pool_tf` is :func:`tfuq.data.windows.multires.average_pool`
  with the same order of float32 additions (the ``f`` blocks of each axis
  summed in turn, axis 0 first, then one division by ``f^3``): equal bit for
  bit when run eagerly; traced (e.g. in ``Dataset.map``) Grappler may
  regroup the sums or divide as a product with ``1 / f^3``, so equal to
  float32 round-off (measured: a few ulp of the summands; none for the
  MultiRes factors 1, 2, 4 in the tests);
- :func:`multires_windows_tf` is
  :func:`tfuq.data.windows.multires.multires_windows`: level ``f`` is the
  block mean of the ``f * w`` voxels it sees, read straight from the volume
  at ``start - (f - 1) * w / 2`` (only the largest level reads the whole
  ``max(factors) * w`` context, e.g. 320^3 for Klaser's 80^3 windows).

A crop slices the part of the window inside the volume and, only when the
window leaves it, pads that part: ``tf.pad`` with the fill per channel for
``constant``/``minimum``, gathers by the NumPy index rule along each axis
for ``edge``/``reflect``/``symmetric``. So a 320^3 context costs one 320^3
copy (two at the border), never a padded copy of the volume.

Reference:
    Klaser et al., "Uncertainty-aware multi-resolution whole-body MR to CT
    synthesis", SASHIMI 2020, doi:10.1007/978-3-030-59520-3_12 (section 2.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tfuq.data.windows.multires import check_multires
from tfuq.data.windows.padding import PADDING_MODES, as_window

__all__ = ["average_pool_tf", "crop_padded_tf", "multires_windows_tf"]


def _axis_indices(tf: Any, start: Any, size: int, length: int, mode: str) -> tuple[Any, Any]:
    """Source indices of one axis (clipped into the volume) and where they lie inside it.

    The index rule of :func:`tfuq.data.windows.padding.crop_padded` (numpy.pad's modes).
    """
    index = tf.range(size, dtype=tf.int64) + start
    inside = (index >= 0) & (index < length)
    if mode == "reflect" and length > 1:
        period = 2 * length - 2
        index = tf.math.floormod(index, period)
        index = tf.where(index >= length, period - index, index)
    elif mode == "symmetric":
        period = 2 * length
        index = tf.math.floormod(index, period)
        index = tf.where(index >= length, period - 1 - index, index)
    return tf.clip_by_value(index, 0, length - 1), inside


def crop_padded_tf(
    volume: Any,
    start: Any,
    size: int | Sequence[int],
    *,
    mode: str = "constant",
    cval: float | Sequence[float] | None = None,
) -> Any:
    """The window ``[start, start + size)`` of ``volume``, padded by ``mode`` where it leaves the volume.

    Args:
        volume: ``(X, Y, Z, C)`` tensor with a static shape.
        start: ``(3,)`` integer tensor (may be negative or past the volume).
        size: Window size (static).
        mode: One of :data:`~tfuq.data.windows.padding.PADDING_MODES`.
        cval: Fill of ``"constant"`` (default 0) and ``"minimum"`` (required:
            the volume's minimum per channel, e.g. ``SubjectArrays.minima``):
            one number or one per channel.

    Returns:
        ``(*size, C)`` tensor of ``volume``'s dtype.

    Raises:
        ValueError: unknown mode, a volume that is not 4D with a static
            shape, or ``"minimum"`` without ``cval``.
    """
    import tensorflow as tf

    if mode not in PADDING_MODES:
        raise ValueError(f"Expected mode in {PADDING_MODES}. Received: mode={mode!r}")
    shape = volume.shape
    if shape.rank != 4 or not shape.is_fully_defined():
        raise ValueError(f"Expected a (X, Y, Z, C) tensor with a static shape. Received: shape={shape}")
    if mode == "minimum" and cval is None:
        raise ValueError("Expected cval (the minimum per channel) with mode='minimum'")
    size = as_window(size, name="size")
    start = tf.cast(tf.reshape(start, (3,)), tf.int64)
    if mode in ("constant", "minimum"):
        return _crop_filled(tf, volume, start, size, 0 if cval is None else cval)
    axes = [_axis_indices(tf, start[a], size[a], shape[a], mode) for a in range(3)]
    low = tf.stack([tf.reduce_min(index) for index, _ in axes])
    high = tf.stack([tf.reduce_max(index) for index, _ in axes]) + 1
    box = tf.slice(volume, tf.concat([low, [0]], 0), tf.concat([high - low, [-1]], 0))
    everywhere_inside = tf.reduce_all(tf.stack([tf.reduce_all(inside) for _, inside in axes]))

    def padded() -> Any:
        out = box
        for axis, (index, _) in enumerate(axes):
            out = tf.gather(out, index - low[axis], axis=axis)
        return out

    out = tf.cond(everywhere_inside, lambda: tf.identity(box), padded)
    return tf.ensure_shape(out, (*size, shape[3]))


def _crop_filled(tf: Any, volume: Any, start: Any, size: tuple[int, int, int], cval: Any) -> Any:
    """``constant``/``minimum`` padding: the part inside the volume, padded with ``cval`` per channel."""
    shape = volume.shape
    length = tf.constant(shape[:3].as_list(), tf.int64)
    low = tf.clip_by_value(start, 0, length)
    high = tf.clip_by_value(start + tf.constant(size, tf.int64), 0, length)
    inner = tf.slice(volume, tf.concat([low, [0]], 0), tf.concat([high - low, [-1]], 0))
    before = tf.clip_by_value(low - start, 0, tf.constant(size, tf.int64))
    after = tf.constant(size, tf.int64) - before - (high - low)
    paddings = tf.concat([tf.stack([before, after], axis=1), tf.zeros((1, 2), tf.int64)], 0)
    fill = np.broadcast_to(np.asarray(cval, dtype=volume.dtype.as_numpy_dtype), (shape[3],))

    def padded() -> Any:
        channels = [tf.pad(inner[..., c : c + 1], paddings, constant_values=fill[c]) for c in range(shape[3])]
        return channels[0] if len(channels) == 1 else tf.concat(channels, axis=-1)

    inside = tf.reduce_all(tf.equal(tf.reduce_sum(paddings), 0))
    out = tf.cond(inside, lambda: tf.identity(inner), padded)
    return tf.ensure_shape(out, (*size, shape[3]))


def average_pool_tf(tensor: Any, factor: int) -> Any:
    """Mean over non-overlapping ``factor^3`` blocks of the spatial axes (float32 like the NumPy reference).

    Args:
        tensor: ``(X, Y, Z, C)`` with X, Y, Z divisible by ``factor``.
        factor: Block side, ``>= 1``.

    Returns:
        ``(X/f, Y/f, Z/f, C)`` float32 (float64 stays float64).

    Raises:
        ValueError: a spatial size not divisible by ``factor``.
    """
    import tensorflow as tf

    shape = tensor.shape
    if factor < 1 or shape.rank != 4 or any(n is None or n % factor for n in shape[:3]):
        raise ValueError(
            f"Expected a (X, Y, Z, C) tensor with sizes divisible by factor >= 1. "
            f"Received: shape={shape}, factor={factor}"
        )
    dtype = tf.float64 if tensor.dtype == tf.float64 else tf.float32
    out = tf.cast(tensor, dtype)
    if factor == 1:
        return out
    for axis in range(3):  # the NumPy reference's order of additions (block k of each axis in turn)
        sizes = out.shape.as_list()
        blocks = tf.reshape(out, [*sizes[:axis], sizes[axis] // factor, factor, *sizes[axis + 1 :]])
        index: list[Any] = [slice(None)] * (axis + 1)
        total = blocks[(*index, 0)]
        for k in range(1, factor):
            total = total + blocks[(*index, k)]
        out = total
    return out / tf.constant(factor**3, dtype)


def multires_windows_tf(
    volume: Any,
    start: Any,
    window: int | Sequence[int],
    factors: Sequence[int],
    *,
    mode: str = "minimum",
    cval: float | Sequence[float] | None = None,
) -> list[Any]:
    """MultiRes levels around the full-resolution window at ``start`` (see the module notes).

    Args:
        volume: ``(X, Y, Z, C)`` tensor with a static shape.
        start: ``(3,)`` integer tensor, start of the target (finest) window.
        window: Window size of every level (80 in the paper).
        factors: Downsampling factors, finest first, e.g. (1, 2, 4).
        mode: Padding mode where a field of view leaves the volume.
        cval: Fill of ``"constant"``/``"minimum"`` (see :func:`crop_padded_tf`).

    Returns:
        One ``(*window, C)`` float32 tensor per factor, finest first.

    Raises:
        ValueError: a bad geometry (:func:`~tfuq.data.windows.multires.check_multires`).
    """
    import tensorflow as tf

    window, factors, _ = check_multires(window, factors)
    start = tf.cast(tf.reshape(start, (3,)), tf.int64)
    levels = []
    for f in factors:
        origin = start - tf.constant([(f - 1) * w // 2 for w in window], tf.int64)
        region = crop_padded_tf(volume, origin, [f * w for w in window], mode=mode, cval=cval)
        levels.append(average_pool_tf(region, f))
    return levels
