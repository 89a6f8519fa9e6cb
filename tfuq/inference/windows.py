"""Window geometry for whole-volume inference: padding, window origins, blending weights.

A volume of any size is covered by windows of a fixed size. Along each axis
the windows start every ``stride = max(1, floor(window * (1 - overlap)))``
voxels and the last window is moved back so that it ends flush with the
volume, so every voxel is covered and no window reaches outside. An axis
shorter than the window is padded (split evenly before and after) and the
padding is cropped from the result. Overlapping predictions are blended
with a weight map that is largest at the window centre, which hides the
seams of predictions that are less accurate near window borders.

The geometry is computed once, by :func:`window_grid`; the extraction loop
(:func:`window_batches`) and the blending aggregators are built from the
resulting :class:`WindowGrid`, so the window layout is never restated.

Reference:
    Isensee et al., "nnU-Net: a self-configuring method for deep
    learning-based biomedical image segmentation", Nature Methods 18, 2021,
    doi:10.1038/s41592-020-01008-z (Gaussian importance weighting with
    sigma = window / 8). The grid layout follows the spirit of TorchIO's
    ``GridSampler`` / ``GridAggregator`` and MONAI's sliding-window inferer.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLENDING_MODES",
    "DEFAULT_SIGMA_SCALE",
    "DEFAULT_WEIGHT_FLOOR",
    "PAD_MODES",
    "WindowGrid",
    "axis_starts",
    "blending_weights",
    "check_window",
    "pad_volume",
    "window_batches",
    "window_grid",
]

#: Ways to weight a window's voxels when overlapping predictions are blended.
BLENDING_MODES = ("constant", "gaussian", "hann")
#: Gaussian sigma as a fraction of the window size per axis (nnU-Net, MONAI).
DEFAULT_SIGMA_SCALE = 0.125
#: Smallest blending weight, relative to the peak weight of 1.
DEFAULT_WEIGHT_FLOOR = 1e-3
#: ``numpy.pad`` modes accepted to pad a volume smaller than the window.
PAD_MODES = ("constant", "edge", "reflect", "symmetric")


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


def _check_overlap(overlap: float) -> float:
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(
            f"overlap is the fraction of a window shared with its neighbour. "
            f"Expected 0 <= overlap < 1. Received: overlap={overlap!r}"
        )
    return float(overlap)


def axis_starts(size: int, window: int, overlap: float) -> tuple[int, ...]:
    """Window origins along one axis; the last window ends flush with the axis.

    Args:
        size: Axis length, ``>= window`` (pad first otherwise).
        window: Window length along the axis, ``>= 1``.
        overlap: Fraction of the window shared by neighbours, in ``[0, 1)``.

    Returns:
        Sorted distinct origins ``0, stride, 2*stride, ..., size - window``
        with ``stride = max(1, floor(window * (1 - overlap)))``.

    Raises:
        ValueError: ``size < window``, ``window < 1`` or a bad overlap.

    Example:
        >>> axis_starts(10, 4, 0.5)
        (0, 2, 4, 6)
        >>> axis_starts(11, 4, 0.5)
        (0, 2, 4, 6, 7)
    """
    overlap = _check_overlap(overlap)
    if window < 1 or size < window:
        raise ValueError(
            f"Expected 1 <= window <= size along an axis (pad the volume first). "
            f"Received: size={size}, window={window}"
        )
    stride = max(1, math.floor(window * (1.0 - overlap) + 1e-9))
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return tuple(starts)


@dataclasses.dataclass(frozen=True)
class WindowGrid:
    """Where the windows of a whole-volume inference lie (computed by :func:`window_grid`).

    Attributes:
        shape: Spatial shape of the volume before padding, ``(X, Y, Z)``.
        window: Window size per axis.
        overlap: Fraction of a window shared with its neighbour.
        padding: ``((before, after),) * 3`` voxels added to reach the window size.
        starts: Window origins per axis, in padded coordinates.
    """

    shape: tuple[int, ...]
    window: tuple[int, ...]
    overlap: float
    padding: tuple[tuple[int, int], ...]
    starts: tuple[tuple[int, ...], ...]

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

    @property
    def interior(self) -> tuple[slice, ...]:
        """Slices of the unpadded volume inside a padded array."""
        return tuple(slice(lo, lo + n) for n, (lo, _) in zip(self.shape, self.padding))

    def crop(self, padded: np.ndarray) -> np.ndarray:
        """Remove the padding from an array ``(*padded_shape, ...)``."""
        return padded[self.interior]


def window_grid(shape: Sequence[int], window: int | Sequence[int], overlap: float = 0.5) -> WindowGrid:
    """Lay windows over a volume of spatial ``shape``.

    Args:
        shape: Spatial shape, e.g. ``(X, Y, Z)``; every size ``>= 1``.
        window: Window size, one int or one per axis (1 for 2D windows).
        overlap: Fraction of a window shared with its neighbour, in
            ``[0, 1)``. Default 0.5.

    Returns:
        The :class:`WindowGrid`. Axes shorter than the window are padded.

    Raises:
        ValueError: Bad shape, window or overlap.

    Example:
        >>> grid = window_grid((5, 9, 1), (4, 4, 1), overlap=0.5)
        >>> grid.starts, grid.padding
        (((0, 1), (0, 2, 4, 5), (0,)), ((0, 0), (0, 0), (0, 0)))
    """
    dims = tuple(shape)
    if len(dims) == 0 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in dims):
        raise ValueError(f"Expected a spatial shape of positive ints. Received: shape={tuple(shape)!r}")
    sizes = check_window(window, len(dims))
    overlap = _check_overlap(overlap)
    padding = tuple(((w - n) // 2, (w - n) - (w - n) // 2) if n < w else (0, 0) for n, w in zip(dims, sizes))
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(dims, padding))
    starts = tuple(axis_starts(n, w, overlap) for n, w in zip(padded, sizes))
    return WindowGrid(tuple(int(n) for n in dims), sizes, overlap, padding, starts)


def pad_volume(
    volume: np.ndarray,
    grid: WindowGrid,
    *,
    pad_mode: str = "constant",
    pad_value: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Pad a ``(*shape, C)`` volume to ``grid.padded_shape`` (no copy without padding).

    Args:
        volume: Array ``(X, Y, Z, C)`` with ``(X, Y, Z) == grid.shape``.
        grid: The window grid.
        pad_mode: One of :data:`PAD_MODES`. Default ``"constant"``.
        pad_value: Fill value of ``"constant"`` padding: a number or one per
            channel. Default None: each channel's minimum (the background of
            MR and CT volumes).

    Returns:
        The padded array ``(*grid.padded_shape, C)``.

    Raises:
        ValueError: Shape mismatch, unknown mode or a wrong number of values.
    """
    if tuple(volume.shape[:-1]) != grid.shape:
        raise ValueError(
            f"Expected a volume of spatial shape {grid.shape} plus channels. Received: shape {volume.shape}"
        )
    if pad_mode not in PAD_MODES:
        raise ValueError(f"Expected pad_mode to be one of {PAD_MODES}. Received: pad_mode={pad_mode!r}")
    if all(lo == 0 and hi == 0 for lo, hi in grid.padding):
        return volume
    widths = (*grid.padding, (0, 0))
    if pad_mode != "constant":
        return np.pad(volume, widths, mode=pad_mode)
    channels = volume.shape[-1]
    if pad_value is None:
        values = volume.reshape(-1, channels).min(axis=0)
    else:
        if np.ndim(pad_value) > 1 or np.size(pad_value) not in (1, channels):
            raise ValueError(
                f"Expected pad_value as one number or {channels} (one per channel). "
                f"Received: pad_value={pad_value!r}"
            )
        values = np.broadcast_to(np.asarray(pad_value, dtype=volume.dtype).ravel(), (channels,))
    padded = np.empty((*grid.padded_shape, channels), dtype=volume.dtype)
    padded[...] = values
    padded[grid.interior] = volume
    return padded


