"""Fixtures of the training tests: a tiny phantom shared by the session and configs on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from training_setup import TINY_INI

from tfuq.config import Config, load_config


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom cache folder for every training test of the session."""
    return tmp_path_factory.mktemp("phantom-cache")


@pytest.fixture
def tiny_ini(tmp_path: Path, phantom_cache: Path) -> Path:
    """The tiny INI file, its model_dir ``<tmp>/run``."""
    path = tmp_path / "tiny.ini"
    path.write_text(TINY_INI.format(model_dir=tmp_path / "run", cache_dir=phantom_cache))
    return path


@pytest.fixture
def tiny_config(tiny_ini: Path) -> Callable[..., Config]:
    """``tiny_config(*overrides)`` loads the tiny INI with ``SECTION.key=value`` overrides."""

    def load(*overrides: str) -> Config:
        return load_config(tiny_ini, list(overrides))

    return load
