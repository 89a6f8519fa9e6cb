"""Evaluation plots as PNG files: calibration, sparsification, error-uncertainty histograms.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas
(no pyplot state, no display needed) and written atomically. Every function
returns the path written.

Reference:
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis"
    (calibration plot before/after recalibration, Fig. 7; RMSE versus
    retained voxels, Fig. 5).
    Klaser et al., "Uncertainty-aware multi-resolution whole-body MR to CT
    synthesis", Fig. 3 (joint histograms of error and uncertainty with the
    mean error per uncertainty level).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from tfuq.atomic import atomic_path
from tfuq.evaluation.checks import as_map
from tfuq.typing import PathLike

__all__ = [
    "DPI",
    "new_figure",
    "plot_calibration",
    "plot_error_histograms",
    "plot_sparsification",
    "save_figure",
]

#: Resolution of every PNG (pixels per inch); a figure of w x h inches is w*DPI x h*DPI pixels.
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width x height`` inches on an Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically.

    Args:
        fig: A figure from :func:`new_figure`.
        path: Destination ``.png``.
        overwrite: Replace an existing file. Default False.

    Returns:
        The path written.

    Raises:
        UserError: the file exists and ``overwrite`` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def plot_calibration(
    path: PathLike,
    expected: Any,
    observed: Any,
    observed_recalibrated: Any | None = None,
    *,
    title: str = "Calibration",
    overwrite: bool = False,
) -> Path:
    """Calibration plot: observed against expected proportion, before and after recalibration.

    Args:
        path: Destination PNG (5 x 5 inches).
        expected: Expected proportions (x), e.g. ``linspace(0, 1, 100)``.
        observed: Observed proportions before recalibration, same length.
        observed_recalibrated: Observed proportions after recalibration, or None.
        title: Figure title.
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: lengths differ or values are not finite.
    """
    x = as_map(expected, "expected").reshape(-1)
    curves = {"before recalibration": as_map(observed, "observed").reshape(-1)}
    if observed_recalibrated is not None:
        curves["after recalibration"] = as_map(observed_recalibrated, "observed_recalibrated").reshape(-1)
    for name, y in curves.items():
        if y.shape != x.shape:
            raise ValueError(f"Expected {x.size} proportions {name}. Received: {y.size}")
    fig = new_figure(5.0, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="ideal")
    for (name, y), color in zip(curves.items(), ("tab:red", "tab:blue")):
        rmse = float(np.sqrt(np.mean(np.square(y - x))))
        ax.plot(x, y, color=color, label=f"{name} (RMS error {rmse:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=title)
    ax.set_xlabel("expected proportion (predicted cdf level)")
    ax.set_ylabel("observed proportion of truths below the quantile")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return save_figure(fig, path, overwrite=overwrite)


def plot_sparsification(
    path: PathLike,
    fractions: Any,
    curves: Mapping[str, Any],
    oracle: Any,
    *,
    units: str = "",
    title: str = "RMSE of the retained voxels",
    overwrite: bool = False,
) -> Path:
    """RMSE versus retained fraction when the most uncertain voxels are removed, with the oracle.

    Args:
        path: Destination PNG (6 x 4.5 inches).
        fractions: Retained fractions (x axis).
        curves: Label -> retained-RMSE curve (e.g. epistemic, aleatoric, total).
        oracle: Curve when voxels are removed by ``|error|`` itself.
        units: Target units for the axis label, e.g. ``"HU"``.
        title: Figure title.
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    x = as_map(fractions, "fractions").reshape(-1)
    best = as_map(oracle, "oracle").reshape(-1)
    if best.shape != x.shape:
        raise ValueError(f"Expected an oracle curve of {x.size} values. Received: {best.size}")
    fig = new_figure(6.0, 4.5)
    ax = fig.add_subplot()
    for label, curve in curves.items():
        y = as_map(curve, label).reshape(-1)
        if y.shape != x.shape:
            raise ValueError(f"Expected the {label} curve with {x.size} values. Received: {y.size}")
        gap = y - best
        area = float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(x)))
        ax.plot(x, y, label=f"ranked by {label} std (AUSE {area:.3g})")
    ax.plot(x, best, color="k", linestyle="--", label="oracle (ranked by |error|)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("fraction of voxels retained (most uncertain removed)")
    ax.set_ylabel(f"RMSE of retained voxels{f' [{units}]' if units else ''}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return save_figure(fig, path, overwrite=overwrite)


def _mean_per_bin(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    counts = np.bincount(index, minlength=edges.size - 1)
    sums = np.bincount(index, weights=y, minlength=edges.size - 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = counts > 0
    return centres[keep], sums[keep] / counts[keep]


def plot_error_histograms(
    path: PathLike,
    abs_error: Any,
    stds: Mapping[str, Any],
    *,
    units: str = "",
    bins: int = 64,
    quantile: float = 0.999,
    overwrite: bool = False,
) -> Path:
    """Joint histograms of ``|error|`` against each std, log-scaled counts, with the mean-error line.

    One panel per entry of ``stds`` (Klaser et al. Fig. 3: epistemic and
    heteroscedastic). Counts are shown on a base-10 log colour scale; the
    red line is the mean ``|error|`` of the voxels in each std bin. Both axes
    span 0 to the ``quantile`` of their values (outliers beyond are clipped
    into the last bin).

    Args:
        path: Destination PNG (5 inches wide per panel, 4.5 high).
        abs_error: ``|y - y_hat|`` of the voxels, 1-D.
        stds: Label -> std of the same voxels (e.g. ``{"epistemic": ...,
            "aleatoric": ...}``).
        units: Target units for the axis labels.
        bins: Bins per axis. Default 64.
        quantile: Upper axis limit as a quantile of the values. Default 0.999.
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: sizes differ, no panel, non-finite values.
    """
    error = as_map(abs_error, "abs_error").reshape(-1)
    if not stds:
        raise ValueError("stds is empty. Expected at least one std to plot against.")
    suffix = f" [{units}]" if units else ""
    fig = new_figure(5.0 * len(stds), 4.5)
    axes = fig.subplots(1, len(stds), squeeze=False)[0]
    y_top = max(float(np.quantile(error, quantile)), np.finfo(float).tiny)
    for ax, (label, values) in zip(axes, stds.items()):
        std = as_map(values, label).reshape(-1)
        if std.shape != error.shape:
            raise ValueError(f"Expected {error.size} {label} std values. Received: {std.size}")
        x_top = max(float(np.quantile(std, quantile)), np.finfo(float).tiny)
        x_edges = np.linspace(0.0, x_top, bins + 1)
        y_edges = np.linspace(0.0, y_top, bins + 1)
        counts, _, _ = np.histogram2d(np.minimum(std, x_top), np.minimum(error, y_top), [x_edges, y_edges])
        image = ax.pcolormesh(
            x_edges, y_edges, np.where(counts > 0, counts, np.nan).T, norm=LogNorm(), cmap="viridis"
        )
        centres, mean_error = _mean_per_bin(std, error, x_edges)
        ax.plot(
            centres, np.minimum(mean_error, y_top), color="red", linewidth=2, marker=".", label="mean |error|"
        )
        ax.set_xlabel(f"{label} std{suffix}")
        ax.set_ylabel(f"|error|{suffix}")
        ax.set_title(f"|error| vs {label} std")
        ax.legend(loc="upper left", fontsize="small")
        fig.colorbar(image, ax=ax, label="voxels per bin (log10 scale)")
    return save_figure(fig, path, overwrite=overwrite)