def window_batches(
    padded: np.ndarray, grid: WindowGrid, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(origins, windows)`` batches over every window of the grid.

    Args:
        padded: Array ``(*grid.padded_shape, C)`` from :func:`pad_volume`.
        grid: The window grid.
        batch_size: Windows per batch, ``>= 1``; the last batch may be smaller.

    Yields:
        ``origins`` of shape ``(B, rank)`` and ``windows`` of shape
        ``(B, *grid.window, C)`` (copies).

    Raises:
        ValueError: ``batch_size < 1``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"Expected batch_size to be an int >= 1. Received: batch_size={batch_size!r}")
    origins = grid.origins
    for first in range(0, len(origins), batch_size):
        chunk = origins[first : first + batch_size]
        yield chunk, np.stack([padded[grid.slices(o)] for o in chunk])


def _axis_profile(size: int, mode: str, sigma_scale: float) -> np.ndarray:
    """1D weight profile of one window axis, peak 1 at the centre (float64)."""
    if mode == "constant" or size == 1:
        return np.ones(size)
    if mode == "gaussian":
        centre = (size - 1) / 2.0
        sigma = size * sigma_scale
        return np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
    # Hann window of size + 2 without its zero end points: positive everywhere.
    profile = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(1, size + 1) / (size + 1))
    return profile / profile.max()


def blending_weights(
    window: int | Sequence[int],
    mode: str = "gaussian",
    *,
    sigma_scale: float = DEFAULT_SIGMA_SCALE,
    floor: float = DEFAULT_WEIGHT_FLOOR,
) -> npt.NDArray[np.float64]:
    """Separable weight map of a window, peak 1, floored so it is positive everywhere.

    Args:
        window: Window size, one int or one per axis.
        mode: ``"constant"`` (plain averaging), ``"gaussian"`` (sigma =
            ``sigma_scale * window`` per axis, as nnU-Net and MONAI) or
            ``"hann"`` (raised cosine). Default ``"gaussian"``.
        sigma_scale: Gaussian sigma as a fraction of the window, ``> 0``.
            Default 0.125.
        floor: Smallest weight, in ``(0, 1]``. Default 1e-3: corners of a
            Gaussian window (about ``exp(-8)`` per axis) would otherwise make
            voxels covered only by window corners depend on tiny weights.

    Returns:
        float64 array of shape ``window`` with values in ``[floor, 1]``.

    Raises:
        ValueError: Unknown mode, bad window, sigma_scale or floor.

    Example:
        >>> w = blending_weights((8, 8, 1), "hann")
        >>> w.shape, bool(w.min() > 0)
        ((8, 8, 1), True)
    """
    sizes = check_window(window, len(window) if isinstance(window, Sequence) else 3)
    if mode not in BLENDING_MODES:
        raise ValueError(f"Expected blending mode in {BLENDING_MODES}. Received: mode={mode!r}")
    if not (isinstance(sigma_scale, (int, float)) and sigma_scale > 0):
        raise ValueError(f"Expected sigma_scale > 0. Received: sigma_scale={sigma_scale!r}")
    if not (isinstance(floor, (int, float)) and 0 < floor <= 1):
        raise ValueError(f"Expected 0 < floor <= 1. Received: floor={floor!r}")
    weights = np.ones(sizes)
    for axis, size in enumerate(sizes):
        shape = [1] * len(sizes)
        shape[axis] = size
        weights = weights * _axis_profile(size, mode, float(sigma_scale)).reshape(shape)
    return np.maximum(weights / weights.max(), float(floor))
