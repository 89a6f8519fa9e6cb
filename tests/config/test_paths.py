"""tfuq.config.paths: output folders stay in model_dir unless given as absolute paths."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from tfuq.config import ConfigError, load_config
from tfuq.config.paths import CONTAINED_OUTPUTS, inside_model_dir, note_outside_model_dir

MINIMAL = """
[SYSTEM]
model_dir = runs/a
[MR]
path_to_search = data
filename_contains = _mr
[CT]
path_to_search = data
filename_contains = _ct
[REGRESSION]
image = MR
output = CT
"""

KEYS = [(section, key) for section, keys in CONTAINED_OUTPUTS.items() for key in keys]


def _ini(tmp_path: Path) -> Path:
    path = tmp_path / "app.ini"
    path.write_text(textwrap.dedent(MINIMAL), encoding="utf-8")
    return path


def test_the_three_output_folders_are_contained() -> None:
    assert KEYS == [("INFERENCE", "save_seg_dir"), ("EVALUATION", "save_csv_dir"), ("EXPORT", "export_dir")]


@pytest.mark.parametrize(("section", "key"), KEYS)
@pytest.mark.parametrize("value", ["../../outside", "..", "sub/../../x", "./../b"])
def test_a_relative_path_leaving_model_dir_is_refused_in_one_line(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as info:
        load_config(_ini(tmp_path), [f"{section}.{key}={value}"])
    message = str(info.value)
    assert "\n" not in message
    assert f"[{section}] {key} = {value}: a relative path" in message
    assert "leads out of it" in message and "give an absolute path" in message
    assert sorted(tmp_path.rglob("*")) == [*before, tmp_path / "app.ini"]  # nothing created


@pytest.mark.parametrize(("section", "key"), KEYS)
def test_inside_and_absolute_paths_load(tmp_path: Path, section: str, key: str) -> None:
    model_dir = tmp_path / "runs" / "a"
    for value, expected in (
        ("out", model_dir / "out"),
        (".", model_dir),
        ("x/../y", model_dir / "y"),
        (str(tmp_path / "elsewhere"), tmp_path / "elsewhere"),
        ("~/tfuq-out", Path.home() / "tfuq-out"),
    ):
        config = load_config(_ini(tmp_path), [f"{section}.{key}={value}"])
        assert Path(getattr(config.section(section), key)) == expected


def test_other_model_dir_paths_keep_niftynet_resolution(tmp_path: Path) -> None:
    # a split file is also an input: the real-data configs read ../../configs/*.csv
    config = load_config(_ini(tmp_path), ["SYSTEM.dataset_split_file=../../split.csv"])
    assert Path(config.system.dataset_split_file) == tmp_path / "split.csv"


def test_inside_model_dir_is_lexical(tmp_path: Path) -> None:
    assert inside_model_dir(tmp_path / "m", tmp_path / "m")
    assert inside_model_dir(tmp_path / "m" / "a" / ".." / "b", tmp_path / "m")
    assert not inside_model_dir(tmp_path / "m" / ".." / "n", tmp_path / "m")
    assert not inside_model_dir(tmp_path / "mm", tmp_path / "m")  # a sibling sharing the prefix


def test_writing_outside_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tfuq"):
        assert not note_outside_model_dir(tmp_path / "m" / "inference", tmp_path / "m")
        assert note_outside_model_dir(tmp_path / "out", tmp_path / "m")
    assert [r.getMessage() for r in caplog.records] == [f"writing outside model_dir: {tmp_path / 'out'}"]
