"""configs/defaults.ini must list every key with its default: it is generated, and checked here."""

from __future__ import annotations

import configparser
from pathlib import Path

from tfuq.config import APPLICATIONS, SECTIONS, InputSource, field_specs, parse_value, render_defaults

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULTS = REPO_ROOT / "configs" / "defaults.ini"


def test_defaults_file_matches_schema() -> None:
    assert DEFAULTS.read_text(encoding="utf-8") == render_defaults(), (
        "configs/defaults.ini drifted from tfuq/config/sections.py: run `make defaults`"
    )


def test_defaults_file_lists_every_key_with_its_default() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(DEFAULTS, encoding="utf-8")
    expected = {**SECTIONS, **APPLICATIONS, "MR": InputSource}
    assert set(parser.sections()) == set(expected)
    for name, cls in expected.items():
        specs = field_specs(cls)
        assert set(parser[name]) == set(specs), name
        for key, text in parser[name].items():
            assert parse_value(specs[key], text) == specs[key].default, (name, key)
