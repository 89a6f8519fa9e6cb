"""validate_uq.json and its plots: the sweeps, the anomaly check and aleatoric std against true noise.

Files written by :func:`write_validation` into one folder::

    validate_uq.json          :func:`tfuq.evaluation.validation_summary` (NaN as null)
    uq_sweeps.png             mean aleatoric std vs input noise; mean epistemic std vs training size
    anomaly_epistemic.png     mean epistemic std inside vs outside each synthetic anomaly
    aleatoric_vs_noise.png    joint histogram of estimated aleatoric std vs true noise std (if given)

Reference:
    Reinhold et al., "Validating uncertainty in medical image translation",
    ISBI 2020, arXiv:2002.04639 (Fig. 1 and Fig. 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm

from tfuq.atomic import write_json
from tfuq.errors import UserError
from tfuq.evaluation.checks import as_map, finite_or_none
from tfuq.evaluation.plots import new_figure, save_figure
from tfuq.typing import PathLike

__all__ = [
    "VALIDATION_FILES",
    "plot_aleatoric_vs_noise",
    "plot_anomaly",
    "plot_sweeps",
    "write_validation",
]

#: File names written by :func:`write_validation`.
VALIDATION_FILES = {
    "json": "validate_uq.json",
    "sweeps": "uq_sweeps.png",
    "anomaly": "anomaly_epistemic.png",
    "noise": "aleatoric_vs_noise.png",
}


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "not run"
    return "expected direction" if ok else "NOT the expected direction"


def plot_sweeps(
    path: PathLike, summary: Mapping[str, Any], *, units: str = "", overwrite: bool = False
) -> Path:
    """Two panels: aleatoric std against input noise, epistemic std against training size.

    Args:
        path: Destination PNG (10 x 4 inches).
        summary: Output of :func:`tfuq.evaluation.validation_summary`.
        units: Target units (std axes); input noise is in normalised input units.
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    suffix = f" [{units}]" if units else ""
    fig = new_figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    noise = summary["noise_sweep"]
    left.plot(noise["levels"], noise["mean_aleatoric_std"], "o-", label="inside the mask")
    if "mean_aleatoric_std_image" in noise:
        left.plot(noise["levels"], noise["mean_aleatoric_std_image"], "s--", label="whole image")
    left.set_xlabel("std of the Gaussian noise added to the input [normalised input units]")
    left.set_ylabel(f"mean aleatoric std{suffix}")
    left.set_title(f"Input noise sweep: {_verdict(summary['noise_sweep_monotonic'])}")
    left.legend(fontsize="small")
    size = summary["size_sweep"]
    right.plot(size["sizes"], size["mean_epistemic_std"], "o-", color="tab:purple", label="held-out subjects")
    if size.get("training_mean_epistemic_std"):  # the same models on subjects they were trained on
        right.plot(
            size["sizes"],
            size["training_mean_epistemic_std"],
            "s--",
            color="tab:olive",
            label="its own training subject(s)",
        )
    shown = [(n, c) for n, c in zip(size["sizes"], size.get("ci95") or [], strict=False) if c is not None]
    if shown:  # Reinhold Fig. 1: bootstrapped 95 % intervals
        right.fill_between(
            [n for n, _ in shown],
            [c[0] for _, c in shown],
            [c[1] for _, c in shown],
            color="tab:purple",
            alpha=0.2,
            label=f"95 % interval over {size.get('ci95_over') or 'models'}",
        )
    models = [m for m in size.get("models", []) if m.get("mean_epistemic_std")]
    if len(models) > len(size["sizes"]):  # repeats: each model's own value
        right.plot(
            [m["size"] for m in models],
            [float(np.mean(list(m["mean_epistemic_std"].values()))) for m in models],
            "x",
            color="0.4",
            label="each model",
        )
    if shown or len(models) > len(size["sizes"]) or size.get("training_mean_epistemic_std"):
        right.legend(fontsize="small")
    right.set_xlabel("training subjects")
    right.set_ylabel(f"mean epistemic std (mean over repeats){suffix}")
    right.set_title(f"Training-size sweep: {_verdict(summary['size_sweep_monotonic'])}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save_figure(fig, path, overwrite=overwrite)


def plot_anomaly(
    path: PathLike, summary: Mapping[str, Any], *, units: str = "", overwrite: bool = False
) -> Path:
    """Mean epistemic std inside and outside each synthetic anomaly (paired points).

    Args:
        path: Destination PNG (5 x 4.5 inches).
        summary: Output of :func:`tfuq.evaluation.validation_summary` with trials.
        units: Target units.
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: no anomaly trial.
    """
    trials = summary["anomaly"]["trials"]
    if not trials:
        raise ValueError("The summary holds no anomaly trial. Expected at least one.")
    fig = new_figure(5.0, 4.5)
    ax = fig.add_subplot()
    for trial in trials:
        ax.plot([0, 1], [trial["outside"], trial["inside"]], "o-", color="tab:blue", alpha=0.6)
    ax.set_xticks([0, 1], ["outside the anomaly", "inside the anomaly"])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylabel(f"mean epistemic std{f' [{units}]' if units else ''}")
    ax.set_title(
        f"{len(trials)} anomalies: AUROC {summary['anomaly_auroc']:.3f}, ratio {summary['anomaly_ratio']:.2f}"
    )
    ax.grid(alpha=0.3)
    return save_figure(fig, path, overwrite=overwrite)


def plot_aleatoric_vs_noise(
    path: PathLike,
    aleatoric_std: Any,
    noise_std: Any,
    *,
    units: str = "",
    bins: int = 64,
    overwrite: bool = False,
) -> Path:
    """Joint histogram of estimated aleatoric std against the true noise std, with the identity line.

    Args:
        path: Destination PNG (5.5 x 4.5 inches).
        aleatoric_std: Estimated std of the voxels (1-D, e.g. inside the body).
        noise_std: True noise std of the same voxels.
        units: Target units.
        bins: Bins per axis.
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: sizes differ or values are not finite.
    """
    est = as_map(aleatoric_std, "aleatoric_std").reshape(-1)
    true = as_map(noise_std, "noise_std").reshape(-1)
    if est.shape != true.shape:
        raise ValueError(f"Expected two samples of one size. Received: {est.size} and {true.size}")
    top = max(float(np.quantile(np.concatenate([est, true]), 0.999)), np.finfo(float).tiny)
    edges = np.linspace(0.0, top, bins + 1)
    counts, _, _ = np.histogram2d(np.minimum(true, top), np.minimum(est, top), [edges, edges])
    suffix = f" [{units}]" if units else ""
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot()
    image = ax.pcolormesh(
        edges, edges, np.where(counts > 0, counts, np.nan).T, norm=LogNorm(), cmap="viridis"
    )
    ax.plot([0, top], [0, top], color="red", linestyle="--", label="estimate = truth")
    ax.set(xlim=(0, top), ylim=(0, top), aspect="equal")
    ax.set_xlabel(f"true noise std{suffix}")
    ax.set_ylabel(f"estimated aleatoric std{suffix}")
    ax.set_title("Aleatoric std against the phantom's noise")
    ax.legend(loc="upper left", fontsize="small")
    fig.colorbar(image, ax=ax, label="voxels per bin (log10 scale)")
    return save_figure(fig, path, overwrite=overwrite)


def write_validation(
    out_dir: PathLike,
    summary: Mapping[str, Any],
    *,
    aleatoric_sample: tuple[Any, Any] | None = None,
    units: str = "",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write validate_uq.json and the validation plots into ``out_dir``.

    Args:
        out_dir: Output folder (created if needed).
        summary: Output of :func:`tfuq.evaluation.validation_summary`.
        aleatoric_sample: Optional ``(estimated aleatoric std, true noise
            std)`` of the same voxels for :func:`plot_aleatoric_vs_noise`.
        units: Target units for the plot labels.
        overwrite: Replace existing outputs; otherwise an existing output is
            a :class:`~tfuq.errors.UserError` and nothing is written.

    Returns:
        dict name -> path written (keys of :data:`VALIDATION_FILES`; the
        anomaly and noise plots only when their data exist).
    """
    folder = Path(out_dir)
    names = ["json", "sweeps"]
    if summary["anomaly"]["trials"]:
        names.append("anomaly")
    if aleatoric_sample is not None:
        names.append("noise")
    paths = {name: folder / VALIDATION_FILES[name] for name in names}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: already exists; refusing to overwrite the validation outputs.")
    plot_sweeps(paths["sweeps"], summary, units=units, overwrite=overwrite)
    if "anomaly" in paths:
        plot_anomaly(paths["anomaly"], summary, units=units, overwrite=overwrite)
    if aleatoric_sample is not None:
        plot_aleatoric_vs_noise(paths["noise"], *aleatoric_sample, units=units, overwrite=overwrite)
    write_json(paths["json"], finite_or_none(dict(summary)), overwrite=overwrite)
    return paths
