"""The data stage every job starts with: sources resolved, subjects matched, the split, one subject read.

:func:`prepare_data` writes the phantom on first use and
``[SYSTEM] dataset_split_file`` when absent, and summarises what it found
(``tfuq info``, the first lines of ``tfuq demo``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tfuq.config import Config

__all__ = ["DataSummary", "prepare_data"]


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
    """Resolve sources (phantom on first use), match and check subjects, split, load one subject.

    Args:
        config: The loaded configuration.
        write_split: Create ``[SYSTEM] dataset_split_file`` when absent, after
            the checks (otherwise the split is only computed).

    Returns:
        DataSummary: subjects per phase and the first subject's geometry.

    Raises:
        UserError: any data problem, in one line; nothing is written then.
    """
    from tfuq.config import PHASES
    from tfuq.data.checks import check_image_values
    from tfuq.data.dataset import plan_dataset
    from tfuq.data.loading import fit_section_normalisation, load_subject
    from tfuq.data.sources import resolve_sources

    sources = resolve_sources(config)
    plan = plan_dataset(config, sources)
    phases = {phase: plan.ids(phase) for phase in PHASES}
    first = plan.subjects[0]
    volumes = load_subject(config, first, sources)
    for name in config.input_sections:
        check_image_values(volumes[name], name, role="input")
    target = volumes[config.target_section]
    mask_name = getattr(config.app, "mask", "")
    mask = volumes[mask_name].array if mask_name in volumes else None
    if mask is not None:
        check_image_values(volumes[mask_name], mask_name, role="mask")
    norms = {
        name: fit_section_normalisation(sources[name], volumes[name], mask).to_dict()
        for name in (*config.input_sections, config.target_section)
    }
    if write_split:
        plan.write_split()
    split_file = plan.split_file
    return DataSummary(
        split_file=split_file,
        phases=phases,
        example=first.id,
        shapes={name: v.array.shape for name, v in volumes.items()},
        spacing=target.spacing,
        value_ranges={name: (float(v.array.min()), float(v.array.max())) for name, v in volumes.items()},
        normalisation=norms,
    )
