"""Every evaluation metric of one subject, inside the mask and over the whole image.

:func:`evaluate_subject` takes the maps ``tfuq infer`` writes (mean and std
maps in target units), the ground truth and a mask, and returns one flat
dict of numbers: a row of ``metrics.csv``. With ``return_curves=True`` it
also returns the curves and a voxel sample the report plots.

Metric names (the mask region; the whole image adds the suffix ``_image``):

* image: ``mae``, ``mse``, ``rmse``, ``psnr``, ``ssim``, ``nrmse``,
  ``nstd`` (of the total std), ``nstd_epistemic``, ``nstd_aleatoric``;
* predictive distribution: ``nll``, ``calibration_rms_error``,
  ``miscalibration_area``, ``sharpness``, ``coverage_50``, ``coverage_90``,
  ``coverage_95``, each also ``*_recalibrated`` (NaN without a recalibrator);
* uncertainty ranking: ``ause`` (total std), ``ause_epistemic``,
  ``ause_aleatoric``, ``spearman_<kind>_voxel`` and ``spearman_<kind>_slice``
  for kind in epistemic, aleatoric, total (Spearman correlation of
  ``|error|`` with the std per voxel, and of nRMSE with nSTD per slice).

With a ``lesion`` map (e.g. a tumour segmentation), the row also holds
:data:`tfuq.evaluation.lesion.LESION_KEYS`: mean std, std ratio and std
AUROC inside the lesion against the rest of the mask, and the MAE on both
sides (:func:`tfuq.evaluation.lesion.lesion_metrics`).

The volume-level Spearman correlation needs several subjects and is added by
:func:`tfuq.evaluation.summarise`.

Reference:
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis"
    (metrics at voxel, slice and volume level; calibration; RMSE versus
    retained voxels).
    Klaser et al., "Uncertainty-aware multi-resolution whole-body MR to CT
    synthesis" (error against epistemic and heteroscedastic std).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfuq.calibration import CENTRAL_COVERAGES, IsotonicRecalibrator, SigmaScaling
from tfuq.evaluation import image_metrics as im
from tfuq.evaluation import uq_metrics as uq
from tfuq.evaluation.checks import resolve_mask, same_shape_maps
from tfuq.evaluation.lesion import lesion_metrics
from tfuq.evaluation.predictive_metrics import gaussian_params, predictive_scores, select_params

__all__ = [
    "STD_KINDS",
    "WHOLE_IMAGE_SUFFIX",
    "MetricSettings",
    "SubjectCurves",
    "evaluate_subject",
]

#: Uncertainty maps compared with the error, in this order.
STD_KINDS = ("epistemic", "aleatoric", "total")
#: Suffix of the metrics computed over every voxel of the image.
WHOLE_IMAGE_SUFFIX = "_image"


@dataclasses.dataclass(frozen=True)
class SubjectCurves:
    """Curves and a voxel sample of one subject (inside the mask), for the report plots.

    Attributes:
        subject: Subject id.
        num_voxels: Voxels inside the mask (the weight of this subject's
            calibration curve when curves are pooled).
        calibration: ``"expected"``, ``"observed"`` and
            ``"observed_recalibrated"`` (None without a recalibrator) arrays.
        sparsification: ``"fractions"``, ``"oracle"`` and one retained-RMSE
            curve per kind in :data:`STD_KINDS`.
        sample: ``"abs_error"`` and one std array per kind, for the same
            randomly chosen voxels (seeded).
    """

    subject: str
    num_voxels: int
    calibration: dict[str, Any]
    sparsification: dict[str, np.ndarray]
    sample: dict[str, np.ndarray]


def _region_metrics(
    maps: dict[str, np.ndarray],
    selector: np.ndarray,
    predictive: dict[str, Any],
    *,
    data_range: float | None,
    slice_axis: int,
    fractions: np.ndarray,
) -> tuple[dict[str, float], dict[str, Any]]:
    y, y_hat = maps["target"], maps["mean"]
    error = y - y_hat
    out: dict[str, float] = {
        "mae": im.mae(y, y_hat, selector),
        "mse": im.mse(y, y_hat, selector),
        "rmse": im.rmse(y, y_hat, selector),
        "psnr": im.psnr(y, y_hat, selector, data_range=data_range),
        # measured from the truth's minimum in the region (image_metrics notes: SSIM needs an origin)
        "ssim": im.ssim(y, y_hat, selector, data_range=data_range, floor=float(np.min(y[selector]))),
        "nrmse": im.nrmse(y, y_hat, selector),
        "nstd": im.nstd(maps["total"], selector),
        "nstd_epistemic": im.nstd(maps["epistemic"], selector),
        "nstd_aleatoric": im.nstd(maps["aleatoric"], selector),
    }
    scores, calibration = predictive_scores(
        predictive["family"],
        select_params(predictive["params"], selector, mixture=predictive["mixture"]),
        y[selector],
        mixture=predictive["mixture"],
        recalibrator=predictive["recalibrator"],
        coverages=predictive["coverages"],
        num_bins=predictive["num_bins"],
        intervals={c: (lo[selector], hi[selector]) for c, (lo, hi) in predictive["intervals"].items()},
    )
    out.update(scores)
    oracle = uq.retained_rmse_curve(error, np.abs(error), selector, fractions=fractions)
    sparsification: dict[str, np.ndarray] = {"fractions": fractions, "oracle": oracle}
    for kind in STD_KINDS:
        curve = uq.retained_rmse_curve(error, maps[kind], selector, fractions=fractions)
        gap = curve - oracle
        area = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(fractions))) if gap.size > 1 else 0.0
        out["ause" if kind == "total" else f"ause_{kind}"] = area
        sparsification[kind] = curve
    for level in ("voxel", "slice"):
        pairs = {
            kind: uq.error_uncertainty_pairs(y, y_hat, maps[kind], selector, level=level, axis=slice_axis)
            for kind in STD_KINDS
        }
        # The errors of one level are the same for every kind: rank them once.
        errors = pairs[STD_KINDS[0]][0]
        if errors.size < 2:
            correlations = dict.fromkeys(STD_KINDS, float("nan"))
        else:
            correlations = uq.spearman_many(errors, {kind: pair[1] for kind, pair in pairs.items()})
        out.update({f"spearman_{kind}_{level}": correlations[kind] for kind in STD_KINDS})
    return out, {"calibration": calibration, "sparsification": sparsification}


def _full_intervals(
    intervals: Mapping[float, tuple[Any, Any]] | None, shape: tuple[int, ...]
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for c, (lower, upper) in (intervals or {}).items():
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        if lo.shape != shape or hi.shape != shape:
            raise ValueError(
                f"Interval maps must have the target's shape {shape}. "
                f"Received: coverage {c} with shapes {lo.shape} and {hi.shape}"
            )
        out[float(c)] = (lo, hi)
    return out


@dataclasses.dataclass(frozen=True)
class MetricSettings:
    """How :func:`evaluate_subject` computes its metrics (what stays the same for a whole cohort).

    Attributes:
        family: Predictive family of the ``params`` given. Default ``"normal"``.
        mixture: Axis 0 of ``params`` holds T MC samples.
        data_range: R of PSNR and SSIM; default None: the target's range
            inside each region (``max - min``).
        coverages: Central-interval coverages. Default (0.5, 0.9, 0.95).
        num_bins: Calibration-curve grid. Default 100.
        slice_axis: Axis of the slices for the slice-level Spearman
            correlation. Default -1 (axial for RAS/LPS volumes).
        fractions: Retained fractions of the sparsification curves.
        whole_image: Also compute every metric over the whole image (keys
            suffixed ``_image``). Default True.
        sample_size: Voxels kept (at random, seeded) in the curves' sample.
        seed: Seed of that sample.
    """

    family: str = "normal"
    mixture: bool = False
    data_range: float | None = None
    coverages: tuple[float, ...] = CENTRAL_COVERAGES
    num_bins: int = 100
    slice_axis: int = -1
    fractions: tuple[float, ...] = tuple(float(f) for f in uq.DEFAULT_FRACTIONS)
    whole_image: bool = True
    sample_size: int = 100_000
    seed: int = 0


def evaluate_subject(
    mean: Any,
    target: Any,
    epistemic_std: Any,
    aleatoric_std: Any,
    total_std: Any | None = None,
    mask: Any | None = None,
    *,
    lesion: Any | None = None,
    subject: str = "",
    params: Any | None = None,
    intervals: Mapping[float, tuple[Any, Any]] | None = None,
    recalibrator: IsotonicRecalibrator | SigmaScaling | None = None,
    settings: MetricSettings = MetricSettings(),
    return_curves: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], SubjectCurves]:
    """All metrics of one subject (a row of ``metrics.csv``).

    Args:
        mean: Predictive mean in target units, shape ``s`` (3D volume).
        target: Ground truth, shape ``s``.
        epistemic_std: Epistemic std map, shape ``s``.
        aleatoric_std: Aleatoric std map, shape ``s``.
        total_std: Total std map; default ``sqrt(epistemic^2 + aleatoric^2)``.
        mask: Boolean body/brain mask of shape ``s``; None: every voxel.
        lesion: Optional lesion label map of shape ``s`` (non-zero =
            lesion); adds the lesion keys (inside the mask only).
        subject: Subject id stored in the row as ``"subject"``.
        params: Head channels of the predictive distribution in target units,
            ``(*s, P)`` or ``(T, *s, P)`` with ``settings.mixture`` (e.g.
            ``unconstrain("generalized_normal", mean, alpha, beta)``), of
            ``settings.family``. Default None: the moment-matched normal
            ``N(mean, total_std^2)`` (the family must then be ``"normal"``).
        intervals: Optional ``coverage -> (lower, upper)`` maps of shape
            ``s`` (e.g. ``_lower95``/``_upper95``); their coverage replaces
            that of the predictive distribution.
        recalibrator: Fitted isotonic map or sigma scaling (adds the
            ``*_recalibrated`` metrics).
        settings: The :class:`MetricSettings`.
        return_curves: Also return a :class:`SubjectCurves`.

    Returns:
        dict with ``"subject"``, ``"num_voxels"`` (inside the mask) and the
        metrics listed in the module docstring (the lesion keys only with
        ``lesion``); with ``return_curves``, a
        tuple ``(metrics, curves)``.

    Raises:
        ValueError: shapes differ, NaN/inf in a map, negative std, a family
            other than normal without ``params``.
        UserError: the mask selects no voxel.

    Example:
        >>> row = evaluate_subject(mean, ct, epi, ale, mask=body, subject="p01")
        >>> row["mae"], row["coverage_90"], row["ause"]
    """
    maps = same_shape_maps(mean=mean, target=target, epistemic=epistemic_std, aleatoric=aleatoric_std)
    if total_std is None:
        maps["total"] = np.sqrt(np.square(maps["epistemic"]) + np.square(maps["aleatoric"]))
    else:
        maps.update(same_shape_maps(target=maps["target"], total=total_std))
    for kind in STD_KINDS:
        if maps[kind].min() < 0:
            raise ValueError(f"{kind}_std must be >= 0. Received: min={maps[kind].min()!r}")
    family = settings.family
    if params is None:
        if family != "normal":
            raise ValueError(f"Without params the predictive family is 'normal'. Received: family={family!r}")
        params = gaussian_params(maps["mean"], maps["total"])
    fraction_grid = np.asarray(settings.fractions, dtype=np.float64)
    shape = maps["target"].shape
    selector = resolve_mask(mask, shape)
    predictive = {
        "family": family,
        "params": np.asarray(params),
        "mixture": settings.mixture,
        "recalibrator": recalibrator,
        "coverages": tuple(settings.coverages),
        "num_bins": settings.num_bins,
        "intervals": _full_intervals(intervals, shape),
    }
    options = {
        "data_range": settings.data_range,
        "slice_axis": settings.slice_axis,
        "fractions": fraction_grid,
    }
    inside, curves = _region_metrics(maps, selector, predictive, **options)
    row: dict[str, Any] = {"subject": subject, "num_voxels": int(selector.sum()), **inside}
    if settings.whole_image:
        if mask is None:
            image = dict(inside)
        else:
            image, _ = _region_metrics(maps, np.ones(shape, dtype=bool), predictive, **options)
        row.update({f"{key}{WHOLE_IMAGE_SUFFIX}": value for key, value in image.items()})
    if lesion is not None:
        row.update(
            lesion_metrics(
                maps["mean"],
                maps["target"],
                maps["epistemic"],
                maps["aleatoric"],
                lesion,
                selector,
                total_std=maps["total"],
            )
        )
    if not return_curves:
        return row
    rng = np.random.default_rng(settings.seed)
    count = int(selector.sum())
    chosen = np.sort(rng.choice(count, size=min(count, int(settings.sample_size)), replace=False))
    sample = {"abs_error": np.abs(maps["target"] - maps["mean"])[selector][chosen]}
    sample.update({kind: maps[kind][selector][chosen] for kind in STD_KINDS})
    return row, SubjectCurves(subject, count, curves["calibration"], curves["sparsification"], sample)
