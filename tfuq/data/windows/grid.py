"""Window grids of whole-volume inference: window origins, padding widths, ``[INFERENCE] border``.

A volume of any size is covered by windows of a fixed size. Along each axis
the windows start every ``stride = max(1, floor(window * (1 - overlap)))``
voxels and the last window is moved back so that it ends flush with the
volume, so every voxel is covered and no window reaches outside. An axis
shorter than the window is padded (split evenly before and after) and the
padding is cropped from the result. Overlapping predictions are blended
with a weight map that is largest at the window centre
(:mod:`tfuq.data.windows.blending`).

``[INFERENCE] border`` (NiftyNet's key) goes further: ``b`` voxels are
dropped from each side of every window's output before blending, because a
network's window edges see its own zero padding. So that every voxel still
lies in some window's kept centre, the volume is first padded by ``b`` on
each side and the stride is at most ``window - 2 * b``; a window side on the
padded volume's edge (padding only) keeps its voxels, so no voxel of the
padded array is left without weight.

The geometry is computed once, by :func:`window_grid`; the one window loop
(:func:`tfuq.inference.engine.blend_windows`) is built from the resulting
:class:`WindowGrid`, so the window layout is never restated.

Reference:
    The grid layout follows the spirit of TorchIO's ``GridSampler`` /
    ``GridAggregator`` and MONAI's sliding-window inferer.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from tfuq.data.windows.samplers import axis_starts

__all__ = ["WindowGrid", "check_border", "check_window", "window_grid"]


def check_window(window: int | Sequence[int], rank: int = 3) -> tuple[int, ...]:
    """Return ``window`` as a tuple of ``rank`` positive ints.

    Args:
        window: One int (a cube) or ``rank`` ints; a size of 1 along an axis
            gives 2D (slice-wise) windows.
        rank: Number of spatial axes. Default 3.

    Returns:
        The window size per axis.

    Raises:
        ValueError: Wrong length, non-integer or non-positive sizes.
    """
    if isinstance(window, (int, np.integer)):
        sizes: tuple = (window,) * rank
    elif isinstance(window, (Sequence, np.ndarray)):
        sizes = tuple(window)
    else:
        sizes = ()
    if len(sizes) != rank or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes
    ):
        raise ValueError(
            f"Expected window as one positive int or {rank} positive ints. Received: window={window!r}"
        )
    return tuple(int(s) for s in sizes)


def check_border(border: int | Sequence[int], window: Sequence[int]) -> tuple[int, ...]:
    """``[INFERENCE] border`` per axis, checked against the window.

    Args:
        border: Voxels dropped from each side of every window's output: one
            int (applied to every axis whose window is larger than 1, so a 2D
            window ``(H, W, 1)`` keeps its single slice) or one per axis.
        window: Window size per axis.

    Returns:
        The border per axis.

    Raises:
        ValueError: negative or non-integer values, a wrong count, or a
            border of half the window or more on some axis (no voxel would
            be kept); the message names ``[INFERENCE] border``.

    Example:
        >>> check_border(2, (8, 8, 1))
        (2, 2, 0)
    """
    sizes = tuple(window)
    if isinstance(border, (int, np.integer)) and not isinstance(border, bool):
        values: tuple = tuple(int(border) if w > 1 else 0 for w in sizes)
    elif isinstance(border, (Sequence, np.ndarray)) and len(border) == 1:
        return check_border(border[0], sizes)
    else:
        values = tuple(border) if isinstance(border, (Sequence, np.ndarray)) else ()
    if len(values) != len(sizes) or not all(
        isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 0 for b in values
    ):
        raise ValueError(
            f"Expected [INFERENCE] border as one int >= 0 or {len(sizes)}. Received: border={border!r}"
        )
    if any(2 * b >= w for b, w in zip(values, sizes) if b):
        raise ValueError(
            f"Expected [INFERENCE] border smaller than half the window on every axis. "
            f"Received: border={tuple(int(b) for b in values)}, window={sizes}"
        )
    return tuple(int(b) for b in values)


@dataclasses.dataclass(frozen=True)
class WindowGrid:
    """Where the windows of a whole-volume inference lie (computed by :func:`window_grid`).

    Attributes:
        shape: Spatial shape of the volume before padding, ``(X, Y, Z)``.
        window: Window size per axis.
        overlap: Fraction of a window shared with its neighbour.
        padding: ``((before, after),) * 3`` voxels added: the border on each
            side, plus what an axis needs to reach the window size
            (``pad_volume(volume, grid.padding, mode)``,
            :func:`tfuq.data.windows.pad_volume`).
        starts: Window origins per axis, in padded coordinates.
        border: Voxels of each window's output dropped on each side (except
            at the padded volume's edge), per axis.
    """

    shape: tuple[int, ...]
    window: tuple[int, ...]
    overlap: float
    padding: tuple[tuple[int, int], ...]
    starts: tuple[tuple[int, ...], ...]
    border: tuple[int, ...] = (0, 0, 0)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Spatial shape after padding."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.shape, self.padding))

    @property
    def num_windows(self) -> int:
        """Number of windows."""
        return math.prod(len(s) for s in self.starts)

    @property
    def origins(self) -> np.ndarray:
        """``(num_windows, rank)`` int array of window origins (padded coordinates), C order."""
        return np.array(list(itertools.product(*self.starts)), dtype=np.int64).reshape(-1, len(self.shape))

    def slices(self, origin: Sequence[int]) -> tuple[slice, ...]:
        """Spatial slices of the window at ``origin`` into a padded array."""
        return tuple(slice(int(o), int(o) + w) for o, w in zip(origin, self.window))

    def kept(self, origin: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """The part of the window at ``origin`` whose output is aggregated.

        ``border`` voxels are dropped from each side, except a side lying on
        the padded volume's edge (only padding lies there, so every voxel of
        the padded array keeps a positive weight).

        Returns:
            ``(target, local)``: slices into a padded array and the same
            voxels as slices into the window.
        """
        local = []
        for o, w, b, n in zip(origin, self.window, self.border, self.padded_shape):
            lo = 0 if o == 0 else b
            hi = w if o + w == n else w - b
            local.append(slice(lo, hi))
        target = tuple(slice(int(o) + s.start, int(o) + s.stop) for o, s in zip(origin, local))
        return target, tuple(local)

    @property
    def interior(self) -> tuple[slice, ...]:
        """Slices of the unpadded volume inside a padded array."""
        return tuple(slice(lo, lo + n) for n, (lo, _) in zip(self.shape, self.padding))

    def crop(self, padded: np.ndarray) -> np.ndarray:
        """Remove the padding from an array ``(*padded_shape, ...)``."""
        return padded[self.interior]


def window_grid(
    shape: Sequence[int],
    window: int | Sequence[int],
    overlap: float = 0.5,
    border: int | Sequence[int] = 0,
) -> WindowGrid:
    """Lay windows over a volume of spatial ``shape``.

    Every axis is padded by ``border`` on each side and, when still shorter
    than the window, up to the window size (split evenly); the stride is
    capped at ``window - 2 * border`` (:func:`~tfuq.data.windows.samplers.axis_starts`),
    so every voxel of the volume lies in the kept part of some window.

    Args:
        shape: Spatial shape, e.g. ``(X, Y, Z)``; every size ``>= 1``.
        window: Window size, one int or one per axis (1 for 2D windows).
        overlap: Fraction of a window shared with its neighbour, in
            ``[0, 1)``. Default 0.5.
        border: ``[INFERENCE] border``, see :func:`check_border`. Default 0.

    Returns:
        The :class:`WindowGrid`.

    Raises:
        ValueError: Bad shape, window, overlap or border.

    Example:
        >>> grid = window_grid((5, 9, 1), (4, 4, 1), overlap=0.5)
        >>> grid.starts, grid.padding
        (((0, 1), (0, 2, 4, 5), (0,)), ((0, 0), (0, 0), (0, 0)))
        >>> window_grid((5, 9, 1), (4, 4, 1), border=1).padding
        ((1, 1), (1, 1), (0, 0))
    """
    dims = tuple(shape)
    if len(dims) == 0 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in dims):
        raise ValueError(f"Expected a spatial shape of positive ints. Received: shape={tuple(shape)!r}")
    sizes = check_window(window, len(dims))
    borders = check_border(border, sizes)
    padding = []
    for n, w, b in zip(dims, sizes, borders):
        short = max(0, w - n - 2 * b)
        padding.append((b + short // 2, b + short - short // 2))
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(dims, padding))
    starts = tuple(axis_starts(n, w, overlap, b) for n, w, b in zip(padded, sizes, borders))
    return WindowGrid(tuple(int(n) for n in dims), sizes, float(overlap), tuple(padding), starts, borders)
