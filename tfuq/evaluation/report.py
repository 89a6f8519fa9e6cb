"""Evaluation outputs of several subjects: metrics.csv, summary.json, plots and report.html.

:func:`write_report` takes the rows and curves of
:func:`tfuq.evaluation.evaluate_subject` and writes, into one folder
(``[EVALUATION] save_csv_dir``)::

    metrics.csv            one row per subject, every metric
    summary.json           mean of every metric over subjects (+ spread, volume-level Spearman)
    calibration.png        calibration curve before/after recalibration (pooled voxels)
    rmse_vs_retained.png   RMSE of retained voxels with the oracle (mean over subjects)
    error_histograms.png   |error| vs epistemic and aleatoric std (Klaser Fig. 3)
    montages/<subject>_montage.png   (written by :func:`write_subject_montage`)
    report.html            all of the above, and the slice viewer of the subjects given
                           as :func:`tfuq.evaluation.viewer.viewer_payload` payloads

Everything is written atomically; nothing is written when an output exists
unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfuq.atomic import atomic_path, write_json, write_text
from tfuq.errors import UserError
from tfuq.evaluation.checks import finite_or_none
from tfuq.evaluation.montage import plot_montage
from tfuq.evaluation.plots import plot_calibration, plot_error_histograms, plot_sparsification
from tfuq.evaluation.report_html import render_report
from tfuq.evaluation.selection import select_metrics
from tfuq.evaluation.subject_metrics import STD_KINDS, WHOLE_IMAGE_SUFFIX, SubjectCurves
from tfuq.evaluation.uq_metrics import spearman
from tfuq.evaluation.viewer import render_viewer
from tfuq.typing import PathLike

__all__ = [
    "REPORT_FILES",
    "SUMMARY_KEYS",
    "pool_curves",
    "summarise",
    "write_metrics_csv",
    "write_report",
    "write_subject_montage",
]

#: Keys summary.json always holds (null when a metric is undefined, e.g. no recalibrator).
SUMMARY_KEYS = (
    "mae",
    "mse",
    "psnr",
    "ssim",
    "nll",
    "calibration_rms_error",
    "calibration_rms_error_recalibrated",
    "coverage_50",
    "coverage_90",
    "coverage_95",
    "sharpness",
    "ause",
)
#: File names written by :func:`write_report` (plots only when curves are given).
REPORT_FILES = {
    "metrics": "metrics.csv",
    "summary": "summary.json",
    "calibration": "calibration.png",
    "sparsification": "rmse_vs_retained.png",
    "histograms": "error_histograms.png",
    "html": "report.html",
}
_MONTAGE_DIR = "montages"


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and spread of every numeric metric over subjects, plus volume-level Spearman.

    Args:
        rows: Rows of :func:`tfuq.evaluation.evaluate_subject`, one per subject.

    Returns:
        dict: ``num_subjects``, ``subjects`` (ids), every numeric metric as its
        mean over subjects ignoring NaN (NaN when undefined for all), every
        key of :data:`SUMMARY_KEYS` (NaN if absent from the rows),
        ``spearman_<kind>_volume`` (and ``..._image``): the Spearman
        correlation over subjects of volume nRMSE with volume nSTD (Zhao's
        volume level; NaN for fewer than 3 subjects), and ``std`` holding
        the standard deviation over subjects of each metric.

    Raises:
        ValueError: no row.
    """
    if not rows:
        raise ValueError("rows is empty. Expected one metrics row per subject.")
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items() if _numeric(v)))
    summary: dict[str, Any] = {
        "num_subjects": len(rows),
        "subjects": [str(row.get("subject", "")) for row in rows],
    }
    spread: dict[str, float] = {}
    for key in keys:
        values = np.array([float(row.get(key, math.nan)) for row in rows])
        finite = values[np.isfinite(values)]
        summary[key] = float(np.mean(finite)) if finite.size else math.nan
        spread[key] = float(np.std(finite)) if finite.size else math.nan
    for key in SUMMARY_KEYS:
        summary.setdefault(key, math.nan)
    for suffix in ("", WHOLE_IMAGE_SUFFIX):
        errors = [float(row.get(f"nrmse{suffix}", math.nan)) for row in rows]
        for kind in STD_KINDS:
            name = f"nstd{suffix}" if kind == "total" else f"nstd_{kind}{suffix}"
            stds = [float(row.get(name, math.nan)) for row in rows]
            value = spearman(errors, stds) if len(rows) >= 3 else math.nan
            summary[f"spearman_{kind}_volume{suffix}"] = value
    summary["std"] = spread
    return summary


