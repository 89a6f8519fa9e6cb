"""A job's stages in order, and what ``tfuq info`` / ``tfuq demo`` show of them.

A stage is a library function ``fn(config) -> None`` in a ``job`` module of
its package (``tfuq.training.job.train``, ...). A stage whose function does not exist yet is
*missing*: ``tfuq demo`` runs the stages that exist, in order, and names the
missing ones with the issue that brings them, rather than pretending.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

from tfuq.config import Config
from tfuq.errors import NotAvailableError, UserError

__all__ = [
    "DEMO_STAGES",
    "STAGES",
    "DataSummary",
    "Stage",
    "demo_config",
    "describe",
    "find_stage",
    "headline",
    "model_summary",
    "prepare_data",
    "run_demo",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the job: CLI name, the function that runs it, its issue."""

    name: str
    module: str
    function: str
    issue: str


#: The job, in the order ``tfuq demo`` runs it.
STAGES: tuple[Stage, ...] = (
    Stage("train", "tfuq.training.job", "train", "#5"),
    Stage("calibrate", "tfuq.calibration.job", "calibrate", "#6"),
    Stage("infer", "tfuq.inference.job", "infer", "#6"),
    Stage("evaluate", "tfuq.evaluation.job", "evaluate", "#6"),
    Stage("validate-uq", "tfuq.evaluation.validate_uq", "validate_uq", "#6"),
    Stage("export", "tfuq.export.job", "export", "#7"),
)


def find_stage(stage: Stage) -> Callable[[Config], object] | None:
    """The stage's function, or None while its module or function has not landed.

    A module that exists but fails to import is a bug and raises.
    """
    try:
        spec = importlib.util.find_spec(stage.module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return None
    fn = getattr(importlib.import_module(stage.module), stage.function, None)
    return fn if callable(fn) else None


def run_stage(name: str, config: Config) -> object:
    """Run the stage called ``name`` (its CLI name) on ``config``.

    Raises:
        NotAvailableError: the stage has not landed yet (names its issue).
    """
    stage = next(s for s in STAGES if s.name == name)
    fn = find_stage(stage)
    if fn is None:
        raise NotAvailableError(f"tfuq {name}: not available yet; it lands with issue {stage.issue}")
    return fn(config)


@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What the data stage found: subjects per phase and one loaded subject."""

    split_file: Path
    phases: dict[str, list[str]]
    example: str
    shapes: dict[str, tuple[int, ...]]
    spacing: tuple[float, float, float]
    value_ranges: dict[str, tuple[float, float]]
    normalisation: dict[str, dict[str, object]]


def prepare_data(config: Config, *, write_split: bool = True) -> DataSummary:
    """Resolve sources (phantom on first use), match subjects, split, load one subject.

    Args:
        config: The loaded configuration.
        write_split: Create ``[SYSTEM] dataset_split_file`` when absent
            (otherwise the split is only computed).

    Returns:
        DataSummary: subjects per phase and the first subject's geometry.

    Raises:
        UserError: any data problem, in one line.
    """
    from tfuq.config import PHASES
    from tfuq.data.loading import fit_section_normalisation, load_subject
    from tfuq.data.sources import resolve_sources
    from tfuq.data.split import load_or_create_split, make_split
    from tfuq.data.subjects import find_subjects

    sources = resolve_sources(config)
    subjects = find_subjects(sources)
    ids = [s.id for s in subjects]
    fractions = {
        "validation_fraction": config.training.exclude_fraction_for_validation,
        "inference_fraction": config.training.exclude_fraction_for_inference,
        "seed": config.system.seed,
    }
    split_file = Path(config.system.dataset_split_file)
    if write_split or split_file.exists():
        split = load_or_create_split(split_file, ids, **fractions)
    else:
        split = make_split(ids, **fractions)
    phases = {phase: sorted(i for i, p in split.items() if p == phase) for phase in PHASES}
    first = next(s for s in subjects if s.id in split)
    volumes = load_subject(config, first, sources)
    target = volumes[config.target_section]
    mask_name = getattr(config.app, "mask", "")
    mask = volumes[mask_name].array if mask_name in volumes else None
    norms = {
        name: fit_section_normalisation(sources[name], volumes[name], mask).to_dict()
        for name in (*config.input_sections, config.target_section)
    }
    return DataSummary(
        split_file=split_file,
        phases=phases,
        example=first.id,
        shapes={name: v.array.shape for name, v in volumes.items()},
        spacing=target.spacing,
        value_ranges={name: (float(v.array.min()), float(v.array.max())) for name, v in volumes.items()},
        normalisation=norms,
    )


def _data_lines(summary: DataSummary) -> list[str]:
    lines = [f"split: {summary.split_file}"]
    for phase, ids in summary.phases.items():
        lines.append(f"  {phase}: {len(ids)} subject(s) {', '.join(ids[:6])}{' ...' if len(ids) > 6 else ''}")
    spacing = " x ".join(f"{s:.3g}" for s in summary.spacing)
    lines.append(f"example subject {summary.example} (spacing {spacing} mm):")
    for name, shape in summary.shapes.items():
        lo, hi = summary.value_ranges[name]
        norm = summary.normalisation.get(name)
        how = ""
        if norm is not None:
            how = f"; normalised by {norm['method']} (offset {norm['offset']:.4g}, scale {norm['scale']:.4g})"
        lines.append(f"  [{name}] shape {shape}, values {lo:.4g} .. {hi:.4g}{how}")
    return lines


def describe(config: Config) -> str:
    """Text of ``tfuq info``: resolved settings, subjects, split and one subject's geometry."""
    from tfuq.config import field_specs, format_value

    header = [
        f"config: {config.path}",
        f"application: {config.application}: {', '.join(config.input_sections)} -> {config.target_section}",
        f"network: {config.network.name}",
        f"uncertainty: family={config.uncertainty.family} dropout={config.uncertainty.dropout} "
        f"rate={config.uncertainty.dropout_rate:g} mc_samples={config.uncertainty.mc_samples}",
        f"model_dir: {config.model_dir}",
    ]
    changed = []
    for name in ("SYSTEM", "NETWORK", "TRAINING", "INFERENCE", "UNCERTAINTY", "CALIBRATION"):
        section = config.section(name)
        for key, spec in field_specs(type(section)).items():
            value = getattr(section, key)
            if value != spec.default and spec.path is None:
                changed.append(f"  [{name}] {key} = {format_value(value)}")
    lines = header + (["settings that differ from the defaults:", *changed] if changed else [])
    try:
        lines += _data_lines(prepare_data(config, write_split=False))
    except UserError as err:  # info still describes the model without data
        lines.append(f"data: not available: {err}")
    return "\n".join(lines)


def model_summary(config: Config) -> str:
    """The model's Keras summary ending in ``parameters: <integer>``.

    Raises:
        NotAvailableError: while the networks (issue #4) have not landed.
    """
    from tfuq.model_store import build_network
    from tfuq.networks.summary import summarize

    return summarize(config, build_network(config))


#: What ``tfuq demo`` runs; the papers' uncertainty checks (validate-uq) are ``make validate``.
DEMO_STAGES = ("train", "calibrate", "infer", "evaluate", "export")

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
    for line in _data_lines(prepare_data(config)):
        echo(line)
    summary: dict[str, object] = {}
    started = time.monotonic()
    for name in DEMO_STAGES:
        stage = next(s for s in STAGES if s.name == name)
        fn = find_stage(stage)
        if fn is None:
            raise NotAvailableError(f"tfuq demo: stage {name} is not available")
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
