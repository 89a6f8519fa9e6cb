"""Scores of the predictive distribution of selected voxels, before and after recalibration.

NLL, the calibration curve with its RMS error and miscalibration area, the
coverage of central intervals and sharpness, computed from the head's
parameters (:mod:`tfuq.distributions` channel layout) of the voxels inside a
mask. A fitted recalibrator gives the same scores after recalibration:

* :class:`~tfuq.calibration.IsotonicRecalibrator`: PIT values ``R(F(y))``,
  intervals ``F^-1(R^-1(p))``, sharpness from the Gaussian-equivalent std
  of the recalibrated 68 % interval (``effective_std``).
* :class:`~tfuq.calibration.SigmaScaling`: every scale times s (PIT values,
  intervals and NLL recomputed from the scaled parameters).

When only mean and std maps are at hand (the NIfTI outputs of ``tfuq
infer``), :func:`gaussian_params` turns them into the head channels of the
moment-matched normal predictive distribution.

Reference:
    Kuleshov, Fenner & Ermon, "Accurate uncertainties for deep learning using
    calibrated regression", ICML 2018, arXiv:1807.00263.
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis"
    (calibration plot and its RMS error before and after recalibration).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfuq.calibration import (
    CENTRAL_COVERAGES,
    IsotonicRecalibrator,
    SigmaScaling,
    calibration_curve,
    central_interval,
    miscalibration_area,
    nll,
    pit_values,
    rms_calibration_error,
    sharpness,
)
from tfuq.distributions import family as fam

__all__ = ["coverage_key", "gaussian_params", "interval_coverage", "predictive_scores", "select_params"]


def coverage_key(coverage: float) -> str:
    """Metric name of a central interval's coverage, e.g. 0.9 -> ``"coverage_90"``."""
    percent = round(100.0 * float(coverage), 6)
    text = f"{percent:g}".replace(".", "_")
    return f"coverage_{text}"


def gaussian_params(mean: Any, std: Any) -> tf.Tensor:
    """Head channels ``(*s, 2)`` of ``N(mean, std^2)`` per voxel (float64).

    Args:
        mean: Predictive mean map.
        std: Predictive (total) std map, same shape, >= 0; values below
            ``2 * SCALE_EPS`` are raised to it (a head never predicts less).

    Returns:
        float64 tensor of unconstrained ``"normal"`` channels.

    Raises:
        ValueError: shapes differ or std is negative.
    """
    mu = np.asarray(mean, dtype=np.float64)
    sd = np.asarray(std, dtype=np.float64)
    if mu.shape != sd.shape:
        raise ValueError(f"mean and std must have one shape. Received: {mu.shape} and {sd.shape}")
    if sd.size and sd.min() < 0:
        raise ValueError(f"std must be >= 0. Received: min={sd.min()!r}")
    return fam.unconstrain("normal", mu, np.maximum(sd, 2.0 * fam.SCALE_EPS))


def select_params(params: Any, selector: np.ndarray, *, mixture: bool = False) -> tf.Tensor:
    """Head channels of the selected voxels: ``(n, P)``, or ``(T, n, P)`` with ``mixture``.

    Args:
        params: ``(*s, P)`` or, with ``mixture=True``, ``(T, *s, P)``.
        selector: Boolean array of shape ``s``.
        mixture: Whether axis 0 of ``params`` holds MC samples.

    Returns:
        Tensor of the selected channels.

    Raises:
        ValueError: the spatial shape of ``params`` is not ``selector.shape``.
    """
    array = np.asarray(params)
    spatial = array.shape[1:-1] if mixture else array.shape[:-1]
    if spatial != selector.shape:
        layout = "(T, *s, P)" if mixture else "(*s, P)"
        raise ValueError(
            f"params must have the layout {layout} with s = {selector.shape}. Received: shape {array.shape}"
        )
    return tf.convert_to_tensor(array[:, selector] if mixture else array[selector])


def interval_coverage(lower: Any, upper: Any, y: Any) -> float:
    """Fraction of ``y`` inside ``[lower, upper]`` (infinite bounds allowed)."""
    lo, hi, obs = (np.asarray(v, dtype=np.float64) for v in (lower, upper, y))
    return float(np.mean((lo <= obs) & (obs <= hi)))


def _std_of(family: str, params: tf.Tensor, mixture: bool) -> np.ndarray:
    if not mixture:
        return fam.stddev(family, params).numpy()
    means = fam.mean(family, params).numpy()
    variances = fam.variance(family, params).numpy()
    return np.sqrt(np.var(means, axis=0) + np.mean(variances, axis=0))


