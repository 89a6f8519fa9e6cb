"""tfuq.log: the console and per-command log file; an unwritable model_dir is one line, not a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tfuq.errors import UserError
from tfuq.log import LOGGER_NAME, close_refused_log, setup_logging


def test_log_file_in_model_dir_receives_the_records(tmp_path: Path) -> None:
    path = setup_logging("train", tmp_path / "run")
    assert path is not None and path.parent == tmp_path / "run" / "logs" and path.name.startswith("train-")
    logging.getLogger(LOGGER_NAME).info("hello %d", 42)
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        handler.flush()
    assert "INFO tfuq: hello 42" in path.read_text(encoding="utf-8")
    assert setup_logging("info") is None


def test_a_model_dir_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    occupied = tmp_path / "model_dir"
    occupied.write_text("not a folder", encoding="utf-8")
    with pytest.raises(UserError, match=r"model_dir .*model_dir: cannot write its log folder"):
        setup_logging("train", occupied)
    assert occupied.read_text(encoding="utf-8") == "not a folder"


def test_a_refused_command_leaves_no_log_when_it_wrote_nothing_else(tmp_path: Path) -> None:
    path = setup_logging("train", tmp_path / "new" / "run")
    assert path is not None and path.is_file()
    logging.getLogger(LOGGER_NAME).info("checking the data")
    assert close_refused_log("bad data") is True
    assert not (tmp_path / "new").exists()  # the log, its folder and the model_dir made for it
    existing = tmp_path / "run"
    (existing / "logs").mkdir(parents=True)
    (existing / "logs" / "old.log").write_text("kept", encoding="utf-8")
    path = setup_logging("train", existing)
    assert close_refused_log("bad data") is True
    assert sorted(p.name for p in existing.rglob("*")) == ["logs", "old.log"]
    assert close_refused_log("nothing open") is False


def test_a_refused_command_that_wrote_something_keeps_its_log_ending_with_the_error(tmp_path: Path) -> None:
    path = setup_logging("train", tmp_path / "run")
    assert path is not None
    (tmp_path / "run" / "dataset_split.csv").write_text("s1,Training\n", encoding="utf-8")
    assert close_refused_log("training stopped at step 3") is False
    assert path.read_text(encoding="utf-8").rstrip().endswith("ERROR tfuq: training stopped at step 3")
