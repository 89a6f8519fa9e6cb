"""Fitting and scoring recalibrations on a calibration set (the maths of ``tfuq calibrate``).

The calibration set is four 1-D arrays keyed :data:`CALIBRATION_KEYS` (MC mean,
epistemic and aleatoric variance, target; normalised units) pooled over the
held-out subjects. :func:`fit_recalibrators` fits the isotonic map of the PIT
(Kuleshov et al. 2018) and sigma scaling; :func:`calibration_scores` scores a
recalibration; :func:`cross_validated_errors` scores each on subjects it was
not fitted on (leave one subject out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfuq.calibration.isotonic import IsotonicRecalibrator
from tfuq.calibration.metrics import miscalibration_area, rms_calibration_error
from tfuq.calibration.moment_matched import (
    fit_moment_sigma_scaling,
    moment_pit,
    recalibrated_interval,
    recalibrated_variance,
)
from tfuq.calibration.quantiles import CENTRAL_COVERAGES
from tfuq.calibration.sigma_scaling import SigmaScaling

__all__ = [
    "CALIBRATION_KEYS",
    "calibration_scores",
    "cross_validated_errors",
    "fit_recalibrators",
    "pool_calibration_set",
]

#: The arrays of a calibration set (1-D, normalised target units).
CALIBRATION_KEYS = ("mean", "epistemic_var", "aleatoric_var", "target")
#: Voxels per side of a cross-validation fold.
_CV_VOXELS = 300_000


def _coverage_key(coverage: float) -> str:
    return f"coverage_{round(100 * coverage):d}"


def calibration_scores(
    data: Mapping[str, np.ndarray],
    recalibrator: IsotonicRecalibrator | SigmaScaling | None = None,
    *,
    num_bins: int = 100,
) -> dict[str, float]:
    """Calibration RMS error, miscalibration area and interval coverage, optionally recalibrated.

    Args:
        data: 1-D arrays keyed :data:`CALIBRATION_KEYS`.
        recalibrator: Apply this recalibration first (None: the plain
            moment-matched normal).
        num_bins: Calibration-curve grid.

    Returns:
        dict ``calibration_rms_error``, ``miscalibration_area``,
        ``coverage_50``, ``coverage_90``, ``coverage_95``.
    """
    mean, epi, ale, y = (data[k] for k in CALIBRATION_KEYS)
    variance = recalibrated_variance(recalibrator, epi, ale)
    pit = moment_pit(mean, variance, np.zeros_like(variance), y)
    if isinstance(recalibrator, IsotonicRecalibrator):
        pit = recalibrator.transform(pit)
    out = {
        "calibration_rms_error": rms_calibration_error(pit, num_bins),
        "miscalibration_area": miscalibration_area(pit, num_bins),
    }
    for c in CENTRAL_COVERAGES:
        lower, upper = recalibrated_interval(recalibrator, mean, epi, ale, c)
        out[_coverage_key(c)] = float(np.mean((lower <= y) & (y <= upper)))
    return out


def fit_recalibrators(
    data: Mapping[str, np.ndarray], *, objective: str = "nll", num_bins: int = 100
) -> tuple[IsotonicRecalibrator, SigmaScaling | None]:
    """Fit the isotonic map and sigma scaling on a calibration set.

    Args:
        data: 1-D arrays keyed :data:`CALIBRATION_KEYS` (normalised units).
        objective: Sigma-scaling objective, ``"nll"`` or ``"calibration"``.
        num_bins: Calibration-curve grid.

    Returns:
        ``(isotonic, sigma_scaling)``; sigma scaling is None when the
        aleatoric variance is 0 everywhere (the ``none`` family).
    """
    mean, epi, ale, y = (data[k] for k in CALIBRATION_KEYS)
    isotonic = IsotonicRecalibrator().fit(moment_pit(mean, epi, ale, y))
    if not np.any(ale > 0):
        return isotonic, None
    return isotonic, fit_moment_sigma_scaling(mean, epi, ale, y, objective=objective, num_bins=num_bins)


def cross_validated_errors(
    parts: Sequence[Mapping[str, np.ndarray]], objective: str, num_bins: int, seed: int
) -> dict[str, Any]:
    """Leave-one-subject-out RMS calibration error of none, sigma scaling and the isotonic map.

    Each subject's voxels are scored by the recalibrators fitted on the other subjects' (each side
    subsampled to :data:`_CV_VOXELS`): how well a recalibration carries to a subject it was not
    fitted on, which is what it must do at inference. Empty with fewer than two subjects.

    Returns:
        ``{"mean": {method: error}, "per_subject": [{method: error}, ...]}``.
    """
    if len(parts) < 2:
        return {"mean": {}, "per_subject": []}
    rows = []
    for i, held_out in enumerate(parts):
        rest = pool_calibration_set([p for j, p in enumerate(parts) if j != i], _CV_VOXELS, seed)
        test = pool_calibration_set([held_out], _CV_VOXELS, seed)
        isotonic, sigma = fit_recalibrators(rest, objective=objective, num_bins=num_bins)
        candidates = {"none": None, "isotonic": isotonic}
        if sigma is not None:
            candidates["sigma_scaling"] = sigma
        rows.append(
            {
                name: calibration_scores(test, rec, num_bins=num_bins)["calibration_rms_error"]
                for name, rec in candidates.items()
            }
        )
    names = list(rows[0])
    return {"mean": {n: float(np.mean([r[n] for r in rows])) for n in names}, "per_subject": rows}


def pool_calibration_set(parts: Sequence[Mapping[str, np.ndarray]], max_voxels: int, seed: int) -> dict:
    """The subjects' calibration arrays pooled (float64), at most ``max_voxels`` kept at random (seeded)."""
    pooled = {key: np.concatenate([p[key] for p in parts]).astype(np.float64) for key in CALIBRATION_KEYS}
    size = pooled["mean"].size
    if size > max_voxels:
        keep = np.sort(np.random.default_rng(seed).choice(size, size=max_voxels, replace=False))
        pooled = {key: value[keep] for key, value in pooled.items()}
    return pooled
