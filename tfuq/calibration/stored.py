"""Where ``tfuq calibrate`` stores the fitted recalibrators, and reading the configured one back.

Layout in ``model_dir``::

    calibration/isotonic.json        IsotonicRecalibrator (Kuleshov et al.)
    calibration/sigma_scaling.json   SigmaScaling (Laves et al.)
    calibration/summary.json         calibration set, errors before/after

Both recalibrators are always fitted; ``[CALIBRATION] method`` chooses which
one infer, evaluate and export apply.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tfuq.calibration.isotonic import IsotonicRecalibrator
from tfuq.calibration.sigma_scaling import SigmaScaling
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "CALIBRATION_DIR",
    "CALIBRATION_FILES",
    "SUMMARY_FILE",
    "calibration_path",
    "load_calibration",
]

_LOG = logging.getLogger(__name__)
#: Folder of the calibration files in ``model_dir``.
CALIBRATION_DIR = "calibration"
#: ``[CALIBRATION] method`` -> file name in :data:`CALIBRATION_DIR`.
CALIBRATION_FILES = {"isotonic": "isotonic.json", "sigma_scaling": "sigma_scaling.json"}
#: The summary of the last ``tfuq calibrate``.
SUMMARY_FILE = "summary.json"
_CLASSES = {"isotonic": IsotonicRecalibrator, "sigma_scaling": SigmaScaling}


def calibration_path(model_dir: PathLike, method: str) -> Path:
    """``<model_dir>/calibration/<method>.json``.

    Raises:
        ValueError: ``method`` is not ``"isotonic"`` or ``"sigma_scaling"``.
    """
    if method not in CALIBRATION_FILES:
        raise ValueError(f"Expected method in {tuple(CALIBRATION_FILES)}. Received: method={method!r}")
    return Path(model_dir) / CALIBRATION_DIR / CALIBRATION_FILES[method]


def load_calibration(model_dir: PathLike, method: str) -> IsotonicRecalibrator | SigmaScaling | None:
    """The fitted recalibrator ``method`` of a run, or None (method ``"none"`` or not calibrated yet).

    Raises:
        UserError: the file exists but is not a fitted recalibrator of that kind.
    """
    if method == "none":
        return None
    path = calibration_path(model_dir, method)
    if not path.is_file():
        _LOG.info(
            "no %s calibration in %s (run tfuq calibrate): no recalibrated interval", method, path.parent
        )
        return None
    recalibrator = _CLASSES[method].load(path)
    if not recalibrator.is_fitted:
        raise UserError(
            f"{path}: the {method} recalibrator was saved before fitting; run tfuq calibrate again"
        )
    return recalibrator
