"""How well uncertainty ranks errors: sparsification curves, AUSE, Spearman, AUROC, monotonicity.

Mathematical details:
    Sparsification (Zhao et al.'s "precision-recall" plot; Ilg et al.): sort
    the N voxels by uncertainty, keep the fraction ``f`` that is least
    uncertain and report the RMSE of the kept voxels. With the cumulative sum
    ``S(n)`` of squared errors in that order, ``RMSE(f) = sqrt(S(fN) / (fN))``
    where ``S`` is linear between integer counts (a fractional voxel counts
    in part) and also across each run of tied uncertainties, which is the
    expected curve when ties are broken at random. The oracle curve sorts by
    the error itself and is the lowest possible curve; AUSE is the area
    between the two, ``integral_0^1 (RMSE_u(f) - RMSE_oracle(f)) df``
    (trapezoid rule on the fraction grid), 0 when the uncertainty ranks the
    voxels exactly as ``|error|`` does.

    AUROC of a score for a binary label (Mann-Whitney form): with midranks
    ``r_i`` of all scores (ties share their mean rank),
    ``AUROC = (sum_{positive} r_i - P (P + 1) / 2) / (P Q)`` for P positives
    and Q negatives, i.e. ``P(score_pos > score_neg) + 0.5 P(tie)``.

Reference:
    Ilg et al., "Uncertainty estimates and multi-hypotheses networks for
    optical flow", ECCV 2018, arXiv:1802.07095 (sparsification, AUSE).
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis"
    (RMSE versus retained voxels).
    Hanley & McNeil, "The meaning and use of the area under a receiver
    operating characteristic (ROC) curve", Radiology 143(1), 1982,
    doi:10.1148/radiology.143.1.7063747.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from tfuq.evaluation.checks import as_map, resolve_mask, same_shape_maps
from tfuq.evaluation.image_metrics import nrmse, nstd

__all__ = [
    "DEFAULT_FRACTIONS",
    "LEVELS",
    "auroc",
    "ause",
    "error_uncertainty_pairs",
    "is_monotonic",
    "retained_rmse_curve",
    "sparsification_curves",
    "spearman",
    "spearman_many",
]

#: Retained fractions of the sparsification curves: 0.01, 0.02, ..., 1.
DEFAULT_FRACTIONS = np.linspace(0.01, 1.0, 100)
#: Levels at which error and uncertainty are compared (Zhao et al. Fig. 4).
LEVELS = ("voxel", "slice", "volume")


def _check_fractions(fractions: Any) -> np.ndarray:
    grid = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if grid.size < 1 or not np.all(np.isfinite(grid)) or grid.min() <= 0 or grid.max() > 1:
        raise ValueError(f"fractions must be values in (0, 1]. Received: {fractions!r}")
    if np.any(np.diff(grid) <= 0):
        raise ValueError("fractions must be strictly increasing. Received: a non-increasing grid")
    return grid


def _pair(error: Any, uncertainty: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray]:
    maps = same_shape_maps(error=error, uncertainty=uncertainty)
    selector = resolve_mask(mask, maps["error"].shape)
    return np.abs(maps["error"][selector]), maps["uncertainty"][selector]


def retained_rmse_curve(
    error: Any,
    uncertainty: Any,
    mask: Any | None = None,
    *,
    fractions: Any = DEFAULT_FRACTIONS,
) -> np.ndarray:
    """RMSE of the voxels kept when the most uncertain ones are removed.

    Args:
        error: Errors ``y - y_hat`` (or ``|y - y_hat|``), any shape.
        uncertainty: Ranking score of the same shape (a std map, or
            ``|error|`` itself for the oracle curve).
        mask: Optional boolean array; None uses every voxel.
        fractions: Retained fractions, strictly increasing in (0, 1].
            Default 0.01, 0.02, ..., 1.

    Returns:
        float64 array like ``fractions``: RMSE of the least uncertain
        fraction, ties in ``uncertainty`` split evenly (see module notes).

    Raises:
        ValueError: shapes differ, non-finite values, bad fractions.
        UserError: the mask selects no voxel.

    Example:
        >>> retained_rmse_curve([1.0, 3.0], [0.1, 0.2], fractions=[0.5, 1.0])
        array([1.        , 2.23606798])
    """
    grid = _check_fractions(fractions)
    abs_error, score = _pair(error, uncertainty, mask)
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    cumulative = np.concatenate([[0.0], np.cumsum(np.square(abs_error[order]))])
    # Knots at the ends of tie runs: S is linear across a run of equal scores.
    run_end = np.flatnonzero(np.diff(sorted_score) != 0) + 1
    knots = np.concatenate([[0], run_end, [score.size]])
    counts = grid * score.size
    kept_sum = np.interp(counts, knots, cumulative[knots])
    return np.sqrt(np.maximum(kept_sum, 0.0) / counts)


def sparsification_curves(
    error: Any,
    uncertainty: Any,
    mask: Any | None = None,
    *,
    fractions: Any = DEFAULT_FRACTIONS,
) -> dict[str, np.ndarray]:
    """Retained-RMSE curve of an uncertainty map and its oracle.

    Args:
        error: Errors, any shape.
        uncertainty: Uncertainty map, same shape.
        mask: Optional boolean array.
        fractions: Retained fractions (see :func:`retained_rmse_curve`).

    Returns:
        dict with ``"fractions"``, ``"rmse"`` (ranked by uncertainty) and
        ``"oracle"`` (ranked by ``|error|``), float64 arrays of one length.
    """
    grid = _check_fractions(fractions)
    abs_error = np.abs(as_map(error, "error"))
    return {
        "fractions": grid,
        "rmse": retained_rmse_curve(abs_error, uncertainty, mask, fractions=grid),
        "oracle": retained_rmse_curve(abs_error, abs_error, mask, fractions=grid),
    }


def ause(
    error: Any,
    uncertainty: Any,
    mask: Any | None = None,
    *,
    fractions: Any = DEFAULT_FRACTIONS,
) -> float:
    """Area between the retained-RMSE curve and its oracle (AUSE), in target units.

    Args:
        error: Errors, any shape.
        uncertainty: Uncertainty map, same shape.
        mask: Optional boolean array.
        fractions: Retained fractions (trapezoid rule on this grid).

    Returns:
        float >= 0; 0 when the uncertainty orders voxels like ``|error|``.

    Example:
        >>> e = np.arange(10.0)
        >>> ause(e, 2 * e + 1)
        0.0
    """
    curves = sparsification_curves(error, uncertainty, mask, fractions=fractions)
    gap = curves["rmse"] - curves["oracle"]
    if gap.size < 2:
        return 0.0
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(curves["fractions"])))


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two same-length samples, ignoring NaN pairs.

    Args:
        a: Values, any shape (flattened).
        b: Values of the same size.

    Returns:
        float in [-1, 1] (:func:`scipy.stats.spearmanr`); NaN when fewer
        than 2 finite pairs remain or one side is constant.

    Raises:
        ValueError: sizes differ.
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"Expected samples of one size. Received: sizes {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def spearman_many(a: Any, others: Mapping[str, Any]) -> dict[str, float]:
    """Spearman correlation of ``a`` with each of several samples, ranking ``a`` once.

    Args:
        a: Values, any shape (flattened), finite.
        others: Name -> values of the same size, finite.

    Returns:
        dict name -> correlation, equal to :func:`spearman` (Pearson
        correlation of average ranks); NaN when a side is constant or
        fewer than 2 values.

    Raises:
        ValueError: sizes differ or values are not finite.
    """
    x = as_map(a, "a").reshape(-1)
    x_ranks = stats.rankdata(x) if x.size >= 2 and not np.all(x == x[0]) else None
    out = {}
    for name, values in others.items():
        y = as_map(values, name).reshape(-1)
        if y.size != x.size:
            raise ValueError(f"Expected samples of one size. Received: sizes {x.size} and {y.size} ({name})")
        if x_ranks is None or np.all(y == y[0]):
            out[name] = math.nan
            continue
        out[name] = float(np.corrcoef(x_ranks, stats.rankdata(y))[0, 1])
    return out


def error_uncertainty_pairs(
    target: Any,
    prediction: Any,
    std: Any,
    mask: Any | None = None,
    *,
    level: str = "voxel",
    axis: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Error and uncertainty at one level of Zhao et al.'s Fig. 4.

    Args:
        target: Ground truth, any shape.
        prediction: Prediction, same shape.
        std: Uncertainty (std) map, same shape.
        mask: Optional boolean array (the brain or body region).
        level: ``"voxel"``: ``|y - y_hat|`` and std of every masked voxel;
            ``"slice"``: nRMSE and nSTD of every slice along ``axis`` that
            holds masked voxels; ``"volume"``: nRMSE and nSTD of the volume
            (arrays of length 1).
        axis: Slice axis for ``level="slice"``. Default -1.

    Returns:
        ``(errors, uncertainties)``, two float64 arrays of one length.

    Raises:
        ValueError: unknown level, shapes differ.
        UserError: the mask selects no voxel.
    """
    if level not in LEVELS:
        raise ValueError(f"Unknown level. Expected one of {LEVELS}. Received: level={level!r}")
    maps = same_shape_maps(target=target, prediction=prediction, std=std)
    y, y_hat, sd = maps["target"], maps["prediction"], maps["std"]
    selector = resolve_mask(mask, y.shape)
    if level == "voxel":
        return np.abs(y - y_hat)[selector], sd[selector]
    if level == "volume":
        return np.array([nrmse(y, y_hat, selector)]), np.array([nstd(sd, selector)])
    errors = nrmse(y, y_hat, selector, axis=axis)
    uncertainties = nstd(sd, selector, axis=axis)
    keep = np.isfinite(errors) & np.isfinite(uncertainties)
    return errors[keep], uncertainties[keep]


