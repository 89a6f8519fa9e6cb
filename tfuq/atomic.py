"""Atomic writing: one file (a temp file, then a rename) or a set of files (a staging folder).

A reader never sees a half-written output, and an interrupted run leaves the
previous file (if any) untouched. Existing files are refused unless the caller
says ``overwrite=True``, so no data is overwritten by accident.

- :func:`atomic_path` writes one file through ``.<name>.<pid>-<random>.tmp<suffixes>``
  beside it;
- :func:`atomic_files` writes a set of files (a subject's maps) into
  ``.staging-<label>-<pid>/`` inside the output folder and moves them into
  place only when every one is written, so a kill leaves all of them or none;
- :func:`recover_interrupted`, called when a run starts, removes what a killed
  run left in a folder (its staging folders and temp files; only these
  patterns, only of processes that are gone) and completes a set that was
  already being moved into place;
- :func:`check_output_folder` refuses, before anything is written, an output
  folder that is a file, lies under a file or cannot be written to.

The process id in the names tells a killed run's debris from a live run's
files: a name whose process is still running (another tfuq writing into the
same folder on this machine) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "atomic_files",
    "atomic_path",
    "check_output_folder",
    "is_interrupted_write",
    "process_gone",
    "recover_interrupted",
    "write_json",
    "write_text",
]

_LOG = logging.getLogger(__name__)

#: A set being written (incomplete): ``.staging-<label>-<pid>``.
_STAGING = re.compile(r"^\.staging-(?P<label>.+)-(?P<pid>\d+)$")
#: A complete set being moved into place: ``.commit-<label>-<pid>``.
_COMMIT = re.compile(r"^\.commit-(?P<label>.+)-(?P<pid>\d+)$")
#: An :func:`atomic_path` temp file: ``.<name>.<pid>-<random>.tmp<suffixes>``.
_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)-[a-z0-9_]+\.tmp(\..*)?$")
#: The same written by tfuq before the process id was part of the name: ``.<name>.<random8>.tmp...``.
_OLD_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\..*)?$")


def process_gone(pid: int) -> bool:
    """Whether the process that named a temp file or folder can no longer be writing it.

    The current process counts as gone: call this when a run starts, before
    it writes anything (a container's new run often gets the pid of the
    killed one). Processes of other users count as running.
    """
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


def check_output_folder(path: PathLike, what: str) -> Path:
    """Refuse an output folder that cannot be written, before anything is written.

    Nothing is created: the folder (or its nearest existing parent, when it
    does not exist yet) is looked at.

    Args:
        path: The folder outputs go to.
        what: How the user named it, for the message (e.g. ``[INFERENCE] save_seg_dir``).

    Returns:
        ``path`` as a Path.

    Raises:
        UserError: ``path`` is a file, a parent of it is a file, or the folder
            (or the parent it would be created in) is not writable.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder}: is a file, not a folder; give a folder (or move the file away)")
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"{what} {folder}: cannot be created, {existing} is a file; give a folder elsewhere "
            "(or move the file away)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" (it would be created in {existing})"
        raise UserError(f"{what} {folder}: not writable{where}; give a folder you can write to")
    return folder


