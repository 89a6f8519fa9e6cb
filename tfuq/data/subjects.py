"""Subjects: matching the files of each input section by subject id.

Every input section of the INI file (``[MR]``, ``[CT]``, ...) lists its
images the way NiftyNet did: either a ``csv_file`` of ``subject_id,path``
rows, or folders (``path_to_search``) searched for ``.nii``/``.nii.gz``
files whose names contain all ``filename_contains`` keywords and none of the
``filename_not_contains`` keywords. The subject id of a found file is its
name without extension and without the matched keywords, then without what
the ``filename_removefromid`` regular expression matches, stripped of
leading and trailing ``_``, ``-``, ``.`` and spaces. A subject is used when
every section has a file for it.

Example: with ``[T1] filename_contains = _t1`` and ``filename_not_contains =
_t1c``, ``TCGA-DU-7294_t1.nii.gz`` is subject ``TCGA-DU-7294`` and
``TCGA-DU-7294_t1c.nii.gz`` is skipped.

Reference: NiftyNet's input filename matching (``filename_matching.md``,
``config_spec.md``); semantics follow its documentation, the code is ours.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from tfuq.data.nifti import NIFTI_SUFFIXES
from tfuq.errors import UserError

__all__ = ["InputSourceLike", "Subject", "file_subject_id", "find_section_files", "find_subjects"]

logger = logging.getLogger(__name__)

_STRIP = "_-. "


@runtime_checkable
class InputSourceLike(Protocol):
    """An input section of the config (NiftyNet's keys), read-only."""

    @property
    def name(self) -> str:
        """Section name, e.g. ``"MR"``."""

    @property
    def csv_file(self) -> str:
        """Absolute path of a ``subject_id,path`` list, or ``""``."""

    @property
    def path_to_search(self) -> tuple[str, ...]:
        """Absolute folders to search (not recursively)."""

    @property
    def filename_contains(self) -> tuple[str, ...]:
        """Keywords every matched file name contains."""

    @property
    def filename_not_contains(self) -> tuple[str, ...]:
        """Keywords no matched file name contains."""

    @property
    def filename_removefromid(self) -> str:
        """Regular expression removed from ids (``""`` for none)."""

    @property
    def interp_order(self) -> int:
        """Spline order for resampling this section's images."""

    @property
    def pixdim(self) -> tuple[float, ...]:
        """Voxel sizes to resample to (``()`` keeps the file's)."""

    @property
    def axcodes(self) -> tuple[str, ...]:
        """Orientation to load in (``()`` for RAS)."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """One subject: an id and one file per input section.

    Attributes:
        id: Subject id shared by all sections.
        files: Section name -> image file (read-only mapping).
    """

    id: str
    files: Mapping[str, Path]

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", types.MappingProxyType({k: Path(v) for k, v in self.files.items()}))

    def __hash__(self) -> int:
        return hash((self.id, tuple(self.files.items())))


def find_subjects(sources: Mapping[str, InputSourceLike]) -> list[Subject]:
    """List the subjects that have a file in every input section.

    Args:
        sources: Section name -> input section (see :class:`InputSourceLike`).

    Returns:
        Subjects sorted by id, with ``files`` keyed by section name in the
        order of ``sources``. Subjects missing from some sections are left
        out with a logged warning naming them.

    Raises:
        ValueError: ``sources`` is empty.
        UserError: A folder or csv file does not exist, a csv row is
            malformed, a section matches no file, two files of a section give
            the same id, or no subject is common to all sections.

    Example:
        >>> subjects = find_subjects({"T1": t1_section, "T2": t2_section})  # doctest: +SKIP
        >>> [s.id for s in subjects]
        ['TCGA-DU-7294', 'TCGA-FG-6692']
    """
    if not sources:
        raise ValueError("Expected at least one input section. Received: sources={}")
    per_section = {name: find_section_files(source, name=name) for name, source in sources.items()}
    all_ids = set().union(*per_section.values())
    common = set.intersection(*(set(files) for files in per_section.values()))
    for subject_id in sorted(all_ids - common):
        missing = [name for name, files in per_section.items() if subject_id not in files]
        logger.warning("Subject %r left out: no file in input section(s) %s.", subject_id, ", ".join(missing))
    if not common:
        found = "; ".join(f"{name}: {_preview(sorted(files))}" for name, files in per_section.items())
        raise UserError(
            f"No subject id is common to all input sections ({found}); check filename_contains "
            "and filename_removefromid so the ids match."
        )
    return [
        Subject(subject_id, {name: files[subject_id] for name, files in per_section.items()})
        for subject_id in sorted(common)
    ]


def find_section_files(source: InputSourceLike, *, name: str | None = None) -> dict[str, Path]:
    """Map subject id -> file for one input section.

    A ``csv_file`` that exists is read instead of searching folders.

    Args:
        source: The input section.
        name: Section name for messages. Default ``source.name``.

    Returns:
        Subject id -> absolute file path, sorted by id.

    Raises:
        UserError: See :func:`find_subjects`.
    """
    section = name or source.name
    if source.csv_file and Path(source.csv_file).is_file():
        return _read_csv(Path(source.csv_file), section)
    if not source.path_to_search:
        where = f"csv_file {source.csv_file} does not exist and " if source.csv_file else ""
        raise UserError(f"[{section}] {where}path_to_search is empty; give folders to search.")
    pattern = _compile(source.filename_removefromid, section)
    found: dict[str, Path] = {}
    for folder in (Path(p) for p in source.path_to_search):
        if not folder.is_dir():
            raise UserError(f"[{section}] path_to_search folder {folder} does not exist.")
        for file in sorted(folder.iterdir()):
            stem = _nifti_stem(file.name)
            if stem is None or not file.is_file() or not _matches(stem, source):
                continue
            subject_id = _subject_id(stem, source.filename_contains, pattern)
            if subject_id in found:
                raise UserError(
                    f"[{section}] {found[subject_id]} and {file} both give subject id "
                    f"{subject_id!r}; refine filename_contains/filename_not_contains."
                )
            found[subject_id] = file.resolve()
    if not found:
        raise UserError(
            f"[{section}] no .nii/.nii.gz file in {', '.join(source.path_to_search)} matches "
            f"filename_contains={list(source.filename_contains)} "
            f"filename_not_contains={list(source.filename_not_contains)}."
        )
    return dict(sorted(found.items()))


def file_subject_id(path: Path, source: InputSourceLike) -> str:
    """The subject id a section would give ``path`` (its name without suffix and keywords).

    Raises:
        UserError: ``path`` is not a ``.nii`` / ``.nii.gz`` file name.
    """
    stem = _nifti_stem(Path(path).name)
    if stem is None:
        raise UserError(f"{path}: not a NIfTI file name (.nii or .nii.gz)")
    return _subject_id(stem, source.filename_contains, _compile(source.filename_removefromid, source.name))


def _nifti_stem(filename: str) -> str | None:
    lower = filename.lower()
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def _matches(stem: str, source: InputSourceLike) -> bool:
    return all(k in stem for k in source.filename_contains) and not any(
        k in stem for k in source.filename_not_contains if k
    )


def _subject_id(stem: str, keywords: tuple[str, ...], pattern: re.Pattern[str] | None) -> str:
    subject_id = stem
    for keyword in sorted((k for k in keywords if k), key=len, reverse=True):
        subject_id = subject_id.replace(keyword, "")
    if pattern is not None:
        subject_id = pattern.sub("", subject_id)
    subject_id = subject_id.strip(_STRIP)
    # As in NiftyNet, a name made only of keywords keeps the whole file name.
    return subject_id or stem


def _compile(expression: str, section: str) -> re.Pattern[str] | None:
    if not expression:
        return None
    try:
        return re.compile(expression)
    except re.error as error:
        raise UserError(
            f"[{section}] filename_removefromid={expression!r} is not a valid regular expression ({error})."
        ) from None


def _read_csv(path: Path, section: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    lines: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            cells = [cell.strip() for cell in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if len(cells) != 2 or not cells[0] or not cells[1]:
                raise UserError(
                    f"[{section}] {path}:{line}: expected 'subject_id,path'; found {','.join(row)!r}."
                )
            subject_id, file = cells[0], Path(cells[1])
            if not file.is_absolute():
                file = path.parent / file
            if not file.is_file():
                raise UserError(f"[{section}] {path}:{line}: image file {file} not found.")
            if subject_id in found:
                raise UserError(
                    f"[{section}] {path}:{line}: subject id {subject_id!r} already listed on "
                    f"line {lines[subject_id]}."
                )
            found[subject_id], lines[subject_id] = file.resolve(), line
    if not found:
        raise UserError(f"[{section}] {path}: no 'subject_id,path' rows.")
    return dict(sorted(found.items()))


def _preview(ids: list[str], limit: int = 3) -> str:
    if not ids:
        return "no subjects"
    more = f", ... ({len(ids)} in all)" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more