def pool_curves(
    curves: Sequence[SubjectCurves], *, max_sample: int = 200_000, seed: int = 0
) -> dict[str, Any]:
    """Combine the curves of several subjects for the report plots.

    The calibration curve is the voxel-weighted mean of the subjects' curves,
    which equals the curve of all voxels pooled (each point is a fraction of
    voxels). Retained-RMSE curves are averaged over subjects. Voxel samples
    are concatenated and, above ``max_sample``, subsampled (seeded).

    Args:
        curves: One :class:`SubjectCurves` per subject, on one fraction grid
            and one calibration grid.
        max_sample: Most voxels kept for the histograms.
        seed: Seed of that subsample.

    Returns:
        dict with ``"calibration"``, ``"sparsification"`` and ``"sample"`` in
        the layout of :class:`SubjectCurves`.

    Raises:
        ValueError: no curves, or grids that differ between subjects.
    """
    if not curves:
        raise ValueError("curves is empty. Expected one SubjectCurves per subject.")
    weights = np.array([c.num_voxels for c in curves], dtype=np.float64)
    expected = curves[0].calibration["expected"]
    fractions = curves[0].sparsification["fractions"]
    for c in curves:
        if (
            c.calibration["expected"].shape != expected.shape
            or c.sparsification["fractions"].shape != fractions.shape
        ):
            raise ValueError(
                f"Subject {c.subject!r} has other curve grids. Expected one grid for all subjects."
            )
    calibration: dict[str, Any] = {
        "expected": expected,
        "observed": np.average([c.calibration["observed"] for c in curves], axis=0, weights=weights),
        "observed_recalibrated": None,
    }
    if all(c.calibration["observed_recalibrated"] is not None for c in curves):
        recalibrated = [c.calibration["observed_recalibrated"] for c in curves]
        calibration["observed_recalibrated"] = np.average(recalibrated, axis=0, weights=weights)
    sparsification = {
        key: np.mean([c.sparsification[key] for c in curves], axis=0) for key in curves[0].sparsification
    }
    sample = {key: np.concatenate([c.sample[key] for c in curves]) for key in curves[0].sample}
    size = next(iter(sample.values())).size
    if size > max_sample:
        chosen = np.sort(np.random.default_rng(seed).choice(size, size=max_sample, replace=False))
        sample = {key: values[chosen] for key, values in sample.items()}
    return {"calibration": calibration, "sparsification": sparsification, "sample": sample}


