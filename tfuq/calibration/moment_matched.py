"""Recalibration of the moment-matched normal of an MC decomposition (what infer, export and evaluate apply).

The whole-volume MC prediction keeps, per voxel, only the mixture's mean
``m``, epistemic variance ``e`` and aleatoric variance ``a`` (memory
independent of T), not the T member distributions. Calibration is therefore
fitted and applied to the moment-matched normal ``N(m, e + a)``, exactly as
the exported SavedModel applies it (:mod:`tfuq.calibration.moment_recalibration`):

Mathematical details:
    PIT value at the truth ``y``: ``p = Phi((y - m) / t)`` with
    ``t = sqrt(e + a)``.

    *Isotonic* map ``R`` fitted on those PIT values (Kuleshov et al.): the
    recalibrated quantile is ``q(p) = m + t Phi^-1(R^-1(p))`` and the central
    interval of coverage c is ``[q((1-c)/2), q((1+c)/2)]`` (probabilities
    clipped to ``[1e-6, 1 - 1e-6]`` so bounds stay finite).

    *Sigma scaling* (factor s on every member's scale, Laves et al.): the
    aleatoric variance becomes ``s^2 a`` while the MC spread of the means is
    unchanged, so the recalibrated distribution is ``N(m, e + s^2 a)``; s
    minimises the mean NLL
    ``0.5 log(2 pi v_s) + (y - m)^2 / (2 v_s)``, ``v_s = e + s^2 a``
    (or the RMS calibration error of its PIT values), by bounded Brent search
    on ``log s``.

    Cost of the choice (versus the mixture cdf ``(1/T) sum_t F_t(y)``): no
    per-pass cdf has to be accumulated at the truth, and the same four maps
    serve infer, calibrate, evaluate and the SavedModel; but a mixture that
    is not normal (skewed or multi-modal MC members, generalized-normal
    tails) is described by its first two moments only. The isotonic map
    absorbs a shape mismatch that is the same everywhere (it corrects the PIT
    distribution as a whole), not one that varies from voxel to voxel.

Reference:
    Kuleshov, Fenner & Ermon, ICML 2018, arXiv:1807.00263.
    Laves, Ihler, Fast, Kahrs & Ortmaier, MIDL 2020, arXiv:2004.12211.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, special

from tfuq.calibration.checks import as_finite_array
from tfuq.calibration.isotonic import IsotonicRecalibrator
from tfuq.calibration.metrics import rms_calibration_error
from tfuq.calibration.sigma_scaling import SigmaScaling

__all__ = [
    "PROBABILITY_EPS",
    "fit_moment_sigma_scaling",
    "moment_pit",
    "recalibrated_interval",
    "recalibrated_variance",
]

#: Probabilities are kept this far from 0 and 1 before ``Phi^-1`` (finite bounds).
PROBABILITY_EPS = 1e-6
_VAR_FLOOR = 1e-30


def _maps(mean: Any, epistemic_var: Any, aleatoric_var: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = np.asarray(mean, dtype=np.float64)
    e = np.asarray(epistemic_var, dtype=np.float64)
    a = np.asarray(aleatoric_var, dtype=np.float64)
    if not (m.shape == e.shape == a.shape):
        raise ValueError(
            f"mean, epistemic_var and aleatoric_var must have one shape. Received: {m.shape}, {e.shape}, "
            f"{a.shape}"
        )
    for name, value in (("mean", m), ("epistemic_var", e), ("aleatoric_var", a)):
        as_finite_array(value, name, flatten=False)
    if e.size and (e.min() < 0 or a.min() < 0):
        raise ValueError("Variances must be >= 0. Received: a negative variance")
    return m, e, a


def moment_pit(mean: Any, epistemic_var: Any, aleatoric_var: Any, y: Any) -> np.ndarray:
    """PIT values ``Phi((y - m) / sqrt(e + a))`` of the moment-matched normal.

    Args:
        mean: Predictive mean, any shape.
        epistemic_var: Epistemic variance, same shape, >= 0.
        aleatoric_var: Aleatoric variance, same shape, >= 0.
        y: Truth, same shape and units.

    Returns:
        float64 array of the same shape, values in [0, 1].

    Raises:
        ValueError: shapes differ, NaN/inf, negative variances.

    Example:
        >>> float(moment_pit([0.0], [0.5], [0.5], [1.0])[0])  # Phi(1)
        0.8413447460685429
    """
    m, e, a = _maps(mean, epistemic_var, aleatoric_var)
    obs = np.asarray(y, dtype=np.float64)
    if obs.shape != m.shape:
        raise ValueError(f"y must have the shape of the maps, {m.shape}. Received: {obs.shape}")
    return special.ndtr((obs - m) / np.sqrt(np.maximum(e + a, _VAR_FLOOR)))


def recalibrated_variance(
    recalibrator: IsotonicRecalibrator | SigmaScaling | None, epistemic_var: Any, aleatoric_var: Any
) -> np.ndarray:
    """Variance of the normal the recalibrated quantiles are taken from: ``e + s^2 a`` or ``e + a``."""
    e = np.asarray(epistemic_var, dtype=np.float64)
    a = np.asarray(aleatoric_var, dtype=np.float64)
    if isinstance(recalibrator, SigmaScaling):
        if recalibrator.scale_factor is None:
            raise ValueError("SigmaScaling is not fitted. Call fit first.")
        return e + recalibrator.scale_factor**2 * a
    return e + a


def recalibrated_interval(
    recalibrator: IsotonicRecalibrator | SigmaScaling | None,
    mean: Any,
    epistemic_var: Any,
    aleatoric_var: Any,
    coverage: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Recalibrated central interval of the moment-matched normal (see the module notes).

    Args:
        recalibrator: Fitted isotonic map, sigma scaling, or None (plain normal).
        mean: Predictive mean map.
        epistemic_var: Epistemic variance map, same units squared.
        aleatoric_var: Aleatoric variance map.
        coverage: Nominal coverage c in (0, 1). Default 0.95.

    Returns:
        ``(lower, upper)`` float64 maps in the units of ``mean``.

    Raises:
        ValueError: bad coverage, shapes, or an unfitted recalibrator.

    Example:
        >>> lo, hi = recalibrated_interval(None, [0.0], [0.0], [1.0], 0.95)
        >>> round(float(hi[0]), 3)
        1.96
    """
    if not 0.0 < float(coverage) < 1.0:
        raise ValueError(f"coverage must lie in (0, 1). Received: coverage={coverage!r}")
    m, e, a = _maps(mean, epistemic_var, aleatoric_var)
    probs = np.array([0.5 * (1.0 - coverage), 0.5 * (1.0 + coverage)])
    if isinstance(recalibrator, IsotonicRecalibrator):
        probs = recalibrator.inverse(probs)
    elif recalibrator is not None and not isinstance(recalibrator, SigmaScaling):
        raise ValueError(
            "recalibrator must be an IsotonicRecalibrator, a SigmaScaling or None. "
            f"Received: {type(recalibrator).__name__}"
        )
    z_lo, z_hi = special.ndtri(np.clip(probs, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS))
    std = np.sqrt(recalibrated_variance(recalibrator, e, a))
    return m + z_lo * std, m + z_hi * std


