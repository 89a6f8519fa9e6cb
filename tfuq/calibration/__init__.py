"""Calibration: PIT values, calibration metrics, scoring rules, recalibration."""

from tfuq.calibration.checks import as_finite_array, as_tensor, check_probability
from tfuq.calibration.isotonic import ONE_SIGMA_COVERAGE, IsotonicRecalibrator
from tfuq.calibration.metrics import (
    calibration_curve,
    mean_absolute_calibration_error,
    miscalibration_area,
    rms_calibration_error,
    sharpness,
)
from tfuq.calibration.pit import check_prediction, mixture_pit_values, pit_values, predictive_cdf
from tfuq.calibration.quantiles import (
    CENTRAL_COVERAGES,
    central_interval,
    central_intervals,
    predictive_quantile,
)
from tfuq.calibration.scoring import (
    coverage,
    crps,
    crps_laplace,
    crps_normal,
    crps_samples,
    interval_score,
    nll,
)
from tfuq.calibration.sigma_scaling import OBJECTIVES, SigmaScaling

__all__ = [
    "CENTRAL_COVERAGES",
    "OBJECTIVES",
    "ONE_SIGMA_COVERAGE",
    "IsotonicRecalibrator",
    "SigmaScaling",
    "as_finite_array",
    "as_tensor",
    "calibration_curve",
    "central_interval",
    "central_intervals",
    "check_prediction",
    "check_probability",
    "coverage",
    "crps",
    "crps_laplace",
    "crps_normal",
    "crps_samples",
    "interval_score",
    "mean_absolute_calibration_error",
    "miscalibration_area",
    "mixture_pit_values",
    "nll",
    "pit_values",
    "predictive_cdf",
    "predictive_quantile",
    "rms_calibration_error",
    "sharpness",
]
