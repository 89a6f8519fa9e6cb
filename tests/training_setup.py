"""Shared settings of the training tests: the tiny phantom job and small network geometries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tfuq.config import Config, load_config

__all__ = ["NETWORKS", "TINY_INI"]

#: A tiny regression job: 3 phantom subjects of 24 x 16 x 32 voxels, 16^3 windows, a small U-Net.
TINY_INI = """\
[SYSTEM]
model_dir = {model_dir}
seed = 0

[PHANTOM]
kind = wholebody
num_subjects = 3
shape = 24, 16, 32
cache_dir = {cache_dir}

[MR]
path_to_search = phantom:
filename_contains = _mr
spatial_window_size = 16, 16, 16
intensity_normalisation = percentile

[CT]
path_to_search = phantom:
filename_contains = _ct
filename_not_contains = _noise_std
spatial_window_size = 16, 16, 16
intensity_normalisation = window

[BODY]
path_to_search = phantom:
filename_contains = _mask
interp_order = 0

[NETWORK]
name = unet
batch_size = 2
depth = 2
base_filters = 4
queue_length = 2

[TRAINING]
max_iter = 2
save_every_n = 0
tensorboard_every_n = 0

[UNCERTAINTY]
family = normal
dropout = mc
dropout_rate = 0.2

[REGRESSION]
image = MR
output = CT
mask = BODY
"""

#: Small geometry per regression network (``--set`` overrides).
NETWORKS: dict[str, list[str]] = {
    "unet": [],
    "highres3dnet": [
        "NETWORK.name=highres3dnet",
        "NETWORK.base_filters=4",
        "NETWORK.blocks_per_stack=1",
        "MR.spatial_window_size=12, 12, 12",
        "CT.spatial_window_size=12, 12, 12",
    ],
    "multires": [
        "NETWORK.name=multires",
        "NETWORK.base_filters=4",
        "NETWORK.blocks_per_stack=1",
        "NETWORK.multires_factors=1, 2",
        "NETWORK.branch_filters=8, 8, 4",
        "NETWORK.batch_size=1",
        "MR.spatial_window_size=8, 8, 8",
        "CT.spatial_window_size=8, 8, 8",
    ],
}


# Fixtures of the training tests (tests/training, tests/stages/test_train.py import them in a conftest).


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
