"""The whole-volume window loop: pad -> windows -> batched predictor -> blend -> crop.

Every whole-volume prediction in tfuq goes through :func:`blend_windows`:
local MC inference (:func:`tfuq.inference.mc.mc_predict_volume`), deep
ensembles (:func:`tfuq.inference.prediction.predict_subject`), served
inference (:func:`tfuq.export.remote_inference.serve_volume`) and plain
deterministic predictors. Only the *window predictor* differs: a callable
taking the network inputs of a group of windows and returning per-window
maps. The loop lays the windows out (:func:`tfuq.data.windows.window_grid`),
pads the volume, cuts the windows -- and for MultiRes networks the coarser
levels around each window (:func:`tfuq.data.windows.multires_windows`) --,
calls the predictor, and blends what it returns over the overlaps:

- the three moment maps ``mean``, ``epistemic_var``, ``aleatoric_var``
  (returned together or not at all) are blended as the *mixture* of the
  covering windows' predictive distributions (law of total variance); so
  are the moments of a derived quantity ``q``, returned as ``q_mean``,
  ``q_epistemic_var``, ``q_aleatoric_var`` (:func:`moment_prefixes`);
- every other map (``alpha``, ``beta``, plain predictions with K channels)
  is blended as the weighted mean.

Mathematical details:
    Window ``i`` covering voxel ``v`` with blending weight ``w_i(v)`` (only
    the windows whose kept centre covers ``v`` with ``[INFERENCE] border``)
    gives mean ``m_i``, epistemic ``e_i`` and aleatoric ``a_i``; with
    ``u_i = w_i / sum_j w_j``::

        mean          = sum_i u_i m_i
        epistemic_var = sum_i u_i e_i + sum_i u_i (m_i - mean)^2
        aleatoric_var = sum_i u_i a_i
        total_var     = epistemic_var + aleatoric_var
        other         = sum_i u_i other_i

    The moments are those of the mixture ``sum_i u_i p_i`` (every MC pass of
    window ``i`` weighs ``u_i / T``). Averaging the variances alone would
    report a confident voxel where two windows disagree; the variance of the
    blended estimator (``sum_i u_i^2 e_i``) would shrink the uncertainty
    where windows overlap and draw the grid into the maps. The mixture
    moments reduce to the weighted average of the window variances where the
    windows agree (no seams) and count disagreement between windows as
    epistemic. Windows are merged with Chan et al.'s parallel update
    (:func:`tfuq.inference.streaming.merge_states`, the blending weight as
    the sample count), which never forms raw second moments.

Reference:
    Gal & Ghahramani, ICML 2016, arXiv:1506.02142; Barbano, Arridge, Jin,
    Tanno et al., "Uncertainty quantification in medical image synthesis",
    survey chapter, eq. (13)-(14). Gaussian blending as nnU-Net (Isensee et
    al. 2021, doi:10.1038/s41592-020-01008-z); one loop taking a predictor as
    MONAI's ``sliding_window_inference``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tfuq.checks import check_int
from tfuq.data.windows import (
    WindowGrid,
    blending_weights,
    check_window,
    multires_windows,
    pad_volume,
    window_grid,
)
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR, MEAN, TOTAL_VAR
from tfuq.inference.streaming import MomentState, merge_states

__all__ = [
    "MOMENT_KEYS",
    "WindowPredictor",
    "blend_windows",
    "check_predictions",
    "check_volume",
    "count_windows",
    "merge_window_moments",
    "moment_prefixes",
]

#: A window predictor: the inputs of ``B`` windows (one array ``(B, *window, C)``, or one per
#: MultiRes level, finest first) -> maps ``(B, *window)`` or ``(B, *window, K)`` by name.
WindowPredictor = Callable[[list[np.ndarray]], Mapping[str, Any]]
#: Maps blended as mixture moments (returned together or not at all).
MOMENT_KEYS = (MEAN, EPISTEMIC_VAR, ALEATORIC_VAR)


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


def count_windows(
    shape: Sequence[int], window: int | Sequence[int], overlap: float, border: int | Sequence[int] = 0
) -> int:
    """Number of windows :func:`blend_windows` predicts on a volume of spatial ``shape``."""
    return window_grid(tuple(shape), check_window(window), overlap, border).num_windows


def _window_inputs(
    values: np.ndarray,
    padded: np.ndarray,
    grid: WindowGrid,
    origins: np.ndarray,
    factors: tuple[int, ...],
    padding_mode: str,
    minima: np.ndarray,
) -> list[np.ndarray]:
    """Network inputs of a group of windows: ``[windows]``, or one array per MultiRes level."""
    if not factors:
        return [np.stack([padded[grid.slices(o)] for o in origins])]
    before = np.array([lo for lo, _ in grid.padding])
    per_window = [
        multires_windows(values, o - before, grid.window, factors, mode=padding_mode, cval=minima)
        for o in origins
    ]
    return [np.stack([w[k] for w in per_window]).astype(np.float32) for k in range(len(factors))]


def moment_prefixes(keys: Any) -> list[str]:
    """Prefixes ``p`` of the moment sets among ``keys``: ``p + "mean"`` or ``p + "*_var"`` present.

    ``""`` is the predicted image itself; a derived quantity ``q`` returns ``q_mean``,
    ``q_epistemic_var``, ``q_aleatoric_var``.

    Example:
        >>> moment_prefixes(["mean", "epistemic_var", "aleatoric_var", "mu_mean", "alpha"])
        ['', 'mu_']
    """
    found = []
    for key in keys:
        for moment in MOMENT_KEYS:
            prefix = key[: -len(moment)]
            if key.endswith(moment) and prefix in ("", prefix.rstrip("_") + "_") and prefix not in found:
                found.append(prefix)
    return sorted(found)


def _checked_maps(output: Mapping[str, Any], batch: int, window: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The predictor's maps as finite float arrays ``(batch, *window[, K])``; ValueError otherwise."""
    if not isinstance(output, Mapping) or not output:
        raise ValueError(
            f"A window predictor must return a non-empty dict of maps. Received: {type(output).__name__}"
        )
    for prefix in moment_prefixes(output):
        if not all(f"{prefix}{key}" in output for key in MOMENT_KEYS):
            raise ValueError(
                f"A window predictor returns the moment maps {tuple(prefix + k for k in MOMENT_KEYS)} "
                f"together. Received: {sorted(output)}"
            )
    maps = {}
    for key, value in output.items():
        array = np.asarray(value)
        if array.shape[: len(window) + 1] != (batch, *window) or array.ndim > len(window) + 2:
            raise ValueError(
                f"predictor map {key!r} must have shape ({batch}, {', '.join(map(str, window))}[, K]). "
                f"Received: shape {array.shape}"
            )
        maps[key] = _finite_float(array, f"predictor returned NaN or infinite values in {key!r}.")
    return maps


