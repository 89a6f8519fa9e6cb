"""Blending weights: how overlapping window predictions are weighted where they are merged.

Overlapping predictions are blended with a weight map that is largest at
the window centre, which hides the seams of predictions that are less
accurate near window borders.

Reference:
    Isensee et al., "nnU-Net: a self-configuring method for deep
    learning-based biomedical image segmentation", Nature Methods 18, 2021,
    doi:10.1038/s41592-020-01008-z (Gaussian importance weighting with
    sigma = window / 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tfuq.data.windows.grid import check_window

__all__ = ["BLENDING_MODES", "DEFAULT_SIGMA_SCALE", "DEFAULT_WEIGHT_FLOOR", "blending_weights"]

#: Ways to weight a window's voxels when overlapping predictions are blended.
BLENDING_MODES = ("constant", "gaussian", "hann")
#: Gaussian sigma as a fraction of the window size per axis (nnU-Net, MONAI).
DEFAULT_SIGMA_SCALE = 0.125
#: Smallest blending weight, relative to the peak weight of 1.
DEFAULT_WEIGHT_FLOOR = 1e-3


def _axis_profile(size: int, mode: str, sigma_scale: float) -> np.ndarray:
    """1D weight profile of one window axis, peak 1 at the centre (float64)."""
    if mode == "constant" or size == 1:
        return np.ones(size)
    if mode == "gaussian":
        centre = (size - 1) / 2.0
        sigma = size * sigma_scale
        squared = ((np.arange(size) - centre) / sigma) ** 2
        # peak 1 on every axis (the two middle voxels of an even axis sit half a voxel off the
        # centre): a narrow sigma would otherwise underflow to 0 everywhere and the map to 0 / 0
        return np.exp(-0.5 * (squared - squared.min()))
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
