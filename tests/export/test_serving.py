from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tfuq.errors import UserError
from tfuq.export.serving import (
    MODELS_CONFIG,
    check_model_name,
    list_versions,
    models_config_text,
    next_version,
    recover_versions,
    staged_version,
    write_models_config,
)


def _write_version(export_dir, name, version=None, *, overwrite=False, marker="x"):
    with staged_version(export_dir, name, version, overwrite=overwrite) as (staging, final):
        assert staging.is_dir() and not any(staging.iterdir())
        assert not staging.name.isdigit()  # hidden from TF Serving while written
        (staging / "saved_model.pb").write_text(marker)
    return final


def test_versions_count_up_from_one_and_ignore_other_folders(tmp_path):
    base = tmp_path / "mr2ct"
    assert list_versions(base) == [] and next_version(base) == 1
    assert _write_version(tmp_path, "mr2ct") == base / "1"
    (base / "notes").mkdir()
    (base / "7").mkdir()
    assert list_versions(base) == [1, 7]
    assert next_version(base) == 8
    assert _write_version(tmp_path, "mr2ct") == base / "8"
    assert _write_version(tmp_path, "mr2ct", 3) == base / "3"
    assert list_versions(base) == [1, 3, 7, 8]
    assert sorted(p.name for p in base.iterdir()) == ["1", "3", "7", "8", "notes"]  # no staging left


def test_existing_version_refused_unless_overwrite(tmp_path):
    final = _write_version(tmp_path, "m", 2, marker="old")
    with pytest.raises(UserError, match=r"version 2 .* already exists"):
        _write_version(tmp_path, "m", 2, marker="new")
    assert (final / "saved_model.pb").read_text() == "old"
    _write_version(tmp_path, "m", 2, overwrite=True, marker="new")
    assert (final / "saved_model.pb").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["2"]


def test_failed_write_leaves_nothing(tmp_path):
    _write_version(tmp_path, "m", 1, marker="old")
    with pytest.raises(RuntimeError), staged_version(tmp_path, "m", 1, overwrite=True) as (staging, _):
        (staging / "saved_model.pb").write_text("partial")
        raise RuntimeError("export failed")
    assert (tmp_path / "m" / "1" / "saved_model.pb").read_text() == "old"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]


@pytest.mark.parametrize("version", [0, -1, True, 1.5])
def test_bad_versions(tmp_path, version):
    with pytest.raises(UserError, match="--version"), staged_version(tmp_path, "m", version):
        pass


@pytest.mark.parametrize("name", ["", "a/b", "../x", "with space", ".hidden"])
def test_bad_model_names(name):
    with pytest.raises(UserError, match="model_name"):
        check_model_name(name)


def test_models_config_text_is_the_documented_proto(tmp_path):
    text = models_config_text(tmp_path, ["mr2ct"])
    expected = (
        "model_config_list {\n"
        "  config {\n"
        '    name: "mr2ct"\n'
        f'    base_path: "{tmp_path.absolute() / "mr2ct"}"\n'
        '    model_platform: "tensorflow"\n'
        "  }\n"
        "}\n"
    )
    assert text == expected


def test_write_models_config_lists_models_with_a_complete_version(tmp_path):
    _write_version(tmp_path, "b_model")
    _write_version(tmp_path, "a_model")
    (tmp_path / "empty_model" / "1").mkdir(parents=True)  # no saved_model.pb: not served
    path = write_models_config(tmp_path)
    assert path == tmp_path / MODELS_CONFIG
    text = path.read_text()
    assert text.count("config {") == 2
    assert text.index('name: "a_model"') < text.index('name: "b_model"')
    assert "empty_model" not in text
    write_models_config(tmp_path)  # rewriting is allowed


def _dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(out.stdout)


def _folder(path, marker):
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_text(marker)


def test_recovery_after_kills_at_every_point_of_an_export(tmp_path):
    dead, alive = _dead_pid(), 1
    base = tmp_path / "export" / "m"
    _folder(base / "1", "v1")
    _folder(base / f".staging-2-{dead}", "half")  # killed while writing version 2
    _folder(base / f".ready-3-{dead}", "new3")  # killed between the renames of an overwrite of 3
    _folder(base / f".replaced-3-{dead}", "old3")
    _folder(base / "4", "old4")  # killed before the old 4 was moved aside: the complete new one wins
    _folder(base / f".ready-4-{dead}", "new4")
    _folder(base / f".replaced-5-{dead}", "old5")  # killed after the new 5 was in place
    _folder(base / "5", "new5")
    _folder(base / ".staging-6-ab_cd12x", "legacy")  # a staging folder of an earlier tfuq version
    _folder(base / f".staging-7-{alive}", "running")  # another export, still running
    handled = recover_versions(base)
    expected = [f".ready-3-{dead}", f".ready-4-{dead}", f".replaced-5-{dead}", f".staging-2-{dead}"]
    assert sorted(handled) == sorted([*expected, ".staging-6-ab_cd12x"])  # .replaced-3: with its .ready
    assert sorted(p.name for p in base.iterdir()) == sorted(["1", "3", "4", "5", f".staging-7-{alive}"])
    for version, marker in (("1", "v1"), ("3", "new3"), ("4", "new4"), ("5", "new5")):
        assert (base / version / "saved_model.pb").read_text() == marker
    assert recover_versions(base) == [] and recover_versions(tmp_path / "none") == []
    # the next export cleans up first and writes the next free version
    (base / f".staging-7-{alive}").rename(base / f".staging-7-{dead}")
    assert _write_version(tmp_path / "export", "m") == base / "6"
    assert sorted(p.name for p in base.iterdir()) == ["1", "3", "4", "5", "6"]


def test_staging_names_carry_the_pid(tmp_path):
    with staged_version(tmp_path, "m") as (staging, final):
        assert staging.name == f".staging-1-{os.getpid()}" and final == tmp_path / "m" / "1"
        (staging / "saved_model.pb").write_text("x")


@pytest.mark.parametrize("occupied", ["export_dir", "model_folder", "parent"])
def test_an_export_folder_that_is_a_file_is_one_line(tmp_path, occupied):
    target = {
        "export_dir": tmp_path / "export",
        "model_folder": tmp_path / "export" / "m",
        "parent": tmp_path / "p",
    }
    target[occupied].parent.mkdir(parents=True, exist_ok=True)
    target[occupied].write_text("mine")
    export_dir = tmp_path / "p" / "export" if occupied == "parent" else tmp_path / "export"
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError, match=r"^\[EXPORT\] export_dir.*file") as info:
        _write_version(export_dir, "m")
    assert "\n" not in str(info.value)
    assert sorted(tmp_path.rglob("*")) == before
