from __future__ import annotations

import pytest

from tfuq.errors import UserError
from tfuq.export.serving import (
    MODELS_CONFIG,
    check_model_name,
    list_versions,
    models_config_text,
    next_version,
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