def auroc(score: Any, label: Any, mask: Any | None = None) -> float:
    """Area under the ROC curve of ``score`` for a binary ``label`` (ties count half).

    Args:
        score: Scores, any shape (e.g. an epistemic std map).
        label: Boolean (or 0/1) array of the same shape (e.g. an anomaly mask).
        mask: Optional boolean array restricting the voxels compared.

    Returns:
        float in [0, 1]: 1 when every positive scores above every negative,
        0.5 for a score unrelated to the label.

    Raises:
        ValueError: shapes differ, or the selection lacks positives or negatives.
        UserError: the mask selects no voxel.

    Example:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    values = as_map(score, "score")
    truth = np.asarray(label)
    if truth.shape != values.shape:
        raise ValueError(f"Expected label of shape {values.shape}. Received: label.shape={truth.shape}")
    selector = resolve_mask(mask, values.shape)
    values, truth = values[selector], truth[selector].astype(bool)
    positives = int(truth.sum())
    negatives = truth.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            "AUROC needs positive and negative voxels. "
            f"Received: {positives} positives and {negatives} negatives"
        )
    ranks = stats.rankdata(values, method="average")
    rank_sum = float(np.sum(ranks[truth]))
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def is_monotonic(values: Any, direction: str = "increasing", *, strict: bool = True) -> bool:
    """Whether a sweep moves in the expected direction at every step.

    Args:
        values: 1-D sequence of at least 2 finite values, in sweep order.
        direction: ``"increasing"`` or ``"decreasing"``.
        strict: Require every step to change (default True); otherwise equal
            neighbours are allowed.

    Returns:
        bool.

    Raises:
        ValueError: unknown direction, fewer than 2 values, NaN or inf.

    Example:
        >>> is_monotonic([0.1, 0.2, 0.4]), is_monotonic([3, 2, 2], "decreasing")
        (True, False)
    """
    if direction not in ("increasing", "decreasing"):
        raise ValueError(f"direction must be 'increasing' or 'decreasing'. Received: {direction!r}")
    sequence = as_map(values, "values").reshape(-1)
    if sequence.size < 2:
        raise ValueError(f"A sweep needs at least 2 values. Received: {sequence.size}")
    steps = np.diff(sequence) if direction == "increasing" else -np.diff(sequence)
    return bool(np.all(steps > 0) if strict else np.all(steps >= 0))
