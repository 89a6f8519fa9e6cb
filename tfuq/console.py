"""A quiet console: TensorFlow's native start-up lines go to a file, not the terminal.

TensorFlow 2.21 logs through Abseil without initialising it, so its C++
lines (``oneDNN custom operations are on``, ``Could not find cuda drivers``,
``failed call to cuInit``, tf.data notices) are written straight to file
descriptor 2 whatever ``TF_CPP_MIN_LOG_LEVEL`` says. The only switch that
holds is the descriptor itself: :func:`quiet_native_stderr` points fd 2 at a
log file for the life of a command and gives Python (``sys.stderr``: tfuq's
log, click, progress bars, error lines) a private copy of the terminal.
Nothing is thrown away: the native lines are in the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["NATIVE_LOG_ENV", "quiet_native_stderr", "quiet_python_loggers"]

#: Environment variable naming the file that receives the native lines
#: (default: ``tfuq-native-<pid>.log`` in the temporary directory).
NATIVE_LOG_ENV = "TFUQ_NATIVE_LOG"

#: Python loggers of the TF stack that print at INFO/WARNING on every run.
_NOISY_LOGGERS = ("tensorflow", "absl", "h5py", "matplotlib")


def _default_log_path() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / f"tfuq-native-{os.getpid()}.log"


@contextlib.contextmanager
def quiet_native_stderr(log_path: Path | None = None) -> Iterator[Path | None]:
    """Send file descriptor 2 to ``log_path``; Python's ``sys.stderr`` stays on the terminal.

    Does nothing (yields None) when ``sys.stderr`` is not the process's own
    stderr (a test harness captured it) or has no file descriptor.

    Args:
        log_path: File for the native lines; default ``$TFUQ_NATIVE_LOG`` or
            ``tfuq-native-<pid>.log`` in the temporary directory. It is
            removed when the command ends normally or with a user error
            (exit 0 or 2) and kept, with its path printed, after a crash.

    Yields:
        The log file's path, or None when nothing was redirected.
    """
    try:
        own = sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):
        own = False
    if not own:
        yield None
        return
    path = Path(log_path or os.environ.get(NATIVE_LOG_ENV) or _default_log_path())
    sys.stderr.flush()
    terminal = os.dup(2)
    try:
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        os.close(terminal)
        yield None
        return
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(
        terminal, "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace"
    )
    os.dup2(log_fd, 2)
    os.close(log_fd)
    keep = False
    try:
        yield path
    except SystemExit as stop:
        keep = stop.code not in (None, 0, 2)
        raise
    except BaseException:
        keep = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(sys.stderr.fileno(), 2)
        sys.stderr.close()
        sys.stderr = python_stderr
        with contextlib.suppress(OSError):
            if keep and path.stat().st_size > 0:
                print(f"tfuq: TensorFlow's native log: {path}", file=sys.stderr)
            else:
                path.unlink()


def quiet_python_loggers(verbose: bool) -> None:
    """Quiet the TF stack's Python loggers (ERROR and above) unless ``verbose``."""
    level = logging.DEBUG if verbose else logging.ERROR
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
