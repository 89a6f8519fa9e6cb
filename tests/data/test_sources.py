"""tfuq.data.sources: the phantom: source, its cache, and resolution of sections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfuq.config import load_config
from tfuq.data.sources import ensure_phantom, phantom_folder, resolve_sources, uses_phantom
from tfuq.data.subjects import find_subjects
from tfuq.errors import UserError

INI = """
[SYSTEM]
model_dir = model
[PHANTOM]
num_subjects = 3
seed = 5
shape = 24, 16, 32
[MR]
path_to_search = phantom:
filename_contains = _mr
[CT]
path_to_search = phantom:
filename_contains = _ct
[BODY]
path_to_search = phantom:
filename_contains = _mask
[REGRESSION]
image = MR
output = CT
mask = BODY
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "app.ini"
    path.write_text(INI)
    return path


def test_phantom_is_generated_once_and_matched(config_path: Path) -> None:
    config = load_config(config_path)
    assert uses_phantom(config)
    folder = phantom_folder(config)
    assert folder == config_path.parent / "model" / "phantom" / "wholebody-n3-seed5-shape24x16x32"
    assert ensure_phantom(config) == folder
    meta = json.loads((folder / "phantom.json").read_text())
    assert meta["seed"] == 5
    stamp = (folder / "phantom000_ct.nii.gz").stat().st_mtime_ns
    sources = resolve_sources(config)
    assert sources["MR"].path_to_search == (str(folder),)
    assert (folder / "phantom000_ct.nii.gz").stat().st_mtime_ns == stamp  # reused, not rewritten
    subjects = find_subjects(sources)
    assert [s.id for s in subjects] == ["phantom000", "phantom001", "phantom002"]
    assert subjects[1].files["CT"] == folder / "phantom001_ct.nii.gz"
    assert subjects[1].files["BODY"] == folder / "phantom001_mask.nii.gz"
    assert not list(folder.parent.glob(".*tmp*")), "temporary folder left behind"


def test_incomplete_cache_is_refused_and_left_alone(config_path: Path) -> None:
    config = load_config(config_path)
    folder = phantom_folder(config)
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("user data")
    with pytest.raises(UserError, match="exists but is not a complete tfuq phantom"):
        ensure_phantom(config)
    assert (folder / "mine.txt").read_text() == "user data"


def test_other_sources_are_untouched(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    path = tmp_path / "app.ini"
    path.write_text("[A]\npath_to_search = d\n[B]\npath_to_search = d\n[REGRESSION]\nimage = A\noutput = B\n")
    config = load_config(path)
    assert not uses_phantom(config)
    assert resolve_sources(config) == dict(config.sources)
    assert not (tmp_path / "phantom").exists()


def test_contrast_variability_names_its_own_cache_and_reaches_the_phantom(config_path: Path) -> None:
    config_path.write_text(
        INI.replace("shape = 24, 16, 32", "shape = 24, 16, 32\ncontrast_variability = 0.25")
    )
    config = load_config(config_path)
    folder = ensure_phantom(config)
    assert folder.name == "wholebody-n3-seed5-shape24x16x32-cv0.25"
    meta = json.loads((folder / "phantom.json").read_text())
    assert meta["spec"]["contrast_variability"] == 0.25


@pytest.mark.parametrize("value", ["-0.1", "2", "lots"])
def test_bad_contrast_variability_is_a_config_error(config_path: Path, value: str) -> None:
    from tfuq.config import ConfigError

    config_path.write_text(INI.replace("seed = 5", f"seed = 5\ncontrast_variability = {value}"))
    with pytest.raises(ConfigError, match="contrast_variability"):
        load_config(config_path)
