"""Atomic file writing: a temp file in the target folder, then a rename.

A reader never sees a half-written output, and an interrupted run leaves the
previous file (if any) untouched. Existing files are refused unless the caller
says ``overwrite=True``, so no data is overwritten by accident. A process killed
while writing leaves its temporary file (``.NAME.XXXXXXXX.tmpSUFFIXES``);
:func:`remove_interrupted_writes` removes those of a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["atomic_path", "is_interrupted_write", "remove_interrupted_writes", "write_json", "write_text"]

#: The temporary names :func:`atomic_path` makes: ``.`` + final name + ``.`` + mkstemp's 8 random
#: characters + ``.tmp`` + the final name's suffixes.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>.*)$")


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffixes (``.nii.gz`` stays ``.nii.gz``)
    so writers that pick a format from the name work unchanged.

    Args:
        path: Final destination.
        overwrite: Replace an existing file. Default False: an existing file is
            a :class:`~tfuq.errors.UserError`.

    Yields:
        The temporary path to write to.

    Raises:
        UserError: ``path`` exists and ``overwrite`` is False.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise UserError(f"{final}: already exists; refusing to overwrite it.")
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600; give the file the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o666 & ~umask)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8). Returns the final path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: PathLike, payload: Any, *, overwrite: bool = False) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically. Returns the final path."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n", overwrite=overwrite)


def is_interrupted_write(path: PathLike) -> bool:
    """Whether ``path`` has the name of an :func:`atomic_path` temporary file.

    Example:
        >>> is_interrupted_write(".model.keras.k3j_9xqa.tmp.keras"), is_interrupted_write("model.keras")
        (True, False)
    """
    match = _TEMP_NAME.match(Path(path).name)
    return bool(match) and match.group("suffix") == "".join(Path(match.group("name")).suffixes)


def remove_interrupted_writes(folder: PathLike) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_path` writes left in ``folder``.

    Only ``folder`` itself is searched (not its sub-folders), and only names
    of the pattern :func:`atomic_path` makes; call it when no other process
    writes there (under the model_dir's lock).

    Returns:
        The paths removed.
    """
    removed = []
    directory = Path(folder)
    if not directory.is_dir():
        return removed
    for path in sorted(directory.iterdir()):
        if not is_interrupted_write(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
