"""``tfuq demo CONFIG`` (``make demo``): the whole job on one configuration, with its headline figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tfuq.config import Config
from tfuq.data.prepare import prepare_data
from tfuq.stages.calibrate import calibrate
from tfuq.stages.evaluate import evaluate
from tfuq.stages.export import export
from tfuq.stages.infer import infer
from tfuq.stages.info import data_lines
from tfuq.stages.train import train

__all__ = ["DEMO_HEADLINES", "DEMO_STAGES", "demo_config", "headline", "run_demo"]


#: What ``tfuq demo`` runs, in order; the papers' uncertainty checks (validate-uq) are ``make validate``.
DEMO_STAGES: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("train", train),
    ("calibrate", calibrate),
    ("infer", infer),
    ("evaluate", evaluate),
    ("export", export),
)

#: Figures of summary.json the demo ends with: (key, label, format).
DEMO_HEADLINES = (
    ("mae", "MAE", "{:.4g}"),
    ("pearson", "Pearson", "{:.3f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("calibration_rms_error", "RMS calibration error raw", "{:.3f}"),
    ("calibration_rms_error_recalibrated", "recalibrated", "{:.3f}"),
    ("coverage_90_recalibrated", "90 % coverage", "{:.3f}"),
    ("spearman_total_voxel", "Spearman(|error|, total std)", "{:.3f}"),
    ("aleatoric_vs_noise_spearman", "Spearman(aleatoric std, true noise)", "{:.3f}"),
)


def demo_config(config: Config) -> Config:
    """``config`` with what the demo adds: it replaces its own earlier maps and report."""
    return dataclasses.replace(
        config,
        inference=dataclasses.replace(config.inference, overwrite=True),
        evaluation=dataclasses.replace(config.evaluation, overwrite=True),
    )


def headline(summary: dict[str, object]) -> str:
    """One line of the figures a demo run ends with (those the summary holds)."""
    parts = []
    for key, label, fmt in DEMO_HEADLINES:
        value = summary.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {fmt.format(value)}")
    return "; ".join(parts)


def run_demo(config: Config, echo: Callable[[str], None] = print) -> dict[str, object]:
    """Run the data stage, then train, calibrate, infer, evaluate and export.

    The demo owns its model_dir: a second run resumes the finished training
    and replaces the maps and report of the first (the configs never set
    overwrite; the demo passes it). It ends with the report's path and the
    headline figures.

    Returns:
        The evaluation summary (``summary.json``, with ``paths``).

    Raises:
        UserError: a stage failed on the user's data or config.
    """
    import time

    config = demo_config(config)
    echo(f"== data: {config.path.name}")
    for line in data_lines(prepare_data(config, write_split=False)):  # train writes it, once all data passed
        echo(line)
    summary: dict[str, object] = {}
    started = time.monotonic()
    for name, fn in DEMO_STAGES:
        echo(f"== {name}")
        tick = time.monotonic()
        result = fn(config)
        if name == "evaluate" and isinstance(result, dict):
            summary = result
        echo(f"   {name} took {time.monotonic() - tick:.0f} s")
    paths = summary.get("paths", {})
    report = paths.get("html") if isinstance(paths, dict) else None
    echo(f"demo: done in {time.monotonic() - started:.0f} s; report {report}")
    echo(f"demo: {headline(summary)}")
    return summary
