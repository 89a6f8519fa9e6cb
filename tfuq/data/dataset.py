"""A job's dataset: its subjects matched, checked and split, before anything is written.

:func:`plan_dataset` is what ``tfuq train`` (and ``tfuq info``, ``tfuq demo``)
decides about the data before it reads a voxel:

1. the files of every section are matched by subject id; ids that cannot
   name files are refused (:mod:`tfuq.data.subjects`);
2. the split: ``[SYSTEM] dataset_split_file`` when it exists, which must then
   list exactly the subjects found (:func:`~tfuq.data.split.check_split`),
   otherwise one made from the seed -- *not written yet*;
3. a subject that lacks a required section is refused, naming it, unless
   the split file lists it as ``Excluded``;
4. every file of every subject used is checked from its header
   (:func:`~tfuq.data.checks.check_subject_files`).

The caller then reads the voxels it needs (which checks them too) and writes
the split with :meth:`DatasetPlan.write_split` only once all of that has
passed. So a run refused for bad data leaves no split behind, and a split
file on disk is always one whose data passed: a user who fixes the data and
runs again gets the split of the fixed data, not one frozen by the failed
run. Once written the split is never remade: a later change of the data
(a subject added or removed) is refused in one line until the file is
edited, or deleted when no model has been trained with it yet.

The evaluation-only sections (``[REGRESSION] noise_std``, ``lesion``) are
optional: a subject may lack them (:func:`optional_sections`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tfuq.config import PHASES, Config, InputSource
from tfuq.data.split import EXCLUDED, check_split, make_split, read_split, subjects_in_phase, write_split
from tfuq.data.subjects import Subject, SubjectMatch, incomplete_message, match_subjects
from tfuq.errors import UserError

if TYPE_CHECKING:
    from tfuq.data.training_windows import WindowGeometry

__all__ = ["DatasetPlan", "all_subject_ids", "config_subjects", "optional_sections", "plan_dataset"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetPlan:
    """The subjects a job uses and their phases, decided and checked, nothing written.

    Attributes:
        split_file: ``[SYSTEM] dataset_split_file``.
        subjects: The subjects used (not excluded), sorted by id.
        split: Subject id -> phase of the subjects used, sorted by id.
        excluded: Subjects the split file lists as ``Excluded``.
        new_split: Whether the split was made here (the file does not exist
            yet: :meth:`write_split` writes it).
    """

    split_file: Path
    subjects: list[Subject]
    split: dict[str, str]
    excluded: tuple[str, ...] = ()
    new_split: bool = False

    def ids(self, phase: str) -> list[str]:
        """Sorted ids of the subjects in ``phase``."""
        return subjects_in_phase(self.split, phase)

    def write_split(self) -> Path | None:
        """Write the split file when it was made here; call once the data have passed their checks.

        Returns:
            The file written, or None when it already existed.

        Raises:
            UserError: the file appeared meanwhile (it is never overwritten).
        """
        if not self.new_split:
            return None
        write_split(self.split_file, self.split)
        counts = {phase: len(ids) for phase in PHASES if (ids := self.ids(phase))}
        logger.info("wrote dataset split %s: %s", self.split_file, counts)
        return self.split_file


def optional_sections(config: Config) -> tuple[str, ...]:
    """Sections a subject may lack: the evaluation-only ``noise_std`` and ``lesion`` ones."""
    app = config.app
    required = {
        *config.input_sections,
        config.target_section,
        getattr(app, "mask", ""),
        getattr(app, "sampler", ""),
    }
    names = (getattr(app, "noise_std", ""), getattr(app, "lesion", ""))
    return tuple(dict.fromkeys(n for n in names if n and n not in required))


def config_subjects(config: Config, sources: Mapping[str, InputSource]) -> list[Subject]:
    """The subjects with every required section (incomplete ones are left out; plan_dataset refuses them)."""
    return match_subjects(sources, optional=optional_sections(config)).subjects


def all_subject_ids(config: Config, sources: Mapping[str, InputSource]) -> list[str]:
    """Every subject id a split file of ``config`` must list: found in any required section, sorted."""
    match = match_subjects(sources, optional=optional_sections(config))
    return sorted([s.id for s in match.subjects] + list(match.incomplete))


def plan_dataset(
    config: Config,
    sources: Mapping[str, InputSource],
    *,
    check_files: bool = True,
) -> DatasetPlan:
    """Match, split and check a config's subjects without writing anything (see the module notes).

    Args:
        config: The loaded configuration.
        sources: Resolved input sources (:func:`~tfuq.data.sources.resolve_sources`).
        check_files: Check every used subject's files from their headers,
            and that the config's training window (if it has one) fits them.

    Returns:
        DatasetPlan.

    Raises:
        UserError: see the module notes (one line).
        ConfigError: a training window the config cannot give.
    """
    from tfuq.data.checks import check_subject_files

    match = match_subjects(sources, optional=optional_sections(config))
    path = Path(config.system.dataset_split_file)
    if path.exists():
        listed = read_split(path)
        check_split(path, listed, [s.id for s in match.subjects] + list(match.incomplete))
        kept = [i for i in match.incomplete if listed[i] != EXCLUDED]
        if kept:
            raise UserError(incomplete_message(_only(match, kept), str(path)))
        split = {s.id: listed[s.id] for s in match.subjects if listed[s.id] != EXCLUDED}
        excluded = tuple(sorted(i for i, phase in listed.items() if phase == EXCLUDED))
        new = False
    else:
        if match.incomplete:
            raise UserError(incomplete_message(match, str(path)))
        split = make_split(
            [s.id for s in match.subjects],
            validation_fraction=config.training.exclude_fraction_for_validation,
            inference_fraction=config.training.exclude_fraction_for_inference,
            seed=config.system.seed,
        )
        excluded, new = (), True
    subjects = [s for s in match.subjects if s.id in split]
    if not subjects:
        raise UserError(f"{path}: every subject is {EXCLUDED}; give some a phase")
    if excluded:
        logger.info("%d subject(s) excluded by %s: %s", len(excluded), path, ", ".join(excluded))
    if check_files:
        geometry = _config_window(config)
        check_subject_files(
            config,
            subjects,
            sources,
            window=geometry.window if geometry else None,
            padding=geometry.padding if geometry else (0, 0, 0),
        )
    return DatasetPlan(path, subjects, split, excluded, new)


def _only(match: SubjectMatch, ids: list[str]) -> SubjectMatch:
    return dataclasses.replace(match, incomplete={i: match.incomplete[i] for i in ids})


def _config_window(config: Config) -> WindowGeometry | None:
    from tfuq.data.training_windows import window_geometry

    if config.network.window_sampling == "resize":
        return None  # every volume is resized to the window
    if not all(config.sources[n].spatial_window_size for n in config.input_sections):
        return None  # no training window (e.g. tfuq info on an inference-only config)
    return window_geometry(config)
