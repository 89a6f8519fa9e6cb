"""Where training windows are taken from a volume: uniform, weighted, balanced and grid samplers.

A window is given by its *start*, the voxel index of its first corner; it
covers ``start[a] <= i < start[a] + window[a]`` on each axis ``a``, and its
*centre* voxel is ``start + window // 2``. Every sampler returns an int64
array of starts, shape ``(n, 3)``, in the frame of the unpadded volume.

Volume padding (``[NETWORK] volume_padding_size``) is never materialised:
with padding ``p`` a start may be as low as ``-p`` and a window may end up to
``p`` voxels past the volume; :func:`tfuq.data.windows.padding.crop_padded` extracts
such a window, filling the part outside the volume by
``[NETWORK] volume_padding_mode`` (see :mod:`tfuq.data.windows.padding`).

The samplers (NiftyNet semantics; the code is ours):

- uniform: each start is uniform over all windows lying inside the padded
  volume, independently per axis.
- weighted: the centre voxel is drawn with probability proportional to a
  non-negative map (e.g. the body mask), among the centres whose window lies
  inside the padded volume; padding voxels have weight 0.
- balanced: every distinct value of a label map among those valid centres is
  equally likely as the centre's label; the centre is then uniform among the
  voxels with that label.
- grid: every window of a regular grid covering the volume (for inference
  and validation), see :func:`grid_locations`; its per-axis rule,
  :func:`axis_starts`, also lays out whole-volume inference
  (:func:`tfuq.data.windows.grid.window_grid`).

2D slices and 2.5D slabs need nothing special: a window ``(128, 128, 1)``
samples single slices, ``(128, 128, 8)`` slabs of 8 slices.

Reference:
    Gibson et al., "NiftyNet: a deep-learning platform for medical imaging",
    Computer Methods and Programs in Biomedicine 158, 2018,
    doi:10.1016/j.cmpb.2018.01.025 (uniform, weighted and balanced samplers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tfuq.data.windows.padding import as_padding, as_window

__all__ = [
    "SAMPLERS",
    "axis_starts",
    "balanced_locations",
    "grid_locations",
    "sample_locations",
    "uniform_locations",
    "weighted_locations",
]

#: Random window samplers accepted by :func:`sample_locations`.
SAMPLERS = ("uniform", "weighted", "balanced")


def uniform_locations(
    shape: Sequence[int],
    window: int | Sequence[int],
    n: int,
    rng: np.random.Generator,
    *,
    padding: int | Sequence[int] = 0,
) -> np.ndarray:
    """Draw ``n`` window starts uniformly among the windows inside the padded volume.

    Args:
        shape: Spatial shape ``(X, Y, Z)`` of the unpadded volume.
        window: Window size (see :func:`as_window`).
        n: Number of windows, ``>= 0``.
        rng: Source of randomness.
        padding: Voxels of padding on each side, 1 or 3 values. Default 0.

    Returns:
        ``(n, 3)`` int64 starts, each in ``[-p, X + p - w]`` per axis.

    Raises:
        ValueError: the window is larger than the padded volume, or bad arguments.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> starts = uniform_locations((20, 20, 10), (8, 8, 1), 4, rng)
        >>> starts.shape
        (4, 3)
    """
    lo, hi = _start_range(shape, window, padding)
    n = _check_count(n)
    return np.stack([rng.integers(a, b, size=n, endpoint=True) for a, b in zip(lo, hi)], axis=1).astype(
        np.int64
    )


def weighted_locations(
    weights: npt.ArrayLike,
    window: int | Sequence[int],
    n: int,
    rng: np.random.Generator,
    *,
    padding: int | Sequence[int] = 0,
) -> np.ndarray:
    """Draw ``n`` window starts whose centre voxel has probability proportional to ``weights``.

    Only centres whose window lies inside the padded volume are candidates;
    padding voxels have weight 0 (NiftyNet's weighted sampler).

    Args:
        weights: Non-negative finite map, shape ``(X, Y, Z)``.
        window: Window size.
        n: Number of windows.
        rng: Source of randomness.
        padding: Voxels of padding on each side.

    Returns:
        ``(n, 3)`` int64 starts (``centre - window // 2``).

    Raises:
        ValueError: negative or non-finite weights, or no candidate centre
            with a positive weight.
    """
    w, window, region, lo = _centre_region(weights, window, padding, "weights")
    n = _check_count(n)
    flat = np.asarray(region, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)) or (flat.size and flat.min() < 0):
        raise ValueError("Expected weights >= 0 and finite. Received: negative or non-finite values")
    cdf = np.cumsum(flat)
    if flat.size == 0 or cdf[-1] <= 0:
        raise ValueError(
            "Expected a positive weight at some valid window centre. Received: all weights are 0 "
            f"where a window of size {window} fits (weights.shape={w.shape[:3]})"
        )
    index = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return _starts_from_flat(np.minimum(index, flat.size - 1), region.shape, lo, window)


def balanced_locations(
    labels: npt.ArrayLike,
    window: int | Sequence[int],
    n: int,
    rng: np.random.Generator,
    *,
    padding: int | Sequence[int] = 0,
) -> np.ndarray:
    """Draw ``n`` window starts whose centre label is uniform over the labels present.

    The labels are the distinct values of ``labels`` at the valid centres
    (windows inside the padded volume). Each draw picks one of them with
    equal probability, then a centre uniformly among its voxels.

    Args:
        labels: Label map, shape ``(X, Y, Z)`` (e.g. a mask or a segmentation).
        window: Window size.
        n: Number of windows.
        rng: Source of randomness.
        padding: Voxels of padding on each side.

    Returns:
        ``(n, 3)`` int64 starts.

    Raises:
        ValueError: no valid centre, or bad arguments.
    """
    _, window, region, lo = _centre_region(labels, window, padding, "labels")
    n = _check_count(n)
    flat = np.asarray(region).ravel()
    values, inverse = np.unique(flat, return_inverse=True)
    picked = rng.integers(len(values), size=n)
    index = np.empty(n, dtype=np.int64)
    for label in np.unique(picked):
        where = np.flatnonzero(inverse == label)
        chosen = picked == label
        index[chosen] = where[rng.integers(len(where), size=int(chosen.sum()))]
    return _starts_from_flat(index, region.shape, lo, window)


def axis_starts(size: int, window: int, overlap: float, border: int = 0) -> tuple[int, ...]:
    """Window origins along one axis; the last window ends flush with the axis.

    The stride is ``s = max(1, min(floor(window * (1 - overlap)), window - 2 * border))``:
    the windows overlap by at least the fraction ``overlap`` and, when
    ``border`` voxels are dropped from each side of every window, the kept
    centres still touch or overlap, so ``[border, size - border)`` is covered
    by centres.

    Args:
        size: Axis length, ``>= window`` (pad first otherwise).
        window: Window length along the axis, ``>= 1``.
        overlap: Fraction of the window shared by neighbours, in ``[0, 1)``.
        border: Voxels dropped from each side of a window, ``0 <= 2 * border < window``.
            Default 0.

    Returns:
        Sorted distinct origins ``0, s, 2s, ..., size - window``.

    Raises:
        ValueError: ``size < window``, ``window < 1``, a bad overlap or border.

    Example:
        >>> axis_starts(10, 4, 0.5)
        (0, 2, 4, 6)
        >>> axis_starts(11, 4, 0.5)
        (0, 2, 4, 6, 7)
        >>> axis_starts(11, 4, 0.25, border=1)
        (0, 2, 4, 6, 7)
    """
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(
            f"overlap is the fraction of a window shared with its neighbour. "
            f"Expected 0 <= overlap < 1. Received: overlap={overlap!r}"
        )
    if window < 1 or size < window:
        raise ValueError(
            f"Expected 1 <= window <= size along an axis (pad the volume first). "
            f"Received: size={size}, window={window}"
        )
    if not 0 <= 2 * border < window:
        raise ValueError(f"Expected 0 <= 2 * border < window. Received: border={border}, window={window}")
    stride = max(1, min(math.floor(window * (1.0 - overlap) + 1e-9), window - 2 * border))
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return tuple(starts)


def grid_locations(
    shape: Sequence[int], window: int | Sequence[int], overlap: float | Sequence[float] = 0.5
) -> np.ndarray:
    """All windows of a regular grid covering the volume, the last one flush with the border.

    Along an axis of length ``N`` with window ``w`` and overlap ``o`` the
    starts are :func:`axis_starts` ``(N, w, o)``: ``0, s, 2s, ...`` while
    ``< N - w``, then ``N - w``, with stride ``s = max(1, floor(w * (1 - o)))``;
    neighbours share ``w - s >= min(ceil(w * o), w - 1)`` voxels (more for the
    last pair), every voxel is covered, no window leaves the volume. The
    windows are all combinations of the per-axis starts, in C order (last
    axis fastest).

    Args:
        shape: Spatial shape ``(X, Y, Z)``, each ``>= window`` (pad first).
        window: Window size.
        overlap: Fraction in ``[0, 1)`` shared by neighbours; one value or
            one per axis. Default 0.5.

    Returns:
        ``(K, 3)`` int64 starts, ``K = prod_a (ceil((N_a - w_a) / s_a) + 1)``.

    Raises:
        ValueError: a window larger than the volume or an overlap outside [0, 1).

    Example:
        >>> grid_locations((10, 11, 1), (4, 4, 1), 0.5)[:, 1].tolist()[:5]
        [0, 2, 4, 6, 7]
    """
    window = as_window(window)
    size = _check_shape(shape)
    overlaps = (overlap,) * 3 if isinstance(overlap, (int, float)) else tuple(overlap)
    if len(overlaps) != 3 or not all(0.0 <= float(o) < 1.0 for o in overlaps):
        raise ValueError(f"Expected overlap in [0, 1), one value or 3. Received: overlap={overlap!r}")
    if any(w > length for length, w in zip(size, window)):
        raise ValueError(
            f"Expected a window no larger than the volume (pad it first). "
            f"Received: shape={size}, window={window}"
        )
    axes = [axis_starts(length, w, float(o)) for length, w, o in zip(size, window, overlaps)]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1).astype(np.int64)


def sample_locations(
    method: str,
    shape: Sequence[int],
    window: int | Sequence[int],
    n: int,
    rng: np.random.Generator,
    *,
    sampling_map: npt.ArrayLike | None = None,
    padding: int | Sequence[int] = 0,
) -> np.ndarray:
    """Draw ``n`` window starts with the sampler named ``method`` (one of :data:`SAMPLERS`).

    Raises:
        ValueError: unknown method, a missing or mis-shaped ``sampling_map``
            for ``"weighted"``/``"balanced"``, or the samplers' errors.
    """
    if method == "uniform":
        return uniform_locations(shape, window, n, rng, padding=padding)
    if method not in SAMPLERS:
        raise ValueError(f"Expected method in {SAMPLERS}. Received: method={method!r}")
    if sampling_map is None:
        raise ValueError(f"The {method} sampler needs a sampling_map. Received: sampling_map=None")
    values = np.asarray(sampling_map)
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.shape != tuple(shape):
        raise ValueError(
            f"Expected sampling_map of shape {tuple(shape)} (or with one channel). "
            f"Received: sampling_map.shape={values.shape}"
        )
    sampler = weighted_locations if method == "weighted" else balanced_locations
    return sampler(values, window, n, rng, padding=padding)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    size = tuple(int(s) for s in shape)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"Expected a spatial shape of 3 sizes >= 1. Received: shape={tuple(shape)}")
    return size  # type: ignore[return-value]


def _check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"Expected n as an integer >= 0. Received: n={n!r}")
    return int(n)


def _start_range(
    shape: Sequence[int], window: int | Sequence[int], padding: int | Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    size, window, pad = _check_shape(shape), as_window(window), as_padding(padding)
    if any(w > n + 2 * p for n, w, p in zip(size, window, pad)):
        raise ValueError(
            f"Expected a window no larger than the padded volume. "
            f"Received: shape={size}, padding={pad}, window={window}"
        )
    return tuple(-p for p in pad), tuple(n + p - w for n, w, p in zip(size, window, pad))


def _centre_region(
    values: npt.ArrayLike, window: int | Sequence[int], padding: int | Sequence[int], name: str
) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray, tuple[int, ...]]:
    data = np.asarray(values)
    if data.ndim != 3:
        raise ValueError(f"Expected {name} of shape (X, Y, Z). Received: {name}.shape={data.shape}")
    window = as_window(window)
    lo_start, hi_start = _start_range(data.shape, window, padding)
    lo = tuple(max(0, s + w // 2) for s, w in zip(lo_start, window))
    hi = tuple(min(n - 1, s + w // 2) for s, w, n in zip(hi_start, window, data.shape))
    region = data[tuple(slice(a, b + 1) for a, b in zip(lo, hi))]
    return data, window, region, lo


def _starts_from_flat(
    index: np.ndarray, shape: tuple[int, ...], lo: tuple[int, ...], window: tuple[int, int, int]
) -> np.ndarray:
    centres = np.stack(np.unravel_index(index, shape), axis=1) + np.asarray(lo)
    return (centres - np.asarray(window) // 2).astype(np.int64)
