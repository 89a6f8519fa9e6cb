"""Subjects: matching the files of each input section by subject id.

Every input section of the INI file (``[MR]``, ``[CT]``, ...) lists its
images the way NiftyNet did: either a ``csv_file`` of ``subject_id,path``
rows, or folders (``path_to_search``) searched for ``.nii``/``.nii.gz``
files whose names contain all ``filename_contains`` keywords and none of the
``filename_not_contains`` keywords. The subject id of a found file is its
name without extension and without the matched keywords, then without what
the ``filename_removefromid`` regular expression matches, stripped of
leading and trailing ``_``, ``-``, ``.`` and spaces.

Every subject must have a file in every section a job needs: a subject found
in some sections only is an error naming it and the sections it lacks (a user
expects all listed data to be used, or a clear refusal), except in the
sections the caller says are optional (e.g. a lesion label that only some
subjects have). To leave such a subject out, move its files away, exclude
them with ``filename_not_contains``, or list it as ``Excluded`` in the
dataset split file (:mod:`tfuq.data.split`).

Subject ids name output files (``<id>_mean.nii.gz``) and split rows, so they
must be usable as file names: ASCII letters, digits, ``_``, ``-`` and ``.``,
starting with a letter or digit (:data:`SUBJECT_ID_RULE`). Other ids (spaces,
accents, commas, path separators, ``..``) are refused when the files are
matched, naming the file, so ``tfuq train`` refuses them before it writes
anything rather than ``tfuq infer`` later.

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
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from tfuq.data.nifti import NIFTI_SUFFIXES
from tfuq.errors import UserError

__all__ = [
    "SUBJECT_ID_RULE",
    "InputSourceLike",
    "Subject",
    "SubjectMatch",
    "check_subject_id",
    "file_subject_id",
    "find_section_files",
    "find_subjects",
    "incomplete_message",
    "match_subjects",
]

logger = logging.getLogger(__name__)

_STRIP = "_-. "
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: What a subject id may hold, in words (for messages and docs).
SUBJECT_ID_RULE = "ASCII letters, digits, '_', '-' and '.', starting with a letter or digit"


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


@dataclasses.dataclass(frozen=True)
class SubjectMatch:
    """The subjects found in the input sections.

    Attributes:
        subjects: Subjects with a file in every required section, sorted by
            id; their ``files`` also hold the optional sections they have.
        incomplete: Id -> the required sections it has no file in, for ids
            found in some required sections only, sorted by id.
        sections: The required section names, in the order of the sources.
    """

    subjects: list[Subject]
    incomplete: dict[str, tuple[str, ...]]
    sections: tuple[str, ...]

    def missing_message(self, subject_id: str) -> str:
        """``"subject 'x' has [MR] but no [CT] file"``: what an incomplete subject lacks."""
        missing = self.incomplete[subject_id]
        has = ", ".join(f"[{name}]" for name in self.sections if name not in missing)
        lacks = ", ".join(f"[{name}]" for name in missing)
        return f"subject {subject_id!r} has {has} but no {lacks} file"


def match_subjects(sources: Mapping[str, InputSourceLike], *, optional: Collection[str] = ()) -> SubjectMatch:
    """Match the files of the sections by subject id; report ids that lack a required section.

    Args:
        sources: Section name -> input section (see :class:`InputSourceLike`).
        optional: Sections a subject may lack (e.g. a lesion label), even
            every subject.

    Returns:
        SubjectMatch: the complete subjects and the incomplete ids.

    Raises:
        ValueError: no required section.
        UserError: a folder or csv file does not exist, a csv row is
            malformed, a required section matches no file, two files of a
            section give the same id, an id is not usable as a file name
            (:func:`check_subject_id`), or no subject is common to all
            required sections.
    """
    required = [name for name in sources if name not in optional]
    if not required:
        raise ValueError(f"Expected at least one required input section. Received: sources={list(sources)}")
    per_section = {name: find_section_files(sources[name], name=name) for name in required}
    extra = {
        name: find_section_files(sources[name], name=name, allow_empty=True)
        for name in sources
        if name in optional
    }
    all_ids = set().union(*per_section.values())
    common = set.intersection(*(set(files) for files in per_section.values()))
    if not common:
        found = "; ".join(f"{name}: {_preview(sorted(files))}" for name, files in per_section.items())
        raise UserError(
            f"No subject id is common to all input sections ({found}); check filename_contains "
            "and filename_removefromid so the ids match."
        )
    incomplete = {
        subject_id: tuple(name for name, files in per_section.items() if subject_id not in files)
        for subject_id in sorted(all_ids - common)
    }
    files = {name: per_section[name] if name in per_section else extra.get(name, {}) for name in sources}
    subjects = [
        Subject(subject_id, {name: found[subject_id] for name, found in files.items() if subject_id in found})
        for subject_id in sorted(common)
    ]
    return SubjectMatch(subjects, incomplete, tuple(required))


def find_subjects(sources: Mapping[str, InputSourceLike], *, optional: Collection[str] = ()) -> list[Subject]:
    """List the subjects, refusing any that lacks a file in a required section.

    Args:
        sources: Section name -> input section (see :class:`InputSourceLike`).
        optional: Sections a subject may lack (see :func:`match_subjects`).

    Returns:
        Subjects sorted by id, with ``files`` keyed by section name in the
        order of ``sources``.

    Raises:
        ValueError: ``sources`` is empty.
        UserError: a subject lacks a required section (the message names
            it and says how to leave it out), or see :func:`match_subjects`.

    Example:
        >>> subjects = find_subjects({"T1": t1_section, "T2": t2_section})  # doctest: +SKIP
        >>> [s.id for s in subjects]
        ['TCGA-DU-7294', 'TCGA-FG-6692']
    """
    if not sources:
        raise ValueError("Expected at least one input section. Received: sources={}")
    match = match_subjects(sources, optional=optional)
    if match.incomplete:
        raise UserError(incomplete_message(match))
    return match.subjects


def incomplete_message(match: SubjectMatch, split_file: str | None = None) -> str:
    """One line naming the incomplete subjects of ``match`` and how to leave them out."""
    first = next(iter(match.incomplete))
    more = len(match.incomplete) - 1
    others = f" (and {more} other subject(s): {_preview(list(match.incomplete)[1:])})" if more else ""
    where = f"the dataset split file {split_file}" if split_file else "a dataset split file"
    return (
        f"{match.missing_message(first)}{others}; add the missing file, or leave the subject out: "
        f"move its files away, exclude them with filename_not_contains, or list it as "
        f"'{first},Excluded' in {where}"
    )


def check_subject_id(subject_id: str, origin: str) -> str:
    """Return ``subject_id`` if it can name files; otherwise a one-line UserError.

    Args:
        subject_id: The id.
        origin: What gave it (a file, or a csv file and line), for the message.

    Raises:
        UserError: the id does not follow :data:`SUBJECT_ID_RULE` (spaces,
            non-ASCII letters, commas, path separators, ``..``, ...).
    """
    if not _ID.fullmatch(subject_id) or subject_id in {".", ".."}:
        raise UserError(
            f"{origin}: subject id {subject_id!r} cannot name output files; expected {SUBJECT_ID_RULE}: "
            "rename the file (or fix the csv row), or set filename_removefromid"
        )
    return subject_id


def find_section_files(
    source: InputSourceLike, *, name: str | None = None, allow_empty: bool = False
) -> dict[str, Path]:
    """Map subject id -> file for one input section.

    A ``csv_file`` that exists is read instead of searching folders.

    Args:
        source: The input section.
        name: Section name for messages. Default ``source.name``.
        allow_empty: Return ``{}`` when no file matches (an optional
            section) instead of refusing.

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
            subject_id = check_subject_id(
                _subject_id(stem, source.filename_contains, pattern), f"[{section}] {file}"
            )
            if subject_id in found:
                raise UserError(
                    f"[{section}] {found[subject_id]} and {file} both give subject id "
                    f"{subject_id!r}; refine filename_contains/filename_not_contains."
                )
            found[subject_id] = file.resolve()
    if not found and not allow_empty:
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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(
            f"[{section}] {path}: not a UTF-8 text file; expected 'subject_id,path' rows."
        ) from None
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) != 2 or not cells[0] or not cells[1]:
            raise UserError(
                f"[{section}] {path}:{line}: expected 'subject_id,path'; found {','.join(row)!r}."
            )
        subject_id, file = check_subject_id(cells[0], f"[{section}] {path}:{line}"), Path(cells[1])
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
