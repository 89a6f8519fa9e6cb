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


def test_interrupted_writes_are_recognised_and_removed(tmp_path: Path) -> None:
    from tfuq.atomic import is_interrupted_write, remove_interrupted_writes

    for name in ("model.keras", "training.csv", "y.nii.gz", "checkpoint"):
        with pytest.raises(RuntimeError), atomic_path(tmp_path / name) as tmp:
            tmp.write_bytes(b"half")
            kept = tmp.with_name(tmp.name + "-copy")
            kept.write_bytes(b"half")  # the temp file as a killed process leaves it
            raise RuntimeError("killed")
        kept.rename(kept.with_name(kept.name[: -len("-copy")]))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".model.keras.abcdefgh.tmp.keras").write_text("deeper: not searched")
    others = [".model.keras.tmp", "model.keras", ".x.abcdefgh.tmp.nii", "notes.tmp", ".hidden", "a.tmp.keras"]
    for name in others:
        (tmp_path / name).write_text("a user's file")
    temps = sorted(p.name for p in tmp_path.iterdir() if is_interrupted_write(p))
    assert len(temps) == 4 and temps[0].startswith(".checkpoint.") and temps[-1].endswith(".tmp.nii.gz")
    removed = remove_interrupted_writes(tmp_path)
    assert sorted(p.name for p in removed) == temps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, "sub"])
    assert remove_interrupted_writes(tmp_path / "missing") == []
