"""The CSV logs of a training run (``logs/training.csv``, ``logs/validation.csv``): read, repair, render.

A log has a header (``step`` first, then one column per logged value) and
one row per logged step. :class:`~tfuq.training.callbacks.CSVLog` appends a
row per step; a run killed or run twice at once used to leave lines no
reader could use (a half row, a second header, duplicated steps). Reading
is therefore tolerant: :func:`read_log` keeps the well-formed rows (an
integer step, numbers or nothing in the other columns), the last of each
step, in step order, and says what it dropped (a last line without its
newline was cut by a kill, and is dropped too). :func:`repair_log`, called
when a run resumes, rewrites the file (atomically) with the good rows up to
the resumed step, so the log continues exactly where the checkpoints do.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import time
from pathlib import Path

from tfuq.atomic import write_text
from tfuq.typing import PathLike

__all__ = ["CSVLogFile", "read_log", "read_rows", "render_log", "repair_log"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CSVLogFile:
    """What :func:`read_log` found.

    Attributes:
        columns: The header (``step`` first); empty when there is none.
        rows: The good rows, one per step (the last written), by step.
        damaged: Lines that are not rows of the header (second headers, half
            rows, text), with their line numbers.
        duplicates: Rows dropped because a later row has the same step.
    """

    columns: list[str]
    rows: list[dict[str, str]]
    damaged: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    duplicates: int = 0

    @property
    def clean(self) -> bool:
        """Nothing was dropped."""
        return not self.damaged and not self.duplicates


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _step(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def read_log(path: PathLike) -> CSVLogFile:
    """Read a CSV log, keeping its well-formed rows (see the module notes); empty when absent."""
    file = Path(path)
    if not file.is_file():
        return CSVLogFile([], [])
    text = file.read_text(encoding="utf-8", errors="replace").replace("\0", "")
    lines = list(csv.reader(io.StringIO(text)))
    cut = bool(text) and not text.endswith("\n")  # a row is written with its newline: this one was cut
    columns: list[str] = []
    start = 0
    for index, fields in enumerate(lines):  # the header: the first line that starts with "step"
        if fields and fields[0].strip() == "step":
            columns, start = [f.strip() for f in fields], index + 1
            break
    found = CSVLogFile(columns, [])
    if not columns:
        found.damaged = [(n + 1, ",".join(f)) for n, f in enumerate(lines) if f]
        return found
    found.damaged = [(n + 1, ",".join(f)) for n, f in enumerate(lines[: start - 1]) if f]
    by_step: dict[int, dict[str, str]] = {}
    for number, fields in enumerate(lines[start:], start=start + 1):
        if not fields:
            continue
        step = (
            _step(fields[0]) if len(fields) == len(columns) and not (cut and number == len(lines)) else None
        )
        if step is None or not all(f == "" or _number(f) for f in fields[1:]):
            found.damaged.append((number, ",".join(fields)))
            continue
        if step in by_step:
            found.duplicates += 1
        by_step[step] = dict(zip(columns, fields))
    found.rows = [by_step[s] for s in sorted(by_step)]
    return found


def read_rows(path: PathLike) -> list[dict[str, str]]:
    """The good rows of a CSV log, one per step, by step ([] when absent)."""
    return read_log(path).rows


def render_log(columns: list[str], rows: list[dict[str, str]]) -> str:
    """CSV text of a header and rows (missing values empty)."""
    lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def repair_log(path: PathLike, upto: int) -> CSVLogFile:
    """Rewrite a CSV log with its good rows of steps ``<= upto`` (what a run resumed at ``upto`` keeps).

    Damaged lines and duplicated steps are dropped with a warning; a file
    with no readable header is renamed to ``<name>.damaged-<timestamp>`` (kept,
    not deleted) and the log starts again, as it does after an empty file. The file is rewritten only when
    something changes.

    Args:
        path: The log file.
        upto: The step the run resumes from.

    Returns:
        The log as kept (``columns`` empty when there is none).
    """
    file = Path(path)
    found = read_log(file)
    if not file.is_file():
        return found
    if not found.columns and not file.read_bytes().strip():
        file.unlink()  # created, nothing written yet: the log starts again
        return found
    if not found.columns:
        aside = file.with_name(f"{file.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(file, aside)
        logger.warning("%s: no readable header; kept as %s, the log starts again", file, aside.name)
        return found
    kept = [r for r in found.rows if int(float(r["step"])) <= upto]
    if not found.clean:
        lines = ", ".join(str(n) for n, _ in found.damaged[:5]) + (" ..." if len(found.damaged) > 5 else "")
        logger.warning(
            "%s: dropped %d damaged line(s)%s and %d duplicated step(s); rewritten from the good rows",
            file,
            len(found.damaged),
            f" (line {lines})" if found.damaged else "",
            found.duplicates,
        )
    if len(kept) < len(found.rows):
        logger.info(
            "%s: dropped the rows of %d step(s) after step %d (the interrupted run's, trained again)",
            file,
            len(found.rows) - len(kept),
            upto,
        )
    text = render_log(found.columns, kept)
    if text != file.read_text(encoding="utf-8", errors="replace"):
        write_text(file, text, overwrite=True)
    return CSVLogFile(found.columns, kept)
