"""The writer lock of a model_dir: one tfuq process writes into a model_dir at a time.

A writer holds an exclusive ``fcntl.flock`` on ``<model_dir>/.tfuq.lock``
(:data:`~tfuq.model_store.layout.LOCK_FILE`) for as long as it writes; the file
records who holds it (pid, host, command, start time), so a second writer is
refused at once with one line naming the holder
(:class:`~tfuq.errors.UserError`: exit code 2 from the CLI).

- **Release.** Leaving the ``with`` block (normally or by an exception)
  removes the file and drops the lock; so does the end of the Python process
  (``atexit``). A killed process cannot clean up, but the kernel drops its
  ``flock`` with its last file descriptor.
- **Stale locks.** A lock file whose ``flock`` is free (its process is gone,
  killed or crashed) is taken over with a warning naming the run that left it.
- **Re-entry.** The same process may enter the lock of a model_dir again
  (e.g. a command that runs several stages, each of which locks): the lock
  counts its holders and is released by the outermost exit.
- **Filesystems without flock.** Where ``flock`` is not supported (some
  network filesystems), the recorded holder decides: a live process on this
  host, or any process on another host, holds the lock; remove the file by
  hand after such a run has ended.

Every stage that writes into a model_dir uses it as a context manager::

    with model_dir_lock(config.model_dir, command="tfuq train app.ini"):
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfuq.errors import UserError
from tfuq.model_store.layout import LOCK_FILE
from tfuq.typing import PathLike

try:  # POSIX; elsewhere the recorded holder alone decides
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockHolder", "ModelDirLock", "model_dir_lock", "read_holder"]

logger = logging.getLogger(__name__)

#: Errors of ``flock`` meaning "held by another open file", as opposed to "not supported here".
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
#: Attempts at locking a lock file that another process removed meanwhile (its release).
_ATTEMPTS = 5


class LockHolder(dict):
    """What a lock file records: ``pid``, ``host``, ``command``, ``started`` (a dict)."""

    def describe(self) -> str:
        """One phrase naming the holder, e.g. ``pid 12 on host1, 'tfuq train a.ini', since 2024-...``."""
        parts = [f"pid {self.get('pid', '?')} on {self.get('host', '?')}"]
        if self.get("command"):
            parts.append(repr(str(self["command"])))
        if self.get("started"):
            parts.append(f"since {self['started']}")
        return ", ".join(parts)

    @property
    def alive_here(self) -> bool:
        """The recorded process runs on this host (False when it is unknown or elsewhere)."""
        if self.get("host") != socket.gethostname():
            return False
        try:
            pid = int(self.get("pid", 0))
        except (TypeError, ValueError):
            return False
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


def read_holder(model_dir: PathLike) -> LockHolder | None:
    """The holder recorded in ``<model_dir>/.tfuq.lock`` (None: no file, or nothing readable in it)."""
    return _parse(Path(model_dir) / LOCK_FILE)


def _parse(path: Path) -> LockHolder | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return LockHolder(record) if isinstance(record, dict) else None


def _default_command() -> str:
    argv = list(sys.argv) or ["python"]
    argv[0] = Path(argv[0]).name
    return " ".join(argv)


# The locks this process holds: resolved model_dir -> (lock, depth). Guarded by _REGISTRY_LOCK.
_HELD: dict[str, tuple[ModelDirLock, int]] = {}
_REGISTRY_LOCK = threading.Lock()


class ModelDirLock:
    """The exclusive writer lock of one model_dir (see the module notes).

    Args:
        model_dir: The folder (created if missing).
        command: What the holder runs, recorded for the refusal message of a
            second writer; default this process's command line.

    Example:
        >>> with ModelDirLock("runs/a", command="tfuq train a.ini"):  # doctest: +SKIP
        ...     train()
    """

    def __init__(self, model_dir: PathLike, *, command: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.path = self.model_dir / LOCK_FILE
        self.command = command if command is not None else _default_command()
        self._fd: int | None = None
        self._key = ""
        self._pid = 0  # the process that took it (a forked child must not release it)

    @property
    def held(self) -> bool:
        """Whether this process holds the lock of this model_dir."""
        with _REGISTRY_LOCK:
            return bool(self._key) and self._key in _HELD

    def acquire(self) -> ModelDirLock:
        """Take the lock, or fail at once.

        Returns:
            self.

        Raises:
            UserError: another process holds it (the message names it), or the
                lock file cannot be created (model_dir is a file, not writable).
        """
        try:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            self._key = str(self.model_dir.resolve())
        except OSError as err:
            raise self._cannot(err) from None
        with _REGISTRY_LOCK:
            if self._key in _HELD:  # re-entry by this process
                owner, depth = _HELD[self._key]
                _HELD[self._key] = (owner, depth + 1)
                return self
            self._fd, self._pid = self._lock_file(), os.getpid()
            _HELD[self._key] = (self, 1)
        return self

    def release(self) -> None:
        """Drop one hold; the outermost removes the lock file and unlocks it."""
        with _REGISTRY_LOCK:
            if self._key not in _HELD:
                return
            owner, depth = _HELD[self._key]
            if depth > 1:
                _HELD[self._key] = (owner, depth - 1)
                return
            del _HELD[self._key]
            owner._unlock()

    def __enter__(self) -> ModelDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- the file ----------------------------------------------------------------------------------

    def _cannot(self, err: OSError) -> UserError:
        reason = err.strerror or type(err).__name__
        return UserError(
            f"{self.model_dir}: cannot create its lock file {LOCK_FILE} ({reason}); "
            "[SYSTEM] model_dir must be a writable folder"
        )

    def _refuse(self, holder: LockHolder | None) -> UserError:
        who = holder.describe() if holder else "a process that is starting or stopping"
        return UserError(
            f"{self.model_dir}: another tfuq run is writing to this model_dir ({who}); wait for it to "
            "finish, or use another [SYSTEM] model_dir"
        )

    def _lock_file(self) -> int:
        """Open, lock and fill the lock file; returns its descriptor."""
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise self._cannot(err) from None
            try:
                if not self._flock(fd):
                    continue  # the file was replaced while we locked it: lock the new one
                self._record(fd)
                return fd
            except BaseException:
                os.close(fd)
                raise
        raise self._refuse(_parse(self.path))

    def _flock(self, fd: int) -> bool:
        """Lock ``fd``; False when the path no longer names that file (released meanwhile)."""
        previous = _parse(self.path)
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError as err:
                if err.errno in _BUSY:
                    raise self._refuse(_parse(self.path)) from None
                logger.debug("flock unsupported on %s (%s): the recorded holder decides", self.path, err)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return False
        if previous is not None and previous.get("pid") != os.getpid():
            if not locked and (previous.alive_here or previous.get("host") != socket.gethostname()):
                raise self._refuse(previous)
            logger.warning(
                "%s: taking over the lock left by a run that ended without releasing it (%s)",
                self.model_dir,
                previous.describe(),
            )
        return True

    def _record(self, fd: int) -> None:
        started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        record: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": started,
        }
        data = (json.dumps(record) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def _unlock(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:  # remove the file while still holding it, then unlock (close)
            if self._pid == os.getpid() and os.path.samestat(os.fstat(fd), os.stat(self.path)):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)


@contextlib.contextmanager
def model_dir_lock(model_dir: PathLike, *, command: str | None = None) -> Iterator[ModelDirLock]:
    """Hold the writer lock of ``model_dir`` for the ``with`` block (see :class:`ModelDirLock`).

    Raises:
        UserError: another process holds it, or it cannot be created.
    """
    lock = ModelDirLock(model_dir, command=command)
    with lock:
        yield lock


@atexit.register
def _release_all() -> None:  # a process that exits inside a with block (os._exit excepted)
    with _REGISTRY_LOCK:
        owners = [owner for owner, _ in _HELD.values()]
        _HELD.clear()
    for owner in owners:
        owner._unlock()
