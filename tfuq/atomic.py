"""Atomic file writing: a temp file in the target folder, then a rename.

A reader never sees a half-written output, and an interrupted run leaves the
previous file (if any) untouched. Existing files are refused unless the caller
says ``overwrite=True``, so no data is overwritten by accident.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["atomic_path", "write_json", "write_text"]


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
