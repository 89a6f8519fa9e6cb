"""Another process holding a model_dir's writer lock, for the lock tests (``from lock_setup import ...``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

__all__ = ["assert_refused_while_locked", "start_holder"]

#: Takes the lock of argv[1], says so, and holds it until its stdin closes (``hold``) or kills
#: itself without releasing it (``die``).
HOLDER = textwrap.dedent(
    """
    import os, signal, sys
    from tfuq.model_store.lock import model_dir_lock
    with model_dir_lock(sys.argv[1], command="tfuq train holder.ini"):
        print("held", flush=True)
        if sys.argv[2] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()
    print("released", flush=True)
    """
)


def start_holder(model_dir: Path, mode: str = "hold") -> subprocess.Popen[str]:
    """A real other process that has taken the lock of ``model_dir`` (``mode``: hold or die)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(model_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read() if proc.stderr else ""
    return proc


def assert_refused_while_locked(model_dir: Path, action: Callable[[], object]) -> None:
    """``action()`` run while another process holds ``model_dir``'s lock fails with the one-line error."""
    import pytest

    from tfuq.errors import UserError

    holder = start_holder(model_dir)
    try:
        with pytest.raises(
            UserError, match=rf"another tfuq run is writing to this model_dir \(pid {holder.pid} "
        ):
            action()
    finally:
        holder.communicate(input="", timeout=60)
