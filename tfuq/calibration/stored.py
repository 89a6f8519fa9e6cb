"""Where ``tfuq calibrate`` stores the fitted recalibrators, and reading the configured one back.

Layout in ``model_dir``::

    calibration/isotonic.json        IsotonicRecalibrator (Kuleshov et al.)
    calibration/sigma_scaling.json   SigmaScaling (Laves et al.)
    calibration/summary.json         calibration set, errors before/after

Both recalibrators are always fitted; ``[CALIBRATION] method`` chooses which
one infer, evaluate and export apply (``auto``: the one the summary's
``chosen_method`` names, chosen by cross-validation over held-out subjects).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tfuq.calibration.isotonic import IsotonicRecalibrator
from tfuq.calibration.sigma_scaling import SigmaScaling
from tfuq.errors import UserError
from tfuq.model_store.layout import CALIBRATION_DIR
from tfuq.typing import PathLike

__all__ = [
    "CALIBRATION_FILES",
    "SUMMARY_FILE",
    "calibration_path",
    "chosen_method",
    "load_calibration",
]

_LOG = logging.getLogger(__name__)
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


def chosen_method(model_dir: PathLike) -> str:
    """The recalibration ``[CALIBRATION] method = auto`` resolved to by the last ``tfuq calibrate``.

    ``"none"`` when the model is not calibrated yet (logged).

    Raises:
        UserError: the stored summary is unreadable.
    """
    import json

    path = Path(model_dir) / CALIBRATION_DIR / SUMMARY_FILE
    if not path.is_file():
        _LOG.info("no calibration summary in %s (run tfuq calibrate): no recalibration", path.parent)
        return "none"
    try:
        method = json.loads(path.read_text(encoding="utf-8")).get("chosen_method", "none")
    except (ValueError, AttributeError) as error:
        raise UserError(f"{path}: not a tfuq calibration summary: {error}") from None
    if method not in ("none", *CALIBRATION_FILES):
        raise UserError(
            f"{path}: chosen_method {method!r} is not one of none, {', '.join(CALIBRATION_FILES)}"
        )
    return method


def load_calibration(model_dir: PathLike, method: str) -> IsotonicRecalibrator | SigmaScaling | None:
    """The fitted recalibrator ``method`` of a run, or None (method ``"none"`` or not calibrated yet).

    Raises:
        UserError: the file exists but is not a fitted recalibrator of that kind.
    """
    if method == "auto":
        method = chosen_method(model_dir)
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