def fit_moment_sigma_scaling(
    mean: Any,
    epistemic_var: Any,
    aleatoric_var: Any,
    y: Any,
    *,
    objective: str = "nll",
    bounds: tuple[float, float] = (1e-3, 1e3),
    num_bins: int = 100,
) -> SigmaScaling:
    """Fit the sigma-scaling factor s of ``N(m, e + s^2 a)`` on a calibration set.

    Args:
        mean: Predictive means (1-D or any shape).
        epistemic_var: Epistemic variances, same shape.
        aleatoric_var: Aleatoric variances, same shape; not all 0.
        y: Truth, same shape.
        objective: ``"nll"`` (mean Gaussian NLL) or ``"calibration"`` (RMS
            calibration error of the PIT values).
        bounds: Search interval of s.
        num_bins: Calibration-curve grid for ``"calibration"``.

    Returns:
        A fitted :class:`SigmaScaling` (its ``scale_factor`` is s).

    Raises:
        ValueError: shapes differ, NaN/inf, aleatoric variance 0 everywhere.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.normal(0.0, 2.0, 100_000)
        >>> s = fit_moment_sigma_scaling(np.zeros_like(y), np.zeros_like(y), np.ones_like(y), y)
        >>> round(s.scale_factor, 1)
        2.0
    """
    scaling = SigmaScaling(objective=objective, bounds=bounds, num_bins=num_bins)
    m, e, a = _maps(mean, epistemic_var, aleatoric_var)
    obs = np.asarray(y, dtype=np.float64)
    if obs.shape != m.shape or m.size == 0:
        raise ValueError(f"y must have the (non-empty) shape of the maps, {m.shape}. Received: {obs.shape}")
    if not np.any(a > 0):
        raise ValueError("aleatoric_var is 0 everywhere: sigma scaling has no scale to fit.")
    squared = np.square(obs - m)

    def loss(s: float) -> float:
        v = np.maximum(e + s * s * a, _VAR_FLOOR)
        if objective == "nll":
            return float(np.mean(0.5 * np.log(2.0 * math.pi * v) + 0.5 * squared / v))
        return rms_calibration_error(special.ndtr((obs - m) / np.sqrt(v)), num_bins)

    lo, hi = scaling.bounds
    result = optimize.minimize_scalar(
        lambda log_s: loss(math.exp(log_s)),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-8},
    )
    scaling.scale_factor = float(math.exp(result.x))
    return scaling
