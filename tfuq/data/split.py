"""Dataset split: which subject is used for training, validation or inference.

The split is a CSV file in NiftyNet's ``dataset_split_file`` format, one
``subject_id,Phase`` row per subject, no header::

    sub01,Training
    sub02,Validation
    sub03,Inference

It is made once, from a seed, and then read unchanged, so a run can be
repeated and a model is never evaluated on subjects it was trained on, even
after subjects are added to the data folders.

A split file must list exactly the subjects found in the data
(:func:`check_split`): a row for a subject with no files, or a subject found
but not listed, is an error naming them, never a subject silently trained on
or left out. A subject is left out on purpose with the phase ``Excluded``
(tfuq's; NiftyNet has no such phase), e.g. ``sub07,Excluded``. The training
stage makes the file only once every subject's files have passed their checks
(:mod:`tfuq.data.dataset`), so a run refused for bad data leaves no split
behind to hold later runs to.

Subjects are ranked by a SHA-256 hash of ``(seed, id)``: the split does not
depend on the order in which ids are given, and adding a subject moves at
most a few others between phases.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from tfuq.atomic import write_text
from tfuq.config.sections import INFERENCE, PHASES, TRAINING, VALIDATION
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "EXCLUDED",
    "INFERENCE",
    "PHASES",
    "TRAINING",
    "VALIDATION",
    "check_split",
    "load_or_create_split",
    "make_split",
    "read_split",
    "subjects_in_phase",
    "write_split",
]

logger = logging.getLogger(__name__)

#: Split-file phase of a subject left out of every phase on purpose.
EXCLUDED = "Excluded"
#: Phases a split-file row may give, canonical spelling.
_ROW_PHASES = (*PHASES, EXCLUDED)
#: Phase names, as written in split files (NiftyNet's spelling), by their lower case.
_BY_LOWER = {phase.lower(): phase for phase in _ROW_PHASES}


def make_split(
    subject_ids: Iterable[str],
    *,
    validation_fraction: float,
    inference_fraction: float,
    seed: int,
) -> dict[str, str]:
    """Assign each subject to a phase, deterministically for a seed.

    Counts are ``round(fraction * n)`` (halves round up). A positive
    fraction gets at least one subject and at least one subject is kept for
    training whenever there are subjects; when both cannot hold, validation
    gives way before inference.

    Args:
        subject_ids: Unique subject ids, in any order.
        validation_fraction: Fraction for validation, in [0, 1).
        inference_fraction: Fraction for inference, in [0, 1); the two
            fractions sum to less than 1.
        seed: Seed of the assignment.

    Returns:
        Subject id -> phase, sorted by id.

    Raises:
        ValueError: Invalid fractions or duplicate ids.

    Example:
        >>> make_split(["a", "b", "c", "d"], validation_fraction=0.25,
        ...            inference_fraction=0.25, seed=0)  # doctest: +SKIP
        {'a': 'Training', 'b': 'Inference', 'c': 'Validation', 'd': 'Training'}
    """
    ids = [str(i) for i in subject_ids]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"Expected unique subject ids. Received duplicates: {duplicates}")
    for key, value in (
        ("validation_fraction", validation_fraction),
        ("inference_fraction", inference_fraction),
    ):
        if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
            raise ValueError(f"Expected {key} in [0, 1). Received: {key}={value!r}")
    if validation_fraction + inference_fraction >= 1.0:
        raise ValueError(
            "Expected validation_fraction + inference_fraction < 1 (training needs subjects). "
            f"Received: {validation_fraction} + {inference_fraction}"
        )
    n = len(ids)
    n_val, n_inf = (_count(f, n) for f in (validation_fraction, inference_fraction))
    while n and n_val + n_inf > n - 1:
        if n_val >= n_inf and n_val > 0:
            n_val -= 1
        else:
            n_inf -= 1
    ranked = sorted(ids, key=lambda i: (hashlib.sha256(f"{int(seed)}\x00{i}".encode()).hexdigest(), i))
    phases = [VALIDATION] * n_val + [INFERENCE] * n_inf + [TRAINING] * (n - n_val - n_inf)
    return dict(sorted(zip(ranked, phases, strict=True)))


def read_split(path: PathLike) -> dict[str, str]:
    """Read a split file (``subject_id,Phase`` rows; phase case-insensitive).

    Args:
        path: The CSV file.

    Returns:
        Subject id -> phase (canonical spelling, including
        :data:`EXCLUDED`), in file order.

    Raises:
        UserError: Missing file (or a folder), a file that is not UTF-8 text,
            a malformed row, an unknown phase or a duplicate subject; the
            message gives file and line number.
    """
    file = Path(path)
    if file.is_dir():
        raise UserError(f"{file}: is a folder; [SYSTEM] dataset_split_file names a CSV file.")
    if not file.is_file():
        raise UserError(f"{file}: dataset split file not found.")
    split: dict[str, str] = {}
    lines: dict[str, int] = {}
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{file}: not a UTF-8 text file; expected 'subject_id,Phase' rows.") from None
    for line, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if len(cells) != 2 or not cells[0]:
            raise UserError(f"{file}:{line}: expected 'subject_id,Phase'; found {','.join(row)!r}.")
        subject_id, phase = cells
        if phase.lower() not in _BY_LOWER:
            raise UserError(
                f"{file}:{line}: unknown phase {phase!r}; expected one of {', '.join(_ROW_PHASES)}."
            )
        if subject_id in split:
            raise UserError(
                f"{file}:{line}: subject {subject_id!r} already listed on line {lines[subject_id]}."
            )
        split[subject_id], lines[subject_id] = _BY_LOWER[phase.lower()], line
    return split


def write_split(path: PathLike, split: Mapping[str, str], *, overwrite: bool = False) -> Path:
    """Write a split file atomically, rows sorted by subject id.

    Args:
        path: Destination CSV file.
        split: Subject id -> phase (one of :data:`PHASES` or :data:`EXCLUDED`).
        overwrite: Replace an existing file. Default False.

    Returns:
        The path written.

    Raises:
        ValueError: A phase is not one of :data:`PHASES` or :data:`EXCLUDED`,
            or an id holds a comma or newline.
        UserError: The file exists and ``overwrite`` is False.
    """
    rows = []
    for subject_id, phase in sorted(split.items()):
        if phase not in _ROW_PHASES:
            raise ValueError(f"Expected phases in {_ROW_PHASES}. Received: {subject_id!r} -> {phase!r}")
        if any(c in subject_id for c in ',\n\r"') or subject_id != subject_id.strip():
            raise ValueError(
                "Expected subject ids without commas, quotes, newlines or edge spaces. "
                f"Received: {subject_id!r}"
            )
        rows.append(f"{subject_id},{phase}\n")
    return write_text(path, "".join(rows), overwrite=overwrite)


def check_split(path: PathLike, split: Mapping[str, str], subject_ids: Iterable[str]) -> None:
    """Refuse a split that does not list exactly the subjects found in the data.

    Args:
        path: The split file (for messages).
        split: Its rows, subject id -> phase (see :func:`read_split`).
        subject_ids: Ids of every subject found in the data.

    Raises:
        UserError: the split lists subjects without files, or does not list
            subjects that have files; the one-line message names them and
            says what to do.
    """
    ids = set(subject_ids)
    unknown = sorted(set(split) - ids)
    if unknown:
        raise UserError(
            f"{path}: lists {len(unknown)} subject(s) with no files in the input sections "
            f"({_preview(unknown)}); remove their rows, or restore their files"
        )
    unlisted = sorted(ids - set(split))
    if unlisted:
        raise UserError(
            f"{path}: does not list {len(unlisted)} subject(s) found in the data ({_preview(unlisted)}); "
            f"give each a row 'subject_id,Phase' (Phase one of {', '.join(PHASES)}, or {EXCLUDED} to leave "
            "it out), or delete the file to make a new split if no model has been trained with it"
        )


def load_or_create_split(
    path: PathLike,
    subject_ids: Iterable[str],
    *,
    validation_fraction: float,
    inference_fraction: float,
    seed: int,
) -> dict[str, str]:
    """Read the split file, or make and write it on first use.

    Once the file exists it is the truth: fractions and seed are then
    ignored, and it must list exactly ``subject_ids`` (:func:`check_split`);
    subjects it lists as :data:`EXCLUDED` are left out.

    Args:
        path: Split CSV file.
        subject_ids: Ids of the subjects found in the data.
        validation_fraction: See :func:`make_split` (used on creation).
        inference_fraction: See :func:`make_split` (used on creation).
        seed: See :func:`make_split` (used on creation).

    Returns:
        Subject id -> phase of the subjects used, sorted by id.

    Raises:
        UserError: The existing file is malformed (see :func:`read_split`)
            or does not list exactly the subjects (see :func:`check_split`).
        ValueError: Invalid fractions or duplicate ids.
    """
    file = Path(path)
    ids = sorted(str(i) for i in subject_ids)
    if not file.exists():
        split = make_split(
            ids, validation_fraction=validation_fraction, inference_fraction=inference_fraction, seed=seed
        )
        write_split(file, split)
        counts = {phase: len(subjects_in_phase(split, phase)) for phase in PHASES}
        logger.info("Wrote dataset split %s: %s.", file, counts)
        return split
    listed = read_split(file)
    check_split(file, listed, ids)
    return {i: listed[i] for i in ids if listed[i] != EXCLUDED}


def subjects_in_phase(split: Mapping[str, str], phase: str) -> list[str]:
    """Sorted ids of the subjects assigned to ``phase``.

    Raises:
        ValueError: ``phase`` is not one of :data:`PHASES` or :data:`EXCLUDED`.
    """
    if phase not in _ROW_PHASES:
        raise ValueError(f"Expected phase to be one of {_ROW_PHASES}. Received: phase={phase!r}")
    return sorted(i for i, p in split.items() if p == phase)


def _count(fraction: float, n: int) -> int:
    count = math.floor(fraction * n + 0.5)
    return max(count, 1) if fraction > 0 and n > 0 else count


def _preview(ids: list[str], limit: int = 5) -> str:
    more = f", ... ({len(ids)} in all)" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more
