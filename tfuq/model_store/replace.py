"""Start a model_dir afresh without losing anything: move its model aside (``tfuq train --overwrite``).

:func:`move_aside` moves what tfuq wrote for the model in a model_dir into
``<model_dir>/replaced-<YYYYmmdd-HHMMSS>/`` (:data:`~tfuq.model_store.layout.REPLACED_PREFIX`),
keeping each entry's relative path: the network, the stored configuration and
normalisation, ``checkpoints/``, ``calibration/``, the files of ``logs/``
(except the log files the running command writes), and the inference,
evaluation and export folders of the new and the stored configuration when
they lie inside the model_dir. Nothing is deleted.

Inputs stay where they are: the INI file, the input sections' folders and CSV
files, the phantom cache and the deep-ensemble folders, and every folder that
holds one of them (a model_dir may be the INI's own folder). The split file is
an input of the next run too: it stays, and a copy goes with the model (its
subjects are those the old model was trained on); delete it for a new split.
"""

from __future__ import annotations

import configparser
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from tfuq.config import PHANTOM_PREFIX, Config
from tfuq.model_store.layout import (
    CALIBRATION_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_DIR,
    MODEL_FILE,
    NORMALISATION_FILE,
    REPLACED_PREFIX,
)
from tfuq.typing import PathLike

__all__ = ["MODEL_ENTRIES", "move_aside"]

logger = logging.getLogger(__name__)

#: What tfuq writes for a model directly in its model_dir (``logs/`` is moved file by file).
MODEL_ENTRIES = (MODEL_FILE, CONFIG_FILE, NORMALISATION_FILE, CHECKPOINT_DIR, CALIBRATION_DIR)
#: Output folders (``SECTION``, ``key``) that belong to the model when inside its model_dir.
_OUTPUT_KEYS = (("INFERENCE", "save_seg_dir"), ("EVALUATION", "save_csv_dir"), ("EXPORT", "export_dir"))


def _absolute(path: PathLike) -> Path:
    return Path(os.path.normpath(Path(path).absolute()))


def _inputs(config: Config) -> list[Path]:
    """Paths the configuration reads (never moved, nor any folder holding one)."""
    found = [config.path, Path(config.phantom.cache_dir), Path(config.system.dataset_split_file)]
    found += [Path(p) for p in config.uncertainty.ensemble]
    for source in config.sources.values():
        found += [Path(p) for p in source.path_to_search if p and not p.startswith(PHANTOM_PREFIX)]
        if source.csv_file:
            found.append(Path(source.csv_file))
    return [_absolute(p) for p in found]


def _outputs(config: Config, stored: str | None) -> list[Path]:
    """The output folders of ``config`` and of the stored configuration text."""
    found = [Path(getattr(config.section(section), key)) for section, key in _OUTPUT_KEYS]
    if stored:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(stored)
        except configparser.Error:
            parser = configparser.ConfigParser(interpolation=None)
        for section, key in _OUTPUT_KEYS:
            value = parser.get(section, key, fallback="").strip()
            if value and Path(value).is_absolute():
                found.append(Path(value))
    return [_absolute(p) for p in found]


def _unique_folder(model_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = model_dir / f"{REPLACED_PREFIX}{stamp}", 1
    while folder.exists():
        n += 1
        folder = model_dir / f"{REPLACED_PREFIX}{stamp}-{n}"
    return folder


def move_aside(config: Config, *, stored: str | None = None, keep: Iterable[PathLike] = ()) -> Path | None:
    """Move the model in ``config.model_dir`` into a new ``replaced-<timestamp>/`` folder.

    Args:
        config: The configuration of the new run (its model_dir, inputs and outputs).
        stored: The stored configuration's text, whose output folders go too.
        keep: Files to leave in place (the running command's log files).

    Returns:
        The folder the model went to, or None when there was nothing to move.
    """
    model_dir = _absolute(config.model_dir)
    inputs = _inputs(config)
    kept = {_absolute(p) for p in keep}
    log_dir = model_dir / LOG_DIR
    candidates = [model_dir / name for name in MODEL_ENTRIES]
    if log_dir.is_dir():
        candidates += sorted(p for p in log_dir.iterdir() if _absolute(p) not in kept)
    candidates += _outputs(config, stored)

    chosen: list[Path] = []
    for path in sorted({_absolute(p) for p in candidates}, key=lambda p: (len(p.parts), str(p))):
        if model_dir not in path.parents or not os.path.lexists(path):
            continue
        if any(c == path or c in path.parents for c in chosen):
            continue  # inside a folder that goes anyway
        held = [q for q in inputs if q == path or path in q.parents]
        if held:
            logger.warning("%s stays in place: it holds %s, an input of the configuration", path, held[0])
            continue
        if any(k == path or path in k.parents for k in kept):
            continue
        chosen.append(path)
    if not chosen:
        return None
    split = _absolute(config.system.dataset_split_file)
    copy_split = model_dir in split.parents and split.is_file()
    folder = _unique_folder(model_dir)
    folder.mkdir(parents=True)
    for path in chosen:
        target = folder / path.relative_to(model_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
    if copy_split:
        target = folder / split.relative_to(model_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(split, target)
    names = ", ".join(str(p.relative_to(model_dir)) for p in chosen)
    logger.warning("--overwrite: the earlier model (%s) moved into %s", names, folder)
    if copy_split:
        logger.info(
            "the split %s stays in force (a copy went with the earlier model); delete it for a new split",
            split,
        )
    return folder
