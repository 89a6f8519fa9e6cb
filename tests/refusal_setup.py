"""Helpers of the refusal and kill tests: what a folder holds, a one-line CLI error, a killed CLI run.

Import as ``from refusal_setup import ...`` (tests/ is on ``sys.path``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tfuq.cli import main

__all__ = ["cli_error", "kill_when", "tree_state"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def tree_state(root: Path) -> dict[str, str]:
    """Every folder and file under ``root``: relative path -> ``"dir"`` or the sha256 of its bytes.

    The command logs every CLI run writes (``<model_dir>/logs/<command>-<time>.log``) are left
    out: they record the refusal itself.
    """
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if "logs" in rel.parts and (path.is_dir() or path.suffix == ".log"):
            continue
        state[str(rel)] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``tfuq ARGS`` in process; assert exit code 2, one error line, no traceback; return the line."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    _, err = capsys.readouterr()
    assert stop.value.code == 2, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(("tfuq: error:", "Error:"))]
    assert len(errors) == 1, err
    return errors[0]


def kill_when(
    script: str,
    args: list[str],
    ready: Path | Callable[[], bool],
    *,
    timeout: float = 300.0,
    poll: float = 0.005,
) -> subprocess.CompletedProcess:
    """Run ``script`` (Python, ``sys.argv[1:] == args``) in a subprocess; SIGKILL it when ``ready``.

    ``script`` patches what it needs and calls the CLI; it (or the code it runs) creates the
    file ``ready`` at the point the test wants the kill (e.g. between two files of a set), or
    ``ready`` is a function polled until it says so.

    Returns:
        The finished process (``returncode == -SIGKILL``, asserted).
    """
    reached = ready.exists if isinstance(ready, Path) else ready
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests"), env.get("PYTHONPATH", "")])
    code = [sys.executable, "-c", textwrap.dedent(script), *args]
    proc = subprocess.Popen(code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not reached():
            if proc.poll() is not None:
                raise AssertionError(f"ended before the kill point: {proc.stderr.read().decode()[-3000:]}")
            assert time.monotonic() < deadline, "the kill point was not reached in time"
            time.sleep(poll)
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
    return subprocess.CompletedProcess(code, proc.returncode, None, err)
