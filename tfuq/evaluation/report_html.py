"""report.html: one self-contained page with the summary, per-subject metrics and every plot.

The page uses inline CSS only and, when given one, the inline script of the
slice viewer (:func:`tfuq.evaluation.viewer.render_viewer`); nothing is
loaded from the network. Images are linked relative to the report's folder,
or embedded as base64 data URIs when asked, so the page works when the
folder is copied or served as is.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["HEADLINE_METRICS", "LESION_COLUMNS", "render_report"]

#: Metrics shown in the summary and per-subject tables, in this order (all are in metrics.csv).
HEADLINE_METRICS = (
    ("mae", "MAE", True),
    ("rmse", "RMSE", True),
    ("psnr", "PSNR [dB]", False),
    ("ssim", "SSIM", False),
    ("pearson", "Pearson r (prediction, truth)", False),
    ("baseline_constant_mae", "MAE of the best constant (truth's median)", True),
    ("mae_over_constant", "MAE / best constant's MAE", False),
    ("baseline_linear_mae", "MAE of the best linear map of the input (uses the truth)", True),
    ("baseline_constant_ssim", "SSIM of the best constant", False),
    ("baseline_linear_ssim", "SSIM of the best linear map", False),
    ("nll", "NLL [nats]", False),
    ("calibration_rms_error", "calibration RMS error", False),
    ("calibration_rms_error_recalibrated", "calibration RMS error (recalibrated)", False),
    ("miscalibration_area", "miscalibration area", False),
    ("coverage_50", "coverage 50 %", False),
    ("coverage_90", "coverage 90 %", False),
    ("coverage_95", "coverage 95 %", False),
    ("coverage_90_recalibrated", "coverage 90 % (recalibrated)", False),
    ("sharpness", "sharpness", True),
    ("ause", "AUSE (total std)", True),
    ("spearman_epistemic_voxel", "Spearman |error|-epistemic (voxel)", False),
    ("spearman_aleatoric_voxel", "Spearman |error|-aleatoric (voxel)", False),
    ("spearman_total_slice", "Spearman nRMSE-nSTD (slice)", False),
)
#: Columns of the lesion table (``<kind>`` in epistemic, aleatoric, total), shown when a row has them.
LESION_COLUMNS = (
    ("lesion_{kind}_std", "mean std in lesion", True),
    ("nonlesion_{kind}_std", "mean std in rest of mask", True),
    ("lesion_{kind}_ratio", "ratio lesion / rest", False),
    ("lesion_{kind}_auroc", "AUROC lesion vs rest", False),
)
_PLOT_CAPTIONS = {
    "calibration": (
        "Calibration plot: observed against expected proportion, before and after recalibration "
        "(Zhao et al. Fig. 7)."
    ),
    "sparsification": (
        "RMSE of the voxels kept when the most uncertain are removed, with the oracle that removes by "
        "|error|; the area between a curve and the oracle is the AUSE (Zhao et al. Fig. 5)."
    ),
    "histograms": (
        "Joint histograms of |error| against epistemic and aleatoric std, log-scaled counts; the red "
        "line is the mean |error| per std bin (Klaser et al. Fig. 3)."
    ),
}
_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1600px}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#eee}td:first-child,th:first-child{text-align:left}"
    "figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}"
    "figcaption{color:#444;font-size:90%}"
)


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isnan(number):
            return "&ndash;"
        if math.isinf(number):
            return "&infin;" if number > 0 else "&minus;&infin;"
        return f"{number:.4g}"
    return html.escape(str(value))


def _image_source(path: Path, folder: Path, embed: bool) -> str:
    if embed:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"data:image/png;base64,{data}"
    return html.escape(Path(os.path.relpath(path, folder)).as_posix(), quote=True)


def _figure(path: Path, folder: Path, caption: str, embed: bool) -> str:
    source = _image_source(path, folder, embed)
    alt = html.escape(path.name, quote=True)
    return f'<figure><img src="{source}" alt="{alt}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _label(label: str, with_units: bool, units: str) -> str:
    return f"{label} [{units}]" if with_units and units else label


def _lesion_table(rows: Sequence[Mapping[str, Any]], units: str) -> list[str]:
    """The lesion-against-rest-of-mask table, one row per subject and std kind (empty without lesions)."""
    with_lesion = [row for row in rows if "lesion_num_voxels" in row]
    if not with_lesion:
        return []
    parts = [
        "<h2>Lesion against the rest of the mask</h2>",
        "<p>Uncertainty inside the lesion section (e.g. a tumour segmentation) against the rest of the "
        "mask: a model that knows what it has not seen has a ratio above 1 and an AUROC above 0.5, "
        "above all for the epistemic std.</p>",
        "<table><tr><th>subject</th><th>std</th>",
        *(f"<th>{html.escape(_label(label, u, units))}</th>" for _, label, u in LESION_COLUMNS),
        "</tr>",
    ]
    for row in with_lesion:
        subject = html.escape(str(row.get("subject", "")))
        for kind in ("epistemic", "aleatoric", "total"):
            cells = "".join(
                f"<td>{_format(row.get(key.format(kind=kind), math.nan))}</td>"
                for key, _, _ in LESION_COLUMNS
            )
            parts.append(f"<tr><td>{subject}</td><td>{kind}</td>{cells}</tr>")
    parts.append(
        "</table><table><tr><th>subject</th><th>lesion voxels</th><th>rest-of-mask voxels</th>"
        f"<th>{html.escape(_label('MAE in lesion', True, units))}</th>"
        f"<th>{html.escape(_label('MAE in rest of mask', True, units))}</th></tr>"
    )
    for row in with_lesion:
        cells = "".join(
            f"<td>{_format(row.get(key, math.nan))}</td>"
            for key in ("lesion_num_voxels", "nonlesion_num_voxels", "lesion_mae", "nonlesion_mae")
        )
        parts.append(f"<tr><td>{html.escape(str(row.get('subject', '')))}</td>{cells}</tr>")
    parts.append("</table>")
    return parts


def render_report(
    folder: Path,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    plots: Mapping[str, Path],
    montages: Mapping[str, Path],
    *,
    title: str = "tfuq evaluation",
    units: str = "",
    embed_images: bool = False,
    links: Mapping[str, Path] | None = None,
    viewer: str = "",
) -> str:
    """HTML text of the evaluation report.

    Args:
        folder: Folder report.html will be written to (links are relative to it).
        summary: Output of :func:`tfuq.evaluation.summarise` (with ``std``).
        rows: Per-subject metric rows.
        plots: Plot name (``calibration``, ``sparsification``,
            ``histograms``) -> PNG path.
        montages: Subject -> montage PNG path.
        title: Page title.
        units: Target units shown in column labels.
        embed_images: Inline PNGs as base64 instead of relative links.
        links: Text -> file path of extra downloads (metrics.csv, summary.json).
        viewer: HTML fragment of the slice viewer
            (:func:`tfuq.evaluation.viewer.render_viewer`), shown before the
            montages; empty for none.

    Returns:
        The HTML document as a string.

    Raises:
        FileNotFoundError: ``embed_images`` and a PNG is missing.
    """
    spread = summary.get("std", {})
    present = [(k, label, u) for k, label, u in HEADLINE_METRICS if k in summary]
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{int(summary.get('num_subjects', len(rows)))} subject(s); metrics inside the mask "
        "(whole-image values are in metrics.csv with the suffix <code>_image</code>).</p>",
    ]
    calibration = summary.get("calibration") or {}
    if calibration.get("in_sample"):
        parts.append(
            '<p style="color:#b00"><b>Warning:</b> the recalibration was fitted on Training subjects '
            "(in-sample, <code>[CALIBRATION] dataset = Training</code>): calibration and coverage after "
            "recalibration are optimistic for new subjects.</p>"
        )
    elif calibration.get("subjects"):
        parts.append(
            f"<p>Recalibration fitted on the held-out {html.escape(str(calibration.get('dataset')))} "
            f"subject(s) {html.escape(', '.join(calibration['subjects']))}.</p>"
        )
    if links:
        items = " &middot; ".join(
            f'<a href="{_image_source(p, folder, False)}">{html.escape(text)}</a>'
            for text, p in links.items()
        )
        parts.append(f"<p>Files: {items}</p>")
    parts.append(
        "<h2>Summary (mean &plusmn; std over subjects)</h2><table><tr><th>metric</th><th>value</th></tr>"
    )
    for key, label, with_units in present:
        value = _format(summary.get(key))
        deviation = spread.get(key)
        extra = f" &plusmn; {_format(deviation)}" if deviation is not None and len(rows) > 1 else ""
        parts.append(
            f"<tr><td>{html.escape(_label(label, with_units, units))}</td><td>{value}{extra}</td></tr>"
        )
    for kind in ("epistemic", "aleatoric", "total"):
        key = f"spearman_{kind}_volume"
        if key in summary:
            label = f"Spearman nRMSE-nSTD {kind} (volume, over subjects)"
            parts.append(f"<tr><td>{html.escape(label)}</td><td>{_format(summary[key])}</td></tr>")
    parts.append("</table><h2>Per subject</h2><table><tr><th>subject</th>")
    parts.extend(f"<th>{html.escape(_label(label, u, units))}</th>" for _, label, u in present)
    parts.append("</tr>")
    for row in rows:
        cells = "".join(f"<td>{_format(row.get(key, math.nan))}</td>" for key, _, _ in present)
        parts.append(f"<tr><td>{html.escape(str(row.get('subject', '')))}</td>{cells}</tr>")
    parts.append("</table>")
    parts.extend(_lesion_table(rows, units))
    if plots:
        parts.append("<h2>Uncertainty quality</h2>")
        for name, path in plots.items():
            parts.append(_figure(path, folder, _PLOT_CAPTIONS.get(name, name), embed_images))
    if viewer:
        parts.extend(["<h2>Slice viewer</h2>", viewer])
    if montages:
        parts.append("<h2>Subjects</h2>")
        for subject, path in montages.items():
            caption = (
                f"{subject}: input, target, mean, |error|, epistemic and aleatoric std on three mid slices."
            )
            parts.append(_figure(path, folder, caption, embed_images))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
