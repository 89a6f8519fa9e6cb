"""Calibration: PIT values, calibration metrics, scoring rules, recalibration.

Every public name of the modules below is re-exported here, except the
``tfuq calibrate`` stage (:mod:`tfuq.stages.calibrate`) and the storage format
helpers of :mod:`tfuq.calibration.persistence`.
"""

from tfuq.calibration.checks import as_finite_array, as_tensor, check_probability
from tfuq.calibration.fitting import (
    CALIBRATION_KEYS,
    calibration_scores,
    cross_validated_errors,
    fit_recalibrators,
    pool_calibration_set,
)
from tfuq.calibration.isotonic import ONE_SIGMA_COVERAGE, IsotonicRecalibrator
from tfuq.calibration.metrics import (
    calibration_curve,
    mean_absolute_calibration_error,
    miscalibration_area,
    rms_calibration_error,
    sharpness,
)
from tfuq.calibration.moment_matched import (
    PROBABILITY_EPS,
    fit_moment_sigma_scaling,
    moment_pit,
    recalibrated_interval,
    recalibrated_variance,
)
from tfuq.calibration.moment_recalibration import (
    INTERVAL_COVERAGE,
    RECALIBRATION_KINDS,
    MomentRecalibration,
    load_recalibrator,
)
from tfuq.calibration.pit import check_prediction, mixture_pit_values, pit_values, predictive_cdf
from tfuq.calibration.qc_reference import (
    QC_FEATURE_REFERENCE_FILE,
    QC_REFERENCE_FILE,
    QCReference,
    fit_qc_reference,
    load_qc_reference,
    qc_score,
    slice_statistics,
)
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
from tfuq.calibration.stored import (
    CALIBRATION_FILES,
    SUMMARY_FILE,
    calibration_path,
    chosen_method,
    load_calibration,
)

__all__ = [
    "CALIBRATION_FILES",
    "CALIBRATION_KEYS",
    "CENTRAL_COVERAGES",
    "INTERVAL_COVERAGE",
    "OBJECTIVES",
    "ONE_SIGMA_COVERAGE",
    "PROBABILITY_EPS",
    "QC_FEATURE_REFERENCE_FILE",
    "QC_REFERENCE_FILE",
    "RECALIBRATION_KINDS",
    "SUMMARY_FILE",
    "IsotonicRecalibrator",
    "MomentRecalibration",
    "QCReference",
    "SigmaScaling",
    "as_finite_array",
    "as_tensor",
    "calibration_curve",
    "calibration_path",
    "calibration_scores",
    "central_interval",
    "central_intervals",
    "check_prediction",
    "check_probability",
    "chosen_method",
    "coverage",
    "cross_validated_errors",
    "crps",
    "crps_laplace",
    "crps_normal",
    "crps_samples",
    "fit_moment_sigma_scaling",
    "fit_qc_reference",
    "fit_recalibrators",
    "interval_score",
    "load_calibration",
    "load_qc_reference",
    "load_recalibrator",
    "mean_absolute_calibration_error",
    "miscalibration_area",
    "mixture_pit_values",
    "moment_pit",
    "nll",
    "pit_values",
    "pool_calibration_set",
    "predictive_cdf",
    "predictive_quantile",
    "qc_score",
    "recalibrated_interval",
    "recalibrated_variance",
    "rms_calibration_error",
    "sharpness",
    "slice_statistics",
]
