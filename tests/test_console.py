"""A quiet console: native (C++) stderr lines go to a file; Python's stderr stays on the terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_NATIVE_MARKERS = ("oneDNN", "cuda", "absl::InitializeLog", "cpu_feature_guard")


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)


def test_native_lines_go_to_the_file_and_python_lines_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "native.log"
    done = _python(
        f"""
        import os, sys
        from pathlib import Path
        from tfuq.console import quiet_native_stderr
        with quiet_native_stderr(Path({str(log)!r})) as path:
            os.write(2, b"native line\\n")
            print("python line", file=sys.stderr)
            print("kept", Path(path).read_text().strip())
        os.write(2, b"native after\\n")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["python line", "native after"]
    assert done.stdout.strip() == "kept native line"
    assert not log.exists()  # a command that ends normally leaves no file


def test_a_crash_keeps_the_native_log_and_names_it(tmp_path: Path) -> None:
    log = tmp_path / "native.log"
    done = _python(
        f"""
        import os
        from pathlib import Path
        from tfuq.console import quiet_native_stderr
        with quiet_native_stderr(Path({str(log)!r})):
            os.write(2, b"F0000 something fatal\\n")
            raise RuntimeError("boom")
        """,
        tmp_path,
    )
    assert done.returncode == 1
    assert f"TensorFlow's native log: {log}" in done.stderr
    assert "RuntimeError: boom" in done.stderr
    assert log.read_text() == "F0000 something fatal\n"


def test_captured_stderr_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    from tfuq.console import quiet_native_stderr

    with quiet_native_stderr() as path:
        print("seen", file=sys.stderr)
    assert path is None
    assert capsys.readouterr().err == "seen\n"


def test_tfuq_prints_no_tensorflow_start_up_lines_unless_verbose(tmp_path: Path) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text(
        "[SYSTEM]\nmodel_dir = run\n[MR]\npath_to_search = nowhere\nfilename_contains = _mr\n"
        "spatial_window_size = 8, 8, 8\n[CT]\npath_to_search = nowhere\nfilename_contains = _ct\n"
        "[NETWORK]\nname = unet\ndepth = 2\nbase_filters = 2\n[REGRESSION]\nimage = MR\noutput = CT\n",
        encoding="utf-8",
    )
    tfuq = [sys.executable, "-c", "from tfuq.cli import main; main()"]
    quiet = subprocess.run([*tfuq, "info", str(ini)], capture_output=True, text=True, timeout=300)
    loud = subprocess.run([*tfuq, "-v", "info", str(ini)], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "parameters:" in quiet.stdout
    assert not [line for line in quiet.stderr.splitlines() if any(m in line for m in _NATIVE_MARKERS)]
    # -v shows them: the pinned TensorFlow prints its oneDNN / CUDA start-up lines on every run
    assert any(m in loud.stderr for m in _NATIVE_MARKERS)
