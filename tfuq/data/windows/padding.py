"""Windows that reach past a volume's edge: window sizes, padding widths, padded crops.

One rule pads every volume in tfuq, for training windows
(``[NETWORK] volume_padding_size`` / ``volume_padding_mode``), MultiRes
context and whole-volume inference alike: the part of a window outside the
volume is filled by a padding mode (:data:`PADDING_MODES`), numpy.pad's
``"constant"`` (0 unless a fill value is given), ``"edge"``, ``"reflect"``,
``"symmetric"``, or ``"minimum"``, which fills with the volume's minimum per
channel (numpy's own ``"minimum"`` would use each line's minimum; for MR and
CT volumes the channel minimum is the background). :func:`crop_padded`
reads one such window without materialising the padding; :func:`pad_volume`
is the window that spans the whole padded volume, so the two always agree.
An inference window grid pads with its own widths,
``pad_volume(volume, grid.padding, mode)``.

Example:
    >>> x = np.arange(4.0).reshape(4, 1, 1)
    >>> pad_volume(x, ((1, 2), (0, 0), (0, 0)), "edge")[:, 0, 0].tolist()
    [0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["PADDING_MODES", "as_padding", "as_window", "crop_padded", "pad_volume", "padding_widths"]

#: Padding modes (``[NETWORK] volume_padding_mode``).
PADDING_MODES = ("minimum", "constant", "edge", "reflect", "symmetric")


def as_window(window: int | Sequence[int], *, name: str = "window") -> tuple[int, int, int]:
    """A 3D window from 1, 2 or 3 sizes (a 2D window ``(H, W)`` becomes ``(H, W, 1)``).

    Raises:
        ValueError: not 1-3 integers >= 1.
    """
    sizes = (window,) * 3 if isinstance(window, (int, np.integer)) else tuple(window)
    if len(sizes) == 2:
        sizes = (*sizes, 1)
    if len(sizes) != 3 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
        raise ValueError(f"Expected {name} as 2 or 3 integers >= 1. Received: {name}={window!r}")
    return tuple(int(s) for s in sizes)  # type: ignore[return-value]


def as_padding(padding: int | Sequence[int]) -> tuple[int, int, int]:
    """Padding per axis from 1 or 3 non-negative integers.

    Raises:
        ValueError: not 1 or 3 integers >= 0.
    """
    sizes = (padding,) if isinstance(padding, (int, np.integer)) else tuple(padding)
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3 or not all(isinstance(s, (int, np.integer)) and s >= 0 for s in sizes):
        raise ValueError(f"Expected padding as 1 or 3 integers >= 0. Received: padding={padding!r}")
    return tuple(int(s) for s in sizes)  # type: ignore[return-value]


def padding_widths(padding: int | Sequence[int] | Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """``((before, after),) * 3`` from 1 or 3 symmetric widths or 3 ``(before, after)`` pairs.

    Raises:
        ValueError: anything else, or a negative width.

    Example:
        >>> padding_widths(2)
        ((2, 2), (2, 2), (2, 2))
        >>> padding_widths(((0, 1), (2, 2), (0, 0)))
        ((0, 1), (2, 2), (0, 0))
    """
    nested = not isinstance(padding, (int, np.integer)) and any(
        isinstance(p, (Sequence, np.ndarray)) for p in padding
    )
    if not nested:
        return tuple((p, p) for p in as_padding(padding))  # type: ignore[arg-type]
    pairs = tuple(tuple(p) if isinstance(p, (Sequence, np.ndarray)) else () for p in padding)
    flat = [v for pair in pairs for v in pair]
    if (
        len(pairs) != 3
        or any(len(pair) != 2 for pair in pairs)
        or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in flat)
    ):
        raise ValueError(
            "Expected padding as 1 or 3 integers >= 0 or 3 (before, after) pairs. "
            f"Received: padding={padding!r}"
        )
    return tuple((int(a), int(b)) for a, b in pairs)


def crop_padded(
    array: npt.ArrayLike,
    start: Sequence[int],
    size: int | Sequence[int],
    *,
    mode: str = "constant",
    cval: float | npt.ArrayLike | None = None,
) -> np.ndarray:
    """The window ``[start, start + size)`` of ``array``, padded by ``mode`` where it leaves the volume.

    Args:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        start: Window start per spatial axis (may be negative).
        size: Window size.
        mode: One of :data:`PADDING_MODES`.
        cval: Fill value for ``"constant"`` (default 0) and ``"minimum"``
            (default the array's minimum per channel); one number or one per
            channel.

    Returns:
        A new array ``(*size, [C])`` of ``array``'s dtype.

    Raises:
        ValueError: unknown mode or bad start/size.
    """
    data = _spatial_array(array)
    size = as_window(size, name="size")
    start = tuple(int(s) for s in start)
    if len(start) != 3:
        raise ValueError(f"Expected 3 start indices. Received: start={start}")
    if mode not in PADDING_MODES:
        raise ValueError(f"Expected mode in {PADDING_MODES}. Received: mode={mode!r}")
    if all(s >= 0 and s + w <= n for s, w, n in zip(start, size, data.shape)):
        return data[tuple(slice(s, s + w) for s, w in zip(start, size))].copy()
    if mode in ("constant", "minimum"):
        if cval is None and mode == "constant":
            cval = 0
        elif cval is None:  # per channel: reducing a strided view is much faster than over axes
            cval = [data[..., c].min() for c in range(data.shape[3])] if data.ndim == 4 else data.min()
        out = np.empty((*size, *data.shape[3:]), dtype=data.dtype)
        out[...] = cval
        lo = [max(0, s) for s in start]
        hi = [min(n, s + w) for s, w, n in zip(start, size, data.shape)]
        if all(a < b for a, b in zip(lo, hi)):
            target = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
            out[target] = data[tuple(slice(a, b) for a, b in zip(lo, hi))]
        return out
    out = data  # one gather per axis: much faster than a 3-axis fancy index
    for axis, (s, w, n) in enumerate(zip(start, size, data.shape)):
        out = out.take(_axis_indices(s, w, n, mode), axis=axis)
    return out


def pad_volume(
    array: npt.ArrayLike,
    padding: int | Sequence[int] | Sequence[Sequence[int]],
    mode: str = "minimum",
    *,
    pad_value: float | npt.ArrayLike | None = None,
) -> np.ndarray:
    """Pad the spatial axes of ``array`` (see the module notes).

    Args:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        padding: Voxels added on each side: 1 or 3 widths, or 3
            ``(before, after)`` pairs (see :func:`padding_widths`), e.g. a
            window grid's ``grid.padding``.
        mode: One of :data:`PADDING_MODES`. Default ``"minimum"``.
        pad_value: Fill value of ``"constant"`` (default 0) and
            ``"minimum"`` (default each channel's minimum) padding: one
            number or one per channel. Ignored by the other modes.

    Returns:
        ``(X + before_x + after_x, ...[, C])`` array of ``array``'s dtype: a
        new array, or ``array`` itself (no copy) when every width is 0.

    Raises:
        ValueError: bad padding, mode or array rank, or a ``pad_value`` that
            is neither one number nor one per channel.

    Example:
        >>> x = np.array([[[[1.0, 5.0]]]])  # (1, 1, 1, 2)
        >>> pad_volume(x, ((1, 0), (0, 0), (0, 0)), pad_value=(-1.0, 0.0))[:, 0, 0].tolist()
        [[-1.0, 0.0], [1.0, 5.0]]
    """
    data = _spatial_array(array)
    widths = padding_widths(padding)
    if mode not in PADDING_MODES:
        raise ValueError(f"Expected mode in {PADDING_MODES}. Received: mode={mode!r}")
    if all(lo == 0 and hi == 0 for lo, hi in widths):
        return data
    if pad_value is not None and mode in ("constant", "minimum"):
        channels = data.shape[3] if data.ndim == 4 else 1
        if np.ndim(pad_value) > 1 or np.size(pad_value) not in (1, channels):
            raise ValueError(
                f"Expected pad_value as one number or {channels} (one per channel). "
                f"Received: pad_value={pad_value!r}"
            )
    start = [-lo for lo, _ in widths]
    size = [n + lo + hi for n, (lo, hi) in zip(data.shape, widths)]
    return crop_padded(data, start, size, mode=mode, cval=pad_value)


def _spatial_array(array: npt.ArrayLike) -> np.ndarray:
    data = np.asarray(array)
    if data.ndim not in (3, 4):
        raise ValueError(f"Expected a (X, Y, Z[, C]) array. Received: array.shape={data.shape}")
    return data


def _axis_indices(start: int, size: int, length: int, mode: str) -> np.ndarray:
    index = np.arange(start, start + size)
    if mode == "reflect" and length > 1:
        period = 2 * length - 2
        index = np.mod(index, period)
        index = np.where(index >= length, period - index, index)
    elif mode == "symmetric":
        period = 2 * length
        index = np.mod(index, period)
        index = np.where(index >= length, period - 1 - index, index)
    return np.clip(index, 0, length - 1)
