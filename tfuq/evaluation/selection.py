"""``[EVALUATION] evaluations``: which metric groups reach metrics.csv and summary.json.

NiftyNet's ``evaluations`` key names the metrics an evaluation reports. In
tfuq a name stands for a group of columns (every region and recalibration
variant of it: ``_image``, ``_recalibrated``, ``_aleatoric``...). Columns
that are no metric (``subject``, ``num_voxels``) and the lesion comparison
(``lesion_*``, ``nonlesion_*``, present only with a ``lesion`` section) are
always kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["METRIC_GROUPS", "metric_group", "select_metrics"]

#: ``[EVALUATION] evaluations`` name -> the column-name stems it covers.
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "mae": ("mae",),
    "mse": ("mse",),
    "rmse": ("rmse",),
    "psnr": ("psnr",),
    "ssim": ("ssim",),
    "nrmse": ("nrmse", "nstd"),
    "nll": ("nll",),
    "calibration": ("calibration_rms_error", "miscalibration_area"),
    "coverage": ("coverage",),
    "sharpness": ("sharpness",),
    "ause": ("ause",),
    "spearman": ("spearman",),
}

_ALWAYS = ("subject", "num_voxels", "lesion", "nonlesion")


def metric_group(column: str) -> str | None:
    """The ``evaluations`` name a metrics column belongs to; None for columns always kept.

    Args:
        column: A metrics.csv column / summary.json key, e.g. ``"coverage_90_image"``.

    Returns:
        The group name (``"coverage"``), or None for ``subject``,
        ``num_voxels``, the ``lesion_*`` comparison and unknown columns.

    Example:
        >>> metric_group("calibration_rms_error_recalibrated_image")
        'calibration'
    """
    if any(column == stem or column.startswith(f"{stem}_") for stem in _ALWAYS):
        return None
    for name, stems in METRIC_GROUPS.items():
        if any(column == stem or column.startswith(f"{stem}_") for stem in stems):
            return name
    return None


def select_metrics(row: Mapping[str, Any], evaluations: Iterable[str]) -> dict[str, Any]:
    """The entries of one metrics row that ``evaluations`` asks for (order kept).

    Args:
        row: Column -> value (one subject's metrics, or a summary).
        evaluations: Group names of :data:`METRIC_GROUPS`.

    Returns:
        A new dict without the columns of unselected groups.

    Raises:
        ValueError: an unknown group name.
    """
    wanted = set(evaluations)
    unknown = sorted(wanted - set(METRIC_GROUPS))
    if unknown:
        raise ValueError(f"Expected evaluations among {sorted(METRIC_GROUPS)}. Received: {unknown}")
    return {k: v for k, v in row.items() if (group := metric_group(k)) is None or group in wanted}
