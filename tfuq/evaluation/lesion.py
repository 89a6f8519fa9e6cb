"""Uncertainty and error inside a lesion (e.g. a tumour) against the rest of the mask.

A lesion is something the model has seen little of: its epistemic
uncertainty should be higher there than in the rest of the brain or body
(Zhao et al.'s glioma T1 -> T2 synthesis; Reinhold et al.'s synthetic
anomalies are the same test with a zero cube). :func:`lesion_metrics` scores
a real lesion label map (``[REGRESSION] lesion``) the way
:func:`tfuq.evaluation.anomaly_scores` scores a synthetic anomaly, for each
std map, plus the error on both sides.

Keys (:data:`LESION_KEYS`; ``<kind>`` in epistemic, aleatoric, total):

* ``lesion_num_voxels``, ``nonlesion_num_voxels``: voxels of the lesion
  inside the mask, and of the rest of the mask;
* ``lesion_<kind>_std``, ``nonlesion_<kind>_std``: mean std on each side;
* ``lesion_<kind>_ratio``: their ratio (inside / outside; inf if outside is 0);
* ``lesion_<kind>_auroc``: AUROC of the std for lesion voxels against the
  rest of the mask (1 = every lesion voxel is more uncertain);
* ``lesion_mae``, ``nonlesion_mae``: mean absolute error on each side.

Reference:
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis",
    arXiv:2005.11875 (uncertainty in the tumour region).
    Reinhold et al., "Validating uncertainty in medical image translation",
    ISBI 2020, arXiv:2002.04639 (epistemic std inside an anomaly, AUROC).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tfuq.evaluation.checks import resolve_mask, same_shape_maps
from tfuq.evaluation.validation import anomaly_scores

__all__ = ["LESION_KEYS", "LESION_STD_KINDS", "lesion_metrics"]

#: Std maps compared inside and outside the lesion, in this order.
LESION_STD_KINDS = ("epistemic", "aleatoric", "total")
#: Every key :func:`lesion_metrics` returns, in this order.
LESION_KEYS = (
    "lesion_num_voxels",
    "nonlesion_num_voxels",
    *(
        f"{prefix}{kind}_{stat}"
        for kind in LESION_STD_KINDS
        for prefix, stat in (
            ("lesion_", "std"),
            ("nonlesion_", "std"),
            ("lesion_", "ratio"),
            ("lesion_", "auroc"),
        )
    ),
    "lesion_mae",
    "nonlesion_mae",
)


def lesion_metrics(
    mean: Any,
    target: Any,
    epistemic_std: Any,
    aleatoric_std: Any,
    lesion: Any,
    mask: Any | None = None,
    *,
    total_std: Any | None = None,
) -> dict[str, float]:
    """Mean std, std ratio, std AUROC and MAE inside a lesion against the rest of the mask.

    Lesion voxels outside ``mask`` are ignored; the "rest" is the mask minus
    the lesion. When either side is empty (no lesion in the mask, or a
    lesion covering all of it) the counts are given and every other value is
    NaN (null in summary.json).

    Args:
        mean: Predictive mean in target units, shape ``s``.
        target: Ground truth, shape ``s``.
        epistemic_std: Epistemic std map, shape ``s``.
        aleatoric_std: Aleatoric std map, shape ``s``.
        lesion: Lesion label map of shape ``s``; non-zero = lesion (e.g.
            tumour labels 1, 2, 4).
        mask: Boolean brain/body mask of shape ``s``; None: every voxel.
        total_std: Total std map; default ``sqrt(epistemic^2 + aleatoric^2)``.

    Returns:
        dict with every key of :data:`LESION_KEYS` (counts as floats).

    Raises:
        ValueError: shapes differ, NaN/inf in a map.
        UserError: the mask selects no voxel.

    Example:
        >>> row = lesion_metrics(mean, t2, epi, ale, tumour_labels, brain)
        >>> row["lesion_epistemic_ratio"], row["lesion_epistemic_auroc"]
    """
    maps = same_shape_maps(mean=mean, target=target, epistemic=epistemic_std, aleatoric=aleatoric_std)
    if total_std is None:
        maps["total"] = np.sqrt(np.square(maps["epistemic"]) + np.square(maps["aleatoric"]))
    else:
        maps.update(same_shape_maps(target=maps["target"], total=total_std))
    shape = maps["target"].shape
    labels = np.asarray(lesion)
    if labels.shape != shape:
        raise ValueError(f"Expected lesion of shape {shape}. Received: lesion.shape={labels.shape}")
    region = resolve_mask(mask, shape)
    inside = region & (labels != 0)
    outside = region & ~inside
    out = dict.fromkeys(LESION_KEYS, math.nan)
    out["lesion_num_voxels"] = float(inside.sum())
    out["nonlesion_num_voxels"] = float(outside.sum())
    if not inside.any() or not outside.any():
        return out
    for kind in LESION_STD_KINDS:
        scores = anomaly_scores(maps[kind], inside, region)
        out[f"lesion_{kind}_std"] = scores["inside"]
        out[f"nonlesion_{kind}_std"] = scores["outside"]
        out[f"lesion_{kind}_ratio"] = scores["ratio"]
        out[f"lesion_{kind}_auroc"] = scores["auroc"]
    error = np.abs(maps["target"] - maps["mean"])
    out["lesion_mae"] = float(np.mean(error[inside]))
    out["nonlesion_mae"] = float(np.mean(error[outside]))
    return out
