"""tfuq.atomic: all-or-nothing writes, overwrite refusal, normal file modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tfuq.atomic import atomic_path, write_json, write_text
from tfuq.errors import UserError


def test_write_refuse_overwrite_and_mode(tmp_path: Path) -> None:
    path = write_text(tmp_path / "a" / "x.txt", "one")
    assert path.read_text() == "one"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(UserError, match="already exists; refusing to overwrite"):
        write_text(path, "two")
    assert path.read_text() == "one"
    write_json(path, {"b": 1, "a": [1.5]}, overwrite=True)
    assert path.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "y.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
