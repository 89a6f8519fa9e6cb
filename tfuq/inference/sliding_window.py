"""Whole-volume prediction with a window-sized predictor, blending overlaps.

A network trained on windows (patches) is applied to a whole volume by
running it on overlapping windows laid out by
:func:`tfuq.inference.windows.window_grid` and averaging the overlapping
predictions with a weight map that favours window centres
(:func:`tfuq.inference.windows.blending_weights`)::

    out(v) = sum_i w_i(v) f_i(v) / sum_i w_i(v)

over the windows ``i`` covering voxel ``v`` (with ``[INFERENCE] border``
only the windows whose kept centre covers ``v``). The weights are positive
everywhere, so the denominator never vanishes, and the result is exactly
the prediction wherever all windows agree (no seams). The function is pure:
it takes the volume and any callable, so it works with Keras models, exported
signatures or plain NumPy functions alike.

Reference:
    Design as MONAI's ``sliding_window_inference`` (a pure function taking a
    predictor) and TorchIO's grid sampler / aggregator; Gaussian weighting as
    in nnU-Net (Isensee et al. 2021, doi:10.1038/s41592-020-01008-z).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfuq.inference.windows import (
    WindowGrid,
    blending_weights,
    check_window,
    pad_volume,
    window_batches,
    window_grid,
)

__all__ = ["Predictor", "check_predictions", "check_volume", "sliding_window_predict"]

#: A function mapping a batch ``(B, *window, C)`` to ``(B, *window, K)``.
Predictor = Callable[[np.ndarray], Any]


def check_volume(volume: Any, name: str = "volume") -> np.ndarray:
    """Return ``volume`` as a finite floating ``(X, Y, Z, C)`` NumPy array.

    Args:
        volume: Array-like of rank 4 (channels last).
        name: Argument name for messages.

    Returns:
        The array (float32 for integer input; float arrays keep their dtype).

    Raises:
        ValueError: Wrong rank, an empty axis or non-finite values.
    """
    values = np.asarray(volume)
    if values.ndim != 4 or 0 in values.shape:
        raise ValueError(
            f"Expected {name} of shape (X, Y, Z, C) with non-empty axes. "
            f"Received: {name}.shape={values.shape}"
        )
    return _finite_float(values, f"Expected finite values in {name}. Received: NaN or infinite voxels.")


def check_predictions(output: Any, batch: int, window: Sequence[int], name: str = "predictor") -> np.ndarray:
    """Convert a predictor's output to NumPy and check its shape ``(batch, *window, K)``.

    Args:
        output: NumPy array or tensor returned by the predictor.
        batch: Number of windows that were passed in.
        window: Window size per axis.
        name: Name used in messages.

    Returns:
        A floating NumPy array (float32 for integer output).

    Raises:
        ValueError: Wrong shape or non-finite values.
    """
    values = np.asarray(output)
    expected = (batch, *window)
    if values.ndim != len(window) + 2 or tuple(values.shape[:-1]) != expected or values.shape[-1] < 1:
        raise ValueError(
            f"{name} must map a batch (B, *window, C) to (B, *window, K). "
            f"Expected shape ({batch}, {', '.join(map(str, window))}, K). Received: shape {values.shape}"
        )
    return _finite_float(values, f"{name} returned NaN or infinite values.")


def _finite_float(values: np.ndarray, message: str) -> np.ndarray:
    """``values`` as a floating array (float32 for integers); ValueError(message) if not all finite."""
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError(message)
    return values


def _accumulate(
    total: np.ndarray,
    weight_sum: np.ndarray,
    grid: WindowGrid,
    origins: np.ndarray,
    predictions: np.ndarray,
    weights: np.ndarray,
) -> None:
    """Add the kept part of each weighted window prediction into the running sums (in place)."""
    for origin, prediction in zip(origins, predictions):
        target, local = grid.kept(origin)
        total[target] += prediction[local] * weights[local][..., np.newaxis]
        weight_sum[target] += weights[local]


def sliding_window_predict(
    volume: Any,
    predictor: Predictor,
    window: int | Sequence[int],
    *,
    overlap: float = 0.5,
    blending: str = "gaussian",
    border: int | Sequence[int] = 0,
    batch_size: int = 4,
    pad_mode: str = "constant",
    pad_value: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Apply a window predictor to a whole volume and blend the overlapping outputs.

    Args:
        volume: Array ``(X, Y, Z, C)`` (channels last), any spatial size,
            including smaller than the window (padded, then cropped back).
        predictor: Callable mapping ``(B, *window, C)`` NumPy float arrays to
            ``(B, *window, K)`` (NumPy array or tensor), e.g.
            ``lambda x: model(x, training=False)``.
        window: Window size, one int or three; a size of 1 along one axis
            runs 2D windows (the predictor still receives 5D batches).
        overlap: Fraction of a window shared with its neighbour, in
            ``[0, 1)``. Default 0.5.
        blending: ``"constant"``, ``"gaussian"`` or ``"hann"`` (see
            :func:`tfuq.inference.windows.blending_weights`). Default
            ``"gaussian"``.
        border: Voxels dropped from each side of every window's output
            before blending (``[INFERENCE] border``; one int, or one per
            axis), see :func:`tfuq.inference.windows.window_grid`. Default 0.
        batch_size: Windows per predictor call, ``>= 1``. Default 4.
        pad_mode: ``numpy.pad`` mode for volumes smaller than the window:
            ``"constant"``, ``"edge"``, ``"reflect"`` or ``"symmetric"``.
            Default ``"constant"``.
        pad_value: Fill value of constant padding (one number or one per
            channel). Default None: each channel's minimum.

    Returns:
        The blended prediction, shape ``(X, Y, Z, K)``, in the predictor's
        float dtype promoted to at least float32.

    Raises:
        ValueError: Bad volume, window, overlap, blending, border, batch size
            or pad settings, or a predictor output of the wrong shape or with
            non-finite values.

    Example:
        >>> vol = np.random.rand(37, 30, 11, 1).astype("float32")
        >>> out = sliding_window_predict(vol, lambda x: 2 * x + 1, (16, 16, 8))
        >>> bool(np.allclose(out, 2 * vol + 1, atol=1e-5))
        True
    """
    values = check_volume(volume)
    grid = window_grid(values.shape[:3], check_window(window), overlap, border)
    weights = blending_weights(grid.window, blending)
    padded = pad_volume(values, grid, pad_mode=pad_mode, pad_value=pad_value)
    weight_sum = np.zeros(grid.padded_shape, dtype=np.float64)
    total: np.ndarray | None = None
    for origins, batch in window_batches(padded, grid, batch_size):
        predictions = check_predictions(predictor(batch), len(batch), grid.window)
        if total is None:
            dtype = np.result_type(predictions.dtype, np.float32)
            total = np.zeros((*grid.padded_shape, predictions.shape[-1]), dtype=dtype)
        elif predictions.shape[-1] != total.shape[-1]:
            raise ValueError(
                f"predictor must return the same number of channels for every batch. "
                f"Expected {total.shape[-1]}. Received: {predictions.shape[-1]}"
            )
        _accumulate(total, weight_sum, grid, origins, predictions, weights.astype(total.dtype))
    if total is None:  # unreachable: a grid has at least one window
        raise ValueError("No window was predicted.")
    out = grid.crop(total) / grid.crop(weight_sum)[..., np.newaxis]
    return out.astype(total.dtype, copy=False)
