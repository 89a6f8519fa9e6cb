"""tfuq.atomic: all-or-nothing writes (files and sets), overwrite refusal, normal file modes,
one-line errors for unusable folders, and the clean-up of a killed run's debris."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfuq.atomic import (
    atomic_files,
    atomic_path,
    check_output_folder,
    is_interrupted_write,
    recover_interrupted,
    write_json,
    write_text,
)
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


def _dead_pid() -> int:
    """The pid of a process that has exited (pids are not reused at once)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_temp_names_carry_the_pid(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "m.nii.gz") as tmp:
        assert tmp.name.startswith(f".m.nii.gz.{os.getpid()}-") and tmp.name.endswith(".tmp.nii.gz")


@pytest.mark.parametrize("case", ["file", "under_a_file"])
def test_a_folder_that_is_a_file_is_one_user_error_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    occupied = tmp_path / "out"
    occupied.write_text("mine")
    folder = occupied if case == "file" else occupied / "sub"
    with pytest.raises(UserError, match=r"^\[INFERENCE\] save_seg_dir .*out.*file") as info:
        check_output_folder(folder, "[INFERENCE] save_seg_dir")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="file"):  # not FileExistsError / NotADirectoryError
        write_text(folder / "x.txt", "data")
    with pytest.raises(UserError, match="file"), atomic_files(folder, ["a"], label="s"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and occupied.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_one_user_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for folder in (locked, locked / "new"):
            with pytest.raises(UserError, match="not writable"):
                check_output_folder(folder, "[INFERENCE] save_seg_dir")
            with pytest.raises(UserError, match="not writable"):
                write_text(folder / "x.txt", "data")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_a_folder_that_cannot_be_created_is_one_user_error(tmp_path: Path) -> None:
    # sysfs takes no new folders, not even from root (whom os.access lets through)
    with pytest.raises(UserError, match=r"tfuq-test-.*(not writable|cannot be)"):
        write_text(Path("/sys/kernel/tfuq-test-out/x.txt"), "data")


def test_a_set_is_moved_in_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "out"
    names = ["s_mean.txt", "s_std.txt", "s_qc.json"]
    with atomic_files(out, names, label="s") as staging:
        assert staging == out / f".staging-s-{os.getpid()}"
        for name in names:
            (staging / name).write_text(name)
            assert not (out / name).exists()  # nothing in place before the whole set is written
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    with pytest.raises(UserError, match="already exists"), atomic_files(out, names, label="s"):
        pass
    with atomic_files(out, names, label="s", overwrite=True) as staging:
        for name in names:
            (staging / name).write_text("new")
    assert {p.read_text() for p in out.iterdir()} == {"new"}


def test_a_failed_or_incomplete_set_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_files(out, ["a", "b"], label="s") as staging:
        (staging / "a").write_text("a")
        raise RuntimeError("interrupted between the files")
    assert list(out.iterdir()) == []
    with pytest.raises(ValueError, match=r"missing"), atomic_files(out, ["a", "b"], label="s") as staging:
        (staging / "a").write_text("a")
    assert list(out.iterdir()) == []
    with pytest.raises(ValueError, match="plain file names"), atomic_files(out, ["../a"], label="s"):
        pass


def test_recovery_removes_a_killed_runs_debris_and_completes_a_committed_set(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), 1  # pid 1 (init) runs as long as the machine does
    out = tmp_path / "out"
    unfinished = out / f".staging-s1-{dead}"
    unfinished.mkdir(parents=True)
    (unfinished / "s1_mean.nii.gz").write_bytes(b"half")
    committed = out / f".commit-s2-{dead}"
    committed.mkdir()
    (committed / "s2_std.nii.gz").write_text("std")
    (committed / "s2_qc.json").write_text("{}")
    (out / "s2_mean.nii.gz").write_text("mean")  # moved in before the kill
    temps = [f".s3_mean.nii.gz.{dead}-abc_1234.tmp.nii.gz", ".s3_std.nii.gz.x1y2z3_4.tmp.nii.gz"]
    for name in temps:
        (out / name).write_bytes(b"half")
    running = [f".staging-s4-{alive}", f".s5_mean.nii.gz.{alive}-abcdefgh.tmp.nii.gz"]
    (out / running[0]).mkdir()
    (out / running[1]).write_bytes(b"being written")
    others = [".staging-x", "notes.tmp", ".hidden", "s0_mean.nii.gz"]
    (out / others[0]).mkdir()
    for name in others[1:]:
        (out / name).write_text("mine")
    handled = recover_interrupted(out)
    assert sorted(handled) == sorted([unfinished.name, committed.name, *temps])
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted([*running, *others, "s2_mean.nii.gz", "s2_std.nii.gz", "s2_qc.json"])
    assert (out / "s2_qc.json").read_text() == "{}"
    assert recover_interrupted(out) == [] and recover_interrupted(tmp_path / "missing") == []


def test_own_pid_counts_as_gone_at_a_runs_start(tmp_path: Path) -> None:
    # a container's new run often gets the pid of the killed one
    leftover = tmp_path / f".staging-s-{os.getpid()}"
    leftover.mkdir()
    assert recover_interrupted(tmp_path) == [leftover.name] and not leftover.exists()


def test_interrupted_write_names_are_recognised() -> None:
    """A killed atomic_path / atomic_files leaves these names; a user's files are not taken for them."""
    pid = os.getpid()
    left = (f".model.keras.{pid}-k3j_9xqa.tmp.keras", ".y.nii.gz.abcdefgh.tmp.nii.gz", f".staging-s1-{pid}")
    for name in (*left, f".commit-s1-{pid}"):
        assert is_interrupted_write(Path(name)), name
    for name in ("model.keras", ".model.keras.tmp", "notes.tmp", ".hidden", "a.tmp.keras", ".staging-s1"):
        assert not is_interrupted_write(Path(name)), name