def _make_folder(folder: Path, what: str) -> None:
    """``mkdir -p`` with a one-line error (e.g. root on a read-only file system passes the access check)."""
    check_output_folder(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{what} {folder}: cannot be created: {error.strerror or error}") from None


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffixes (``.nii.gz`` stays ``.nii.gz``)
    so writers that pick a format from the name work unchanged; it carries the
    process id so that :func:`recover_interrupted` can remove it once the
    process is gone.

    Args:
        path: Final destination.
        overwrite: Replace an existing file. Default False: an existing file is
            a :class:`~tfuq.errors.UserError`.

    Yields:
        The temporary path to write to.

    Raises:
        UserError: ``path`` exists and ``overwrite`` is False, or its folder is
            a file or cannot be written.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise UserError(f"{final}: already exists; refusing to overwrite it.")
    _make_folder(final.parent, f"{final.name}: output folder")
    suffix = "".join(final.suffixes)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.name}.{os.getpid()}-", suffix=f".tmp{suffix}", dir=final.parent
        )
    except OSError as error:
        raise UserError(f"{final}: cannot be written: {error.strerror or error}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600; give the file the usual umask-based mode
            tmp.chmod(_umask_mode())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_names(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        if not isinstance(name, str) or not name or Path(name).name != name or name in {".", ".."}:
            raise ValueError(f"Expected plain file names. Received: {name!r}")
        out.append(name)
    if len(set(out)) != len(out):
        raise ValueError(f"Expected distinct file names. Received: {out}")
    return out


def _move_in(commit: Path, folder: Path, names: Sequence[str]) -> None:
    """Move the files of a complete set into ``folder`` (``names`` first, in order), then drop ``commit``."""
    present = {p.name for p in commit.iterdir() if p.is_file() and not _TEMP.match(p.name)}
    order = [n for n in names if n in present] + sorted(present - set(names))
    for name in order:
        os.replace(commit / name, folder / name)
    shutil.rmtree(commit, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(
    folder: PathLike, names: Sequence[str], *, label: str, overwrite: bool = False
) -> Iterator[Path]:
    """Write a set of files into ``folder`` as one: all of them, or none.

    The files are written into the staging folder
    ``<folder>/.staging-<label>-<pid>`` this yields. On normal exit it is
    renamed ``.commit-<label>-<pid>`` (from then on the set counts as
    written) and its files are moved into ``folder`` in the order of
    ``names`` (put last the file whose presence says the set is complete,
    e.g. a subject's ``qc.json``). On an error the staging folder is removed
    and ``folder`` is unchanged.

    A kill while the files are written leaves only the staging folder, which
    :func:`recover_interrupted` removes at the next run's start; a kill
    during the moves (a few renames) leaves the commit folder, whose
    remaining files it moves into place.

    Args:
        folder: The output folder (created if missing).
        names: The file names of the set (no folders).
        label: Names the staging folder, e.g. the subject id.
        overwrite: Replace existing files of these names. Default False: one
            existing file refuses the whole set.

    Yields:
        The staging folder to write ``names`` into.

    Raises:
        UserError: a file of the set exists and ``overwrite`` is False, or
            ``folder`` is a file or cannot be written.
        ValueError: names that are not plain file names, or a name not
            written when the block ends.
    """
    final = Path(folder)
    names = _check_names(names)

    def refuse_existing() -> None:
        existing = [final / n for n in names if (final / n).exists()]
        if existing and not overwrite:
            raise UserError(
                f"{existing[0]}: already exists ({len(existing)} file(s) of {label!r}); refusing to "
                "overwrite."
            )

    refuse_existing()
    _make_folder(final, "output folder")
    staging = final / f".staging-{label}-{os.getpid()}"
    if staging.exists():  # left by a killed run that had this pid
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
        missing = [n for n in names if not (staging / n).is_file()]
        if missing:
            raise ValueError(f"Expected every file of the set written. Received: {missing} missing")
        refuse_existing()  # another process may have written them meanwhile
        commit = final / f".commit-{label}-{os.getpid()}"
        if commit.exists():
            shutil.rmtree(commit)
        staging.rename(commit)
        _move_in(commit, final, names)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def recover_interrupted(folder: PathLike) -> list[str]:
    """Clean up after runs killed while writing into ``folder``; call it when a run starts.

    Of processes that are gone (:func:`process_gone`): a complete set being
    moved into place (``.commit-*``) is moved in; a set being written
    (``.staging-*``) and :func:`atomic_path` temp files (``.<name>.<pid>-*.tmp*``,
    and the pid-less ``.<name>.<random>.tmp*`` of earlier tfuq versions) are
    removed. Nothing else is touched, nor anything of a running process.

    Args:
        folder: An output folder; nothing happens when it does not exist.

    Returns:
        The names handled, sorted.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    handled = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        commit, staging, temp = _COMMIT.match(name), _STAGING.match(name), _TEMP.match(name)
        if entry.is_dir() and commit and process_gone(int(commit["pid"])):
            _LOG.warning("%s: completing the set %r an interrupted run was moving in", root, commit["label"])
            _move_in(entry, root, ())
        elif entry.is_dir() and staging and process_gone(int(staging["pid"])):
            _LOG.info("%s: removing the unfinished set %r of an interrupted run", root, staging["label"])
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file() and (process_gone(int(temp["pid"])) if temp else _OLD_TEMP.match(name)):
            _LOG.info("%s: removing the temp file %s of an interrupted write", root, name)
            entry.unlink(missing_ok=True)
        else:
            continue
        handled.append(name)
    return handled


def is_interrupted_write(path: PathLike) -> bool:
    """Whether ``path`` is named like what an interrupted write leaves (temp file, staging or commit folder).

    Example:
        >>> is_interrupted_write(".model.keras.123-k3j_9xqa.tmp.keras"), is_interrupted_write("model.keras")
        (True, False)
    """
    name = Path(path).name
    return any(pattern.match(name) for pattern in (_TEMP, _OLD_TEMP, _STAGING, _COMMIT))


def write_text(path: PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8). Returns the final path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: PathLike, payload: Any, *, overwrite: bool = False) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically. Returns the final path."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n", overwrite=overwrite)
