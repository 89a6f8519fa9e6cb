"""[REGRESSION]/[GAN] lesion: parsed, round-tripped, and every misuse is a one-line ConfigError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tfuq.config import ConfigError, load_config

REGRESSION = """
[MR]
path_to_search = data
filename_contains = _mr
[CT]
path_to_search = data
filename_contains = _ct
[TUMOUR]
path_to_search = data
filename_contains = _seg
interp_order = 0
[REGRESSION]
image = MR
output = CT
lesion = {lesion}
"""
GAN = """
[T1]
path_to_search = data
[T2]
path_to_search = data
[SEG]
path_to_search = data
[GAN]
conditioning = T1
image = T2
lesion = {lesion}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.ini"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "lesion"), [(REGRESSION, "TUMOUR"), (GAN, "SEG")])
def test_lesion_is_parsed_and_round_trips(tmp_path: Path, text: str, lesion: str) -> None:
    config = load_config(_write(tmp_path, text.format(lesion=lesion)))
    assert config.app.lesion == lesion
    assert lesion in config.sources and lesion not in config.input_sections
    again = load_config(_write(tmp_path, config.to_ini()))
    assert again.app == config.app and again.sources[lesion] == config.sources[lesion]


def test_lesion_defaults_to_empty(tmp_path: Path) -> None:
    text = "[MR]\npath_to_search = data\n[CT]\npath_to_search = data\n[REGRESSION]\nimage = MR\noutput = CT\n"
    assert load_config(_write(tmp_path, text)).app.lesion == ""


@pytest.mark.parametrize(
    ("lesion", "message"),
    [
        ("TUMOR", r"\[REGRESSION\] lesion: no input section \[TUMOR\] in the file"),
        ("SYSTEM", r"\[REGRESSION\] lesion: \[SYSTEM\] is not an input section"),
        ("MR", r"\[REGRESSION\] lesion: \[MR\] is a network input or the target"),
        ("CT", r"\[REGRESSION\] lesion: \[CT\] is a network input or the target"),
    ],
)
def test_bad_lesion_section_is_one_line(tmp_path: Path, lesion: str, message: str) -> None:
    text = REGRESSION.format(lesion=lesion) + ("[SYSTEM]\n" if lesion == "SYSTEM" else "")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(_write(tmp_path, text))
    assert "\n" not in str(info.value) and str(tmp_path / "app.ini") in str(info.value)


@pytest.mark.parametrize(
    ("section", "extra", "message"),
    [
        ("MR", "", r"\[MR\] target_normalisation = per_subject: only the target section \[CT\]"),
        ("CT", "", r"needs intensity_normalisation = minmax, percentile or zscore, got none"),
        ("CT", "intensity_normalisation = zscore\n", r"\[EVALUATION\] target_units = native: .*normalised"),
    ],
)
def test_per_subject_target_misuse_is_one_line(
    tmp_path: Path, section: str, extra: str, message: str
) -> None:
    text = REGRESSION.format(lesion="TUMOUR").replace(
        f"[{section}]\n", f"[{section}]\ntarget_normalisation = per_subject\n{extra}"
    )
    path = tmp_path / "app.ini"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value)
    ok = text.replace("[REGRESSION]", "[EVALUATION]\ntarget_units = normalised\n[REGRESSION]")
    path.write_text(ok)
    if section == "CT" and extra:
        assert load_config(path).per_subject_target