def merge_window_moments(
    acc: MomentState,
    grid: WindowGrid,
    origin: Sequence[int],
    weights: np.ndarray,
    mean: np.ndarray,
    epistemic_var: np.ndarray,
    aleatoric_var: np.ndarray,
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Merge the kept part of one window's moments into a whole-volume state (in place).

    The window's mixture enters with its blending weight as the sample count
    (Chan et al.'s update, :func:`tfuq.inference.merge_states`), so after
    every window the state holds the mixture moments of the covering windows
    described in :mod:`tfuq.inference.mc`; only
    :meth:`tfuq.data.windows.WindowGrid.kept` voxels are merged
    (``[INFERENCE] border``).

    Args:
        acc: State of NumPy arrays ``(*grid.padded_shape)``; ``count`` holds
            the weight sum per voxel. Updated in place.
        grid: The window grid.
        origin: The window's origin (padded coordinates).
        weights: Blending weights of shape ``grid.window``.
        mean: The window's mean map, shape ``grid.window``.
        epistemic_var: The window's epistemic variance map, same shape.
        aleatoric_var: The window's aleatoric variance map, same shape.

    Returns:
        ``(target, local)`` of :meth:`tfuq.data.windows.WindowGrid.kept`, to
        blend other maps of the window the same way.
    """
    target, local = grid.kept(origin)
    w = weights[local]
    part = MomentState(*(field[target] for field in acc))
    window_state = MomentState(w, mean[local], w * epistemic_var[local], aleatoric_var[local])
    for field, value in zip(acc, merge_states(part, window_state)):
        field[target] = np.asarray(value)
    return target, local


def blend_windows(
    volume: Any,
    predictor: WindowPredictor,
    window: int | Sequence[int],
    *,
    overlap: float = 0.5,
    blending: str = "gaussian",
    border: int | Sequence[int] = 0,
    windows_per_call: int = 4,
    factors: Sequence[int] = (),
    padding_mode: str = "minimum",
    pad_value: float | Sequence[float] | None = None,
    dtype: Any = np.float32,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run a window predictor over a whole volume and blend its maps (see the module docstring).

    Args:
        volume: Inputs ``(X, Y, Z, C)`` (channels last), any spatial size,
            including smaller than the window (padded, then cropped back);
            the predictor gets windows of its float dtype (float32 for
            integers).
        predictor: :data:`WindowPredictor`. It returns the same keys for
            every call; ``mean``, ``epistemic_var`` and ``aleatoric_var``
            together are blended as mixture moments, other keys as weighted
            means.
        window: Window size, one int or three; a size of 1 along one axis
            gives 2D windows (the predictor still receives 5D batches).
        overlap: Fraction of a window shared with its neighbour, ``[0, 1)``.
        blending: ``"constant"``, ``"gaussian"`` or ``"hann"``
            (:func:`tfuq.data.windows.blending_weights`).
        border: ``[INFERENCE] border``: voxels of each window's maps dropped
            on each side before blending, one int or one per axis
            (:func:`tfuq.data.windows.window_grid`).
        windows_per_call: Windows per predictor call, ``>= 1``.
        factors: MultiRes downsampling factors, finest first; ``()`` for one
            input. With factors, every call gets one array per level, cut
            around each window from the unpadded volume.
        padding_mode: How inputs are padded outside the volume:
            ``"minimum"`` / ``"constant"`` (``pad_value``, default the channel
            minima, as at training), ``"edge"``, ``"reflect"`` or
            ``"symmetric"``.
        pad_value: Fill of constant padding (one number or one per channel);
            None: channel minima.
        dtype: Output float dtype and that of the moment accumulators
            (weighted means and the weight sum accumulate in float64).
            Default float32.
        progress: Called with the number of windows finished after each call.

    Returns:
        dict of ``(X, Y, Z)`` (or ``(X, Y, Z, K)``) arrays of ``dtype``: the
        predictor's keys, plus ``total_var`` (``q_total_var``) for every
        moment set.

    Raises:
        ValueError: Bad volume, window, overlap, blending, border, padding or
            count, or a predictor answer of the wrong form, shape or with
            non-finite values.

    Example:
        >>> vol = np.random.rand(37, 30, 11, 1).astype("float32")
        >>> out = blend_windows(vol, lambda x: {"y": 2 * x[0] + 1}, (16, 16, 8))
        >>> bool(np.allclose(out["y"], 2 * vol + 1, atol=1e-5))
        True
    """
    values = check_volume(volume)
    windows_per_call = check_int(windows_per_call, "windows_per_call", minimum=1)
    factors = tuple(int(f) for f in factors)
    grid = window_grid(values.shape[:3], check_window(window), overlap, border)
    weights = blending_weights(grid.window, blending).astype(dtype)
    constant = padding_mode in ("minimum", "constant")  # both fill pad_value, default the channel minima
    padded = pad_volume(values, grid.padding, "minimum" if constant else padding_mode, pad_value=pad_value)
    minima = values.reshape(-1, values.shape[-1]).min(axis=0)
    weight_sum = np.zeros(grid.padded_shape, np.float64)
    acc: dict[str, MomentState] = {}
    sums: dict[str, np.ndarray] = {}
    keys: set[str] | None = None
    moments: set[str] = set()
    origins_all = grid.origins
    for first in range(0, len(origins_all), int(windows_per_call)):
        origins = origins_all[first : first + int(windows_per_call)]
        inputs = _window_inputs(values, padded, grid, origins, factors, padding_mode, minima)
        maps = _checked_maps(predictor(inputs), len(origins), grid.window)
        if keys is None:
            keys = set(maps)
            for prefix in moment_prefixes(maps):
                acc[prefix] = MomentState(*(np.zeros(grid.padded_shape, dtype) for _ in range(4)))
            moments = {f"{prefix}{key}" for prefix in acc for key in MOMENT_KEYS}
        elif set(maps) != keys:
            raise ValueError(
                f"predictor must return the same maps every call. Expected {sorted(keys)}. "
                f"Received: {sorted(maps)}"
            )
        for k, origin in enumerate(origins):
            for prefix, state in acc.items():
                merge_window_moments(
                    state,
                    grid,
                    origin,
                    weights,
                    *(maps[prefix + key][k].astype(dtype) for key in MOMENT_KEYS),
                )
            target, local = grid.kept(origin)
            w = weights[local].astype(np.float64)
            weight_sum[target] += w
            for key, value in maps.items():
                if key in moments:
                    continue
                extra = value.shape[len(grid.window) + 1 :]
                total = sums.setdefault(key, np.zeros((*grid.padded_shape, *extra), np.float64))
                total[target] += value[k][local] * w.reshape(w.shape + (1,) * len(extra))
        if progress is not None:
            progress(len(origins))
    count = grid.crop(weight_sum)
    out: dict[str, np.ndarray] = {}
    for prefix, state in acc.items():
        epistemic = grid.crop(state.m2) / grid.crop(state.count)
        aleatoric = np.ascontiguousarray(grid.crop(state.aleatoric))
        out[prefix + MEAN] = np.ascontiguousarray(grid.crop(state.mean))
        out[prefix + EPISTEMIC_VAR] = epistemic
        out[prefix + ALEATORIC_VAR] = aleatoric
        out[prefix + TOTAL_VAR] = epistemic + aleatoric
    for key, total in sums.items():
        cropped = grid.crop(total)
        blended = cropped / count.reshape(count.shape + (1,) * (cropped.ndim - count.ndim))
        out[key] = blended.astype(dtype, copy=False)
    return out
