"""Resolve a config's input sources to folders, generating the phantom on first use.

``path_to_search = phantom:`` selects the built-in phantom described by the
``[PHANTOM]`` section. It is generated once into
``<[PHANTOM] cache_dir>/<kind>-n<num_subjects>-seed<seed>[-shape..][-vox..][-cv..]``
(written to a temporary folder, then renamed, so an interrupted generation
never leaves a half-written cache) and reused afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path

from tfuq.config import PHANTOM_PREFIX, Config, InputSource
from tfuq.errors import UserError

__all__ = ["ensure_phantom", "phantom_folder", "resolve_sources", "uses_phantom"]

logger = logging.getLogger(__name__)
_MARKER = "phantom.json"


def uses_phantom(config: Config) -> bool:
    """Whether any input source searches ``phantom:``."""
    return any(PHANTOM_PREFIX in s.path_to_search for s in config.sources.values())


def phantom_folder(config: Config) -> Path:
    """Cache folder of the phantom that ``config``'s ``[PHANTOM]`` section describes."""
    spec = config.phantom
    name = f"{spec.kind}-n{spec.num_subjects}-seed{spec.seed}"
    if spec.shape:
        name += "-shape" + "x".join(str(n) for n in spec.shape)
    if spec.voxel_size:
        name += "-vox" + "x".join(f"{v:g}" for v in spec.voxel_size)
    if spec.contrast_variability:
        name += f"-cv{spec.contrast_variability:g}"
    return Path(spec.cache_dir) / name


def ensure_phantom(config: Config) -> Path:
    """Return the phantom cache folder, generating it when absent.

    Raises:
        UserError: the folder exists but is not a complete phantom (it is
            left untouched: remove it to regenerate).
    """
    folder = phantom_folder(config)
    if (folder / _MARKER).is_file():
        return folder
    if folder.exists():
        raise UserError(f"{folder}: exists but is not a complete tfuq phantom (no {_MARKER}); remove it")
    from tfuq.data.phantom import write_phantom

    spec = config.phantom
    kwargs: dict[str, object] = {"kind": spec.kind, "num_subjects": spec.num_subjects, "seed": spec.seed}
    if spec.shape:
        kwargs["shape"] = spec.shape
    if spec.voxel_size:
        kwargs["voxel_size"] = spec.voxel_size
    if spec.contrast_variability:
        kwargs["contrast_variability"] = spec.contrast_variability
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Generating the %s phantom (%d subjects) in %s", spec.kind, spec.num_subjects, folder)
    try:
        import click

        with click.progressbar(
            length=spec.num_subjects, label=f"{spec.kind} phantom", file=sys.stderr
        ) as bar:
            write_phantom(tmp, progress=bar.update, **kwargs)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_sources(config: Config) -> dict[str, InputSource]:
    """Input sources with ``phantom:`` replaced by the (generated) phantom folder."""
    folder = str(ensure_phantom(config)) if uses_phantom(config) else ""
    return {
        name: dataclasses.replace(
            source,
            path_to_search=tuple(folder if p == PHANTOM_PREFIX else p for p in source.path_to_search),
        )
        for name, source in config.sources.items()
    }
