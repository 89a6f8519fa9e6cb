"""Calibration curve and the errors derived from it, plus sharpness.

Definitions follow the "quantile" proportion type of the uncertainty-toolbox
(Chung et al. 2021) and the calibration plot of Zhao et al.: for expected
proportions ``p_j`` on a grid in [0, 1], the observed proportion is the
fraction of truths below the predicted ``p_j``-quantile, i.e. the fraction of
PIT values ``<= p_j``.

Mathematical details:
    With N PIT values ``u_i`` and ``p_j = j/(B-1)``, ``j = 0..B-1``
    (``B = num_bins``)::

        observed_j = (1/N) #{i : u_i <= p_j}
        RMSCE      = sqrt((1/B) sum_j (observed_j - p_j)^2)
        MACE       = (1/B) sum_j |observed_j - p_j|
        area       = integral_0^1 |c(p) - p| dp

    where ``c`` joins the points of the curve linearly; the area is computed
    exactly for that polyline (segments that cross the diagonal are split at
    the crossing). Sharpness is ``sqrt(mean(std^2))``. A perfectly calibrated
    model has all three errors near 0.

Reference:
    Kuleshov, Fenner & Ermon, "Accurate uncertainties for deep learning using
    calibrated regression", ICML 2018, arXiv:1807.00263.
    Chung et al., "Uncertainty Toolbox: an open-source library for assessing,
    visualizing, and improving uncertainty quantification", 2021,
    arXiv:2109.10254.
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis"
    (calibration plot and its RMS error).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfuq.calibration.checks import as_finite_array

__all__ = [
    "calibration_curve",
    "mean_absolute_calibration_error",
    "miscalibration_area",
    "rms_calibration_error",
    "sharpness",
]


def _check_bins(num_bins: int) -> int:
    if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2. Received: num_bins={num_bins!r}")
    return int(num_bins)


def calibration_curve(pit: Any, num_bins: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Expected vs observed proportions (the calibration plot).

    Args:
        pit: PIT values in [0, 1], any shape (flattened); finite, non-empty.
        num_bins: Number of expected proportions, ``linspace(0, 1, num_bins)``.
            Default 100.

    Returns:
        ``(expected, observed)``, two float64 arrays of shape ``(num_bins,)``.

    Raises:
        ValueError: empty or non-finite PIT values, values outside [0, 1],
            ``num_bins < 2``.

    Example:
        >>> calibration_curve([0.1, 0.4, 0.6, 0.9], num_bins=3)
        (array([0. , 0.5, 1. ]), array([0. , 0.5, 1. ]))
    """
    num_bins = _check_bins(num_bins)
    values = np.sort(as_finite_array(pit, "pit"))
    if values[0] < 0.0 or values[-1] > 1.0:
        raise ValueError(f"pit values must lie in [0, 1]. Received: min={values[0]!r}, max={values[-1]!r}")
    expected = np.linspace(0.0, 1.0, num_bins)
    observed = np.searchsorted(values, expected, side="right") / values.size
    return expected, observed


def rms_calibration_error(pit: Any, num_bins: int = 100) -> float:
    """Root mean squared gap between observed and expected proportions.

    Args:
        pit: PIT values in [0, 1].
        num_bins: Grid size of the calibration curve. Default 100.

    Returns:
        float in [0, 1]; 0 for a perfectly calibrated model.
    """
    expected, observed = calibration_curve(pit, num_bins)
    return float(np.sqrt(np.mean(np.square(observed - expected))))


def mean_absolute_calibration_error(pit: Any, num_bins: int = 100) -> float:
    """Mean absolute gap between observed and expected proportions (ECE-like).

    Args:
        pit: PIT values in [0, 1].
        num_bins: Grid size of the calibration curve. Default 100.

    Returns:
        float in [0, 1].
    """
    expected, observed = calibration_curve(pit, num_bins)
    return float(np.mean(np.abs(observed - expected)))


def miscalibration_area(pit: Any, num_bins: int = 100) -> float:
    """Area between the calibration polyline and the diagonal.

    Args:
        pit: PIT values in [0, 1].
        num_bins: Grid size of the calibration curve. Default 100.

    Returns:
        float in [0, 0.5]; converges to the mean absolute calibration error as
        ``num_bins`` grows.
    """
    expected, observed = calibration_curve(pit, num_bins)
    gap = observed - expected
    d0, d1 = gap[:-1], gap[1:]
    width = np.diff(expected)
    same_sign = d0 * d1 >= 0
    trapezoid = 0.5 * width * (np.abs(d0) + np.abs(d1))
    denom = np.where(same_sign, 1.0, np.abs(d0) + np.abs(d1))
    crossing = 0.5 * width * (d0**2 + d1**2) / denom
    return float(np.sum(np.where(same_sign, trapezoid, crossing)))


def sharpness(std: Any) -> float:
    """Overall confidence: ``sqrt(mean(std^2))`` (root mean predictive variance).

    Args:
        std: Predictive standard deviations, any shape; finite and >= 0.

    Returns:
        float, in the units of the target (e.g. HU).

    Raises:
        ValueError: empty, non-finite or negative input.
    """
    values = as_finite_array(std, "std")
    if values.min() < 0.0:
        raise ValueError(f"std must be >= 0. Received: min={values.min()!r}")
    return float(np.sqrt(np.mean(np.square(values))))