def _scores(
    family: str,
    params: tf.Tensor,
    y: np.ndarray,
    *,
    mixture: bool,
    coverages: tuple[float, ...],
    num_bins: int,
    with_nll: bool = True,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    pit = pit_values(family, params, y, mixture=mixture).numpy()
    out = {
        "calibration_rms_error": rms_calibration_error(pit, num_bins),
        "miscalibration_area": miscalibration_area(pit, num_bins),
        "sharpness": sharpness(_std_of(family, params, mixture)),
    }
    if with_nll:
        out["nll"] = float(nll(family, params, y, mixture=mixture))
    for c in coverages:
        lower, upper = central_interval(family, params, c, mixture=mixture)
        out[coverage_key(c)] = interval_coverage(lower, upper, y)
    return out, pit, calibration_curve(pit, num_bins)[1]


def predictive_scores(
    family: str,
    params: Any,
    y: Any,
    *,
    mixture: bool = False,
    recalibrator: IsotonicRecalibrator | SigmaScaling | None = None,
    coverages: tuple[float, ...] = CENTRAL_COVERAGES,
    num_bins: int = 100,
    intervals: Mapping[float, tuple[Any, Any]] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """NLL, calibration errors, interval coverage and sharpness of selected voxels.

    Args:
        family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``.
        params: Head channels of the selected voxels, ``(n, P)`` or, with
            ``mixture``, ``(T, n, P)`` (see :func:`select_params`).
        y: Ground truth of those voxels, ``(n,)``.
        mixture: Axis 0 of ``params`` holds T MC samples (mixture predictive).
        recalibrator: Optional fitted recalibrator; adds the ``*_recalibrated``
            scores, which are NaN without one.
        coverages: Nominal coverages of the central intervals. Default 50,
            90 and 95 %.
        num_bins: Grid of the calibration curve. Default 100.
        intervals: Optional ``coverage -> (lower, upper)`` arrays of the
            selected voxels (e.g. the ``_lower95``/``_upper95`` maps written
            by ``tfuq infer``); they replace the intervals of the predictive
            distribution for those coverages (``coverage_<c>`` keys).

    Returns:
        ``(scores, curves)``. ``scores`` has ``nll``, ``calibration_rms_error``,
        ``miscalibration_area``, ``sharpness``, ``coverage_<c>`` and the same
        names suffixed ``_recalibrated`` (``nll_recalibrated`` is NaN for the
        isotonic map, whose density is not computed). ``curves`` has ``"expected"``, ``"observed"`` and
        ``"observed_recalibrated"`` (None without a recalibrator).

    Raises:
        ValueError: unknown family, a ``"point"`` head, shape mismatch, or an
            unfitted recalibrator.
    """
    if fam.check_family(family) == "point":
        raise ValueError("A 'point' head has no predictive distribution. Expected a probabilistic family.")
    params = tf.convert_to_tensor(params)
    obs = np.asarray(y, dtype=params.dtype.as_numpy_dtype)
    scores, pit, observed = _scores(
        family, params, obs, mixture=mixture, coverages=coverages, num_bins=num_bins
    )
    for c, (lower, upper) in (intervals or {}).items():
        scores[coverage_key(c)] = interval_coverage(lower, upper, obs)
    names = ["nll", "calibration_rms_error", "miscalibration_area", "sharpness"] + [
        coverage_key(c) for c in coverages
    ]
    recalibrated = dict.fromkeys(names, float("nan"))
    curves: dict[str, Any] = {
        "expected": np.linspace(0.0, 1.0, num_bins),
        "observed": observed,
        "observed_recalibrated": None,
    }
    if isinstance(recalibrator, SigmaScaling):
        scaled = recalibrator.scale_params(family, params)
        after, _, curves["observed_recalibrated"] = _scores(
            family, scaled, obs, mixture=mixture, coverages=coverages, num_bins=num_bins
        )
        recalibrated.update(after)
    elif isinstance(recalibrator, IsotonicRecalibrator):
        pit_after = recalibrator.transform(pit)
        recalibrated["calibration_rms_error"] = rms_calibration_error(pit_after, num_bins)
        recalibrated["miscalibration_area"] = miscalibration_area(pit_after, num_bins)
        curves["observed_recalibrated"] = calibration_curve(pit_after, num_bins)[1]
        std = recalibrator.effective_std(family, params, mixture=mixture).numpy()
        recalibrated["sharpness"] = sharpness(std) if np.all(np.isfinite(std)) else math.inf
        for c in coverages:
            lower, upper = recalibrator.central_interval(family, params, c, mixture=mixture)
            recalibrated[coverage_key(c)] = interval_coverage(lower, upper, obs)
    elif recalibrator is not None:
        raise ValueError(
            "recalibrator must be an IsotonicRecalibrator, a SigmaScaling or None. "
            f"Received: {type(recalibrator).__name__}"
        )
    scores.update({f"{name}_recalibrated": value for name, value in recalibrated.items()})
    return scores, curves
