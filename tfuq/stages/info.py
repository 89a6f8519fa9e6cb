"""``tfuq info CONFIG``: the resolved settings, the data and the network of a configuration."""

from __future__ import annotations

from tfuq.config import Config
from tfuq.data.prepare import DataSummary, prepare_data
from tfuq.errors import UserError

__all__ = ["data_lines", "describe", "model_summary"]


def data_lines(summary: DataSummary) -> list[str]:
    """The lines ``tfuq info`` and ``tfuq demo`` print about the data."""
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
        lines += data_lines(prepare_data(config, write_split=False))
    except UserError as err:  # info still describes the model without data
        lines.append(f"data: not available: {err}")
    return "\n".join(lines)


def model_summary(config: Config) -> str:
    """The model's Keras summary ending in ``parameters: <integer>``.

    Raises:
        ConfigError: the network cannot be built or its user model read.
    """
    from tfuq.model_store import build_network
    from tfuq.networks.summary import summarize

    return summarize(config, build_network(config))
