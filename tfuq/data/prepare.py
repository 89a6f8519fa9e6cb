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
