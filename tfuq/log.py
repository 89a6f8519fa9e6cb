"""Console and file logging for CLI commands (``<model_dir>/logs/``).

A command refused for bad input leaves nothing behind, its log included:
:func:`close_refused_log` (called by the CLI on a user error) removes the
command's log file, and the folders made for it, when the command wrote
nothing else in model_dir; otherwise it keeps the log and ends it with the
error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["LOGGER_NAME", "close_refused_log", "setup_logging"]

LOGGER_NAME = "tfuq"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Most model_dir entries compared to tell whether a refused command wrote something.
_MAX_ENTRIES = 100_000


@dataclasses.dataclass
class _FileLog:
    """The current command's log file, the folders made for it, and model_dir as it was before."""

    path: Path
    handler: logging.Handler
    model_dir: Path
    created: list[Path]
    before: dict[str, tuple[int, int]] | None


_CURRENT: list[_FileLog] = []


def setup_logging(command: str, model_dir: PathLike | None = None, *, verbose: bool = False) -> Path | None:
    """Send ``tfuq`` log records to stderr and, with a model_dir, to a log file.

    Args:
        command: CLI command name, used in the log file name.
        model_dir: When given, also log to
            ``<model_dir>/logs/<command>-<YYYYmmdd-HHMMSS>.log``.
        verbose: DEBUG level instead of INFO.

    Returns:
        The log file path, or None when only the console is used.

    Raises:
        UserError: the log folder cannot be created or written (model_dir is
            a file, or in a folder without write permission).
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    _CURRENT.clear()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(console)
    if model_dir is None:
        return None
    log_dir = Path(model_dir) / "logs"
    log_file = log_dir / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    created = [d for d in (log_dir, *log_dir.parents) if not d.exists()]
    before = _listing(Path(model_dir))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"[SYSTEM] model_dir {model_dir}: cannot write its log folder {log_dir} ({reason}); "
            "choose a writable folder"
        ) from None
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(file_handler)
    _CURRENT.append(_FileLog(log_file, file_handler, Path(model_dir), created, before))
    return log_file


def close_refused_log(message: str) -> bool:
    """End the log of a command refused with ``message``: removed if nothing else was written.

    When model_dir holds exactly the files and folders it held (files of
    the same sizes and modification times) when :func:`setup_logging`
    opened the log, the log file and the folders made for it are removed;
    otherwise the log is kept and ends with ``message`` as an ERROR record
    (the console already shows the message).

    Args:
        message: The one-line error the command stopped with.

    Returns:
        True when the log was removed.
    """
    if not _CURRENT:
        return False
    current = _CURRENT.pop()
    logger = logging.getLogger(LOGGER_NAME)
    logger.removeHandler(current.handler)
    after = _listing(current.model_dir, skip={current.path, *current.created})
    if current.before is None or after != current.before:
        record = logger.makeRecord(LOGGER_NAME, logging.ERROR, __file__, 0, message, (), None)
        current.handler.handle(record)
        current.handler.close()
        return False
    current.handler.close()
    current.path.unlink(missing_ok=True)
    for folder in current.created:  # the log folder first, then model_dir and its parents made for it
        try:
            folder.rmdir()
        except OSError:
            break
    return True


def _listing(root: Path, skip: set[Path] | None = None) -> dict[str, tuple[int, int]] | None:
    """Path -> (size, mtime) of every file under ``root`` and (0, 0) per folder; None when too many."""
    skipped = {str(p) for p in skip or ()}
    found: dict[str, tuple[int, int]] = {}
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            if path not in skipped:
                found[path] = (0, 0)
        for name in files:
            path = os.path.join(folder, name)
            if path in skipped:
                continue
            try:
                stat = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            found[path] = (stat.st_size, stat.st_mtime_ns)
        if len(found) > _MAX_ENTRIES:
            return None
    return found
