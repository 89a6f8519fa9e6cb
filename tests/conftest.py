"""Shared pytest fixtures: real-data location, TF quietness, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The real glioma cases live beside the repository, never inside it.
SHARED_DATA = Path(os.environ.get("TFUQ_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tcga_dir() -> Path:
    """Folder with the two real TCGA-LGG cases; skips the test when absent."""
    folder = SHARED_DATA / "tcga-lgg"
    if not (folder / "TCGA-DU-7294").is_dir():
        pytest.skip(f"real data not found at {folder} (set TFUQ_SHARED_DATA to ../shared/data)")
    return folder.resolve()  # CI links shared/ beside the clone; compare real paths


@pytest.fixture(scope="session")
def brats_dir() -> Path:
    """Folder with the 18 real BraTS 2018 cases; skips the test when absent."""
    folder = SHARED_DATA / "brats2018"
    if not (folder / "Brats18_CBICA_APR_1").is_dir():
        pytest.skip(f"real data not found at {folder} (set TFUQ_SHARED_DATA to ../shared/data)")
    return folder.resolve()