def write_metrics_csv(path: PathLike, rows: Sequence[Mapping[str, Any]], *, overwrite: bool = False) -> Path:
    """Write one CSV row per subject; columns are every key, ``subject`` first.

    Args:
        path: Destination CSV.
        rows: Metric rows; a key missing from a row is left empty, NaN is
            written as ``nan``.
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    columns = list(dict.fromkeys(["subject", *(k for row in rows for k in row)]))
    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row))
    return Path(path)


def write_subject_montage(
    out_dir: PathLike,
    subject: str,
    *,
    input_image: Any,
    target: Any,
    mean: Any,
    epistemic_std: Any,
    aleatoric_std: Any,
    units: str = "",
    input_units: str = "a.u.",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    affine: Any | None = None,
    overwrite: bool = False,
) -> Path:
    """Montage of input, target, mean, |error|, epistemic and aleatoric std of one subject.

    Args:
        out_dir: The evaluation folder; the PNG goes to
            ``<out_dir>/montages/<subject>_montage.png``.
        subject: Subject id (file name part and title).
        input_image: Input volume (e.g. the MR), 3D.
        target: Ground truth, same shape, target units.
        mean: Predictive mean, same shape.
        epistemic_std: Epistemic std map.
        aleatoric_std: Aleatoric std map.
        units: Target units (e.g. ``"HU"``) for every map but the input.
        input_units: Units of the input. Default ``"a.u."``.
        spacing: Voxel size in mm (aspect ratio of the slices).
        affine: Optional 4x4 affine of the volumes: shown in RAS order with
            its voxel size (see :func:`tfuq.evaluation.plot_montage`).
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    if not subject or any(sep in subject for sep in ("/", "\\")) or subject in {".", ".."}:
        raise UserError(f"subject: {subject!r} is not usable in a file name; expected an id without slashes.")
    y, y_hat = np.asarray(target, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    volumes = {
        "input": input_image,
        "target": y,
        "mean": y_hat,
        "|error|": np.abs(y - y_hat) if y.shape == y_hat.shape else y_hat,
        "epistemic std": epistemic_std,
        "aleatoric std": aleatoric_std,
    }
    unit_map = {name: units for name in volumes}
    unit_map["input"] = input_units
    path = Path(out_dir) / _MONTAGE_DIR / f"{subject}_montage.png"
    return plot_montage(
        path, volumes, units=unit_map, spacing=spacing, affine=affine, title=subject, overwrite=overwrite
    )


def write_report(
    out_dir: PathLike,
    rows: Sequence[Mapping[str, Any]],
    curves: Sequence[SubjectCurves] | None = None,
    *,
    montages: Mapping[str, PathLike] | None = None,
    units: str = "",
    title: str = "tfuq evaluation",
    embed_images: bool = False,
    overwrite: bool = False,
    evaluations: Iterable[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    viewers: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write metrics.csv, summary.json, the plots and report.html into ``out_dir``.

    Args:
        out_dir: Output folder (created if needed).
        rows: One row per subject from :func:`~tfuq.evaluation.evaluate_subject`.
        curves: Matching :class:`SubjectCurves` (``return_curves=True``);
            None skips the three pooled plots.
        montages: Subject -> montage PNG (e.g. from
            :func:`write_subject_montage`), shown in the report.
        units: Target units for labels (e.g. ``"HU"``).
        title: Report title.
        embed_images: Inline every PNG as base64 in report.html (one
            portable file) instead of linking it relatively. Default False.
        overwrite: Replace existing outputs; otherwise an existing output is
            a :class:`~tfuq.errors.UserError` and nothing is written.
        evaluations: Metric groups to report (``[EVALUATION] evaluations``,
            :data:`tfuq.evaluation.selection.METRIC_GROUPS`); the columns of
            the others are left out of metrics.csv and are null in
            summary.json. None: every group.
        extra: More summary.json entries (e.g. ``{"target_units": ...}``).
        viewers: One :func:`tfuq.evaluation.viewer.viewer_payload` per
            subject: report.html gets the interactive slice viewer of them
            (embedded, so the page grows by ~2.4 MB per subject at the
            default budget). None or empty: no viewer.

    Returns:
        dict name -> path of every file written (keys of :data:`REPORT_FILES`).

    Raises:
        UserError: an output exists and ``overwrite`` is False.
        ValueError: no rows.
    """
    folder = Path(out_dir)
    names = ["metrics", "summary", "html"] + (
        ["calibration", "sparsification", "histograms"] if curves else []
    )
    paths = {name: folder / REPORT_FILES[name] for name in names}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: already exists; refusing to overwrite the evaluation outputs.")
    if evaluations is not None:
        rows = [select_metrics(row, evaluations) for row in rows]
    summary = summarise(rows)
    if evaluations is not None:
        kept = select_metrics(summary, evaluations)
        summary = {
            k: (v if k in kept else math.nan) for k, v in summary.items() if k in kept or k in SUMMARY_KEYS
        }
        summary["std"] = select_metrics(summary.get("std", {}), evaluations)
    summary["units"] = units
    summary.update(extra or {})
    write_metrics_csv(paths["metrics"], rows, overwrite=overwrite)
    write_json(paths["summary"], finite_or_none(summary), overwrite=overwrite)
    if curves:
        pooled = pool_curves(curves)
        cal = pooled["calibration"]
        plot_calibration(
            paths["calibration"],
            cal["expected"],
            cal["observed"],
            cal["observed_recalibrated"],
            title="Calibration (all test voxels)",
            overwrite=overwrite,
        )
        sp = pooled["sparsification"]
        plot_sparsification(
            paths["sparsification"],
            sp["fractions"],
            {k: sp[k] for k in STD_KINDS},
            sp["oracle"],
            units=units,
            title="RMSE of retained voxels (mean over subjects)",
            overwrite=overwrite,
        )
        sample = pooled["sample"]
        plot_error_histograms(
            paths["histograms"],
            sample["abs_error"],
            {"epistemic": sample["epistemic"], "aleatoric": sample["aleatoric"]},
            units=units,
            overwrite=overwrite,
        )
    plots = {name: paths[name] for name in ("calibration", "sparsification", "histograms") if name in paths}
    montage_paths = {subject: Path(p) for subject, p in (montages or {}).items()}
    html = render_report(
        folder,
        summary,
        rows,
        plots,
        montage_paths,
        title=title,
        units=units,
        embed_images=embed_images,
        links={"metrics.csv": paths["metrics"], "summary.json": paths["summary"]},
        viewer=render_viewer(viewers or []),
    )
    write_text(paths["html"], html, overwrite=overwrite)
    return paths
