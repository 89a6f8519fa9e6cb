"""The model_dir writer lock: a second writer refused in one line, stale locks taken over, release."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lock_setup import start_holder

from tfuq.errors import UserError
from tfuq.model_store import lock as lock_module
from tfuq.model_store.layout import LOCK_FILE
from tfuq.model_store.lock import ModelDirLock, model_dir_lock, read_holder


@pytest.fixture
def holder(tmp_path: Path):
    """A real other process holding the lock of ``tmp_path / 'run'``."""
    proc = start_holder(tmp_path / "run")
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_a_second_writer_fails_at_once_with_one_line_naming_the_holder(tmp_path: Path, holder) -> None:
    model_dir = tmp_path / "run"
    recorded = read_holder(model_dir)
    assert recorded is not None and recorded["pid"] == holder.pid and recorded["host"] == socket.gethostname()
    with pytest.raises(UserError) as info:
        ModelDirLock(model_dir).acquire()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"{model_dir}: another tfuq run is writing to this model_dir (pid {holder.pid} on "
    )
    assert "'tfuq train holder.ini', since " in message and "use another [SYSTEM] model_dir" in message
    assert read_holder(model_dir)["pid"] == holder.pid  # the refusal changed nothing

    holder.stdin.close()  # the holder releases: the file goes, a new writer gets the lock
    assert holder.stdout.readline().strip() == "released"
    holder.wait(timeout=30)
    assert not (model_dir / LOCK_FILE).exists()
    with model_dir_lock(model_dir, command="second") as lock:
        assert lock.held and read_holder(model_dir)["command"] == "second"
    assert not (model_dir / LOCK_FILE).exists()


def test_a_stale_lock_of_a_killed_process_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "run"
    proc = start_holder(model_dir, "die")
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = read_holder(model_dir)
    assert left is not None and left["pid"] == proc.pid  # killed: the file and its record stay
    with caplog.at_level(logging.WARNING, logger="tfuq.model_store.lock"), model_dir_lock(model_dir):
        assert read_holder(model_dir)["pid"] == os.getpid()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "taking over the lock left by a run that ended without releasing it" in warning
    assert f"pid {proc.pid} on {socket.gethostname()}" in warning
    assert not (model_dir / LOCK_FILE).exists()


def test_released_on_an_exception_and_reentrant_in_one_process(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), model_dir_lock(tmp_path):
        assert (tmp_path / LOCK_FILE).is_file()
        raise RuntimeError("boom")
    assert not (tmp_path / LOCK_FILE).exists()

    outer = ModelDirLock(tmp_path, command="outer")
    with outer:
        with model_dir_lock(tmp_path, command="inner"):  # e.g. a stage run by a command that locked
            assert read_holder(tmp_path)["command"] == "outer"
        assert outer.held and (tmp_path / LOCK_FILE).is_file()  # the outermost exit releases
    assert not outer.held and not (tmp_path / LOCK_FILE).exists()
    outer.release()  # a second release is a no-op


def test_a_model_dir_that_cannot_hold_a_lock_is_one_line(tmp_path: Path) -> None:
    occupied = tmp_path / "file"
    occupied.write_text("not a folder")
    with pytest.raises(UserError, match=r"file: cannot create its lock file \.tfuq\.lock \(.*\); \[SYSTEM\]"):
        ModelDirLock(occupied).acquire()
    with pytest.raises(UserError, match="cannot create its lock file"):
        ModelDirLock(occupied / "below").acquire()


def test_without_flock_the_recorded_holder_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_module, "fcntl", None)  # e.g. a network filesystem without flock
    record = {"pid": os.getppid(), "host": socket.gethostname(), "command": "alive", "started": "then"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    with pytest.raises(UserError, match=rf"pid {os.getppid()} on .*'alive'"):
        ModelDirLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).write_text(json.dumps({**record, "host": "elsewhere"}))
    with pytest.raises(UserError, match=r"pid \d+ on elsewhere"):
        ModelDirLock(tmp_path).acquire()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / LOCK_FILE).write_text(json.dumps({**record, "pid": int(dead.stdout)}))
    with model_dir_lock(tmp_path):
        assert read_holder(tmp_path)["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()
