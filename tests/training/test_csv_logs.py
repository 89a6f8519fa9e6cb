"""The training CSV logs: tolerant reading, repair on resume (each step once), damaged files kept aside."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tfuq.training.csv_logs import read_log, read_rows, render_log, repair_log

#: What two trainings appending to one file, then a kill in the middle of a row, used to leave: every
#: later resume crashed with "could not convert string to float: 'step'".
DAMAGED = """\
step,loss,nll,lr
1,5,4.5,0.001
2,4,3.5,0.001
step,loss,nll,lr
1,5.5,5,0.001
3,3,2.5,0.001
2,4.25,3.75,0.001
4,2,1.5,0.0
5,1,0.5
6,nan,nan,0.001
7,x,1,0.001
"""


def test_reading_keeps_well_formed_rows_the_last_of_each_step(tmp_path: Path) -> None:
    path = tmp_path / "training.csv"
    path.write_text(DAMAGED + "8,0.5,0.2,0.00")  # a last row without its newline: cut by a kill
    found = read_log(path)
    assert found.columns == ["step", "loss", "nll", "lr"]
    assert [(r["step"], r["loss"]) for r in found.rows] == [
        ("1", "5.5"), ("2", "4.25"), ("3", "3"), ("4", "2"), ("6", "nan"),
    ]  # fmt: skip
    assert [n for n, _ in found.damaged] == [4, 9, 11, 12]  # 2nd header, half row, text, cut row
    assert found.duplicates == 2 and not found.clean
    assert read_rows(path) == found.rows
    assert read_log(tmp_path / "absent.csv").rows == [] and read_rows(tmp_path / "absent.csv") == []


def test_repair_rewrites_the_good_rows_up_to_the_resumed_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "training.csv"
    path.write_text(DAMAGED)
    with caplog.at_level(logging.INFO, logger="tfuq.training.csv_logs"):
        kept = repair_log(path, upto=4)
    assert (
        path.read_text() == "step,loss,nll,lr\n1,5.5,5,0.001\n2,4.25,3.75,0.001\n3,3,2.5,0.001\n4,2,1.5,0.0\n"
    )
    assert kept.columns == ["step", "loss", "nll", "lr"] and len(kept.rows) == 4 and kept.clean
    warning, info = (
        [r for r in caplog.records if r.levelno == logging.WARNING],
        [r for r in caplog.records if r.levelno == logging.INFO],
    )
    assert "dropped 3 damaged line(s) (line 4, 9, 11) and 2 duplicated step(s)" in warning[0].getMessage()
    assert "dropped the rows of 1 step(s) after step 4" in info[0].getMessage()
    before = path.stat().st_mtime_ns
    caplog.clear()
    repair_log(path, upto=4)  # a clean file is left alone
    assert path.stat().st_mtime_ns == before and not caplog.records
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_a_file_without_a_header_is_kept_aside_and_the_log_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "validation.csv"
    path.write_bytes(b"\x00\x00garbage\xff\n1,2\n")
    kept = repair_log(path, upto=10)
    assert kept.columns == [] and not path.exists()
    (aside,) = tmp_path.iterdir()
    assert aside.name.startswith("validation.csv.damaged-") and aside.read_bytes().startswith(b"\x00\x00")
    assert repair_log(path, upto=10).rows == []  # absent: nothing to do
    path.write_text("\n")  # created by a run killed before its first row
    assert repair_log(path, upto=10).columns == [] and not path.exists()
    assert len(list(tmp_path.iterdir())) == 1


def test_render_round_trips() -> None:
    rows = [{"step": "1", "loss": "0.5"}, {"step": "2"}]
    assert render_log(["step", "loss"], rows) == "step,loss\n1,0.5\n2,\n"
