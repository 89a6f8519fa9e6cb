"""Console and file logging for CLI commands (``<model_dir>/logs/``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["LOGGER_NAME", "setup_logging"]

LOGGER_NAME = "tfuq"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(console)
    if model_dir is None:
        return None
    log_dir = Path(model_dir) / "logs"
    log_file = log_dir / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
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
    return log_file
