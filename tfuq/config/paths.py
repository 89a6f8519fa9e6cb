"""Where outputs may go: inside ``model_dir``, or wherever an absolute path says.

An output folder of :data:`CONTAINED_OUTPUTS` given as a relative path is
resolved against ``[SYSTEM] model_dir`` (NiftyNet's rule), so a relative path
that climbs out of it (``../../outside``) is almost always a slip: the config
loader refuses it with :func:`check_contained_outputs`. Writing outside
model_dir is allowed when the path is given as an absolute one (``~`` counts:
it is the user's home); the stage that writes there logs it once with
:func:`note_outside_model_dir`. The check is lexical (``..`` and ``.`` are
resolved, symbolic links are not followed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tfuq.config.errors import ConfigError
from tfuq.typing import PathLike

__all__ = ["CONTAINED_OUTPUTS", "check_contained_outputs", "inside_model_dir", "note_outside_model_dir"]

_LOG = logging.getLogger(__name__)

#: Section -> output folder keys that a relative path may not lead out of model_dir.
CONTAINED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "INFERENCE": ("save_seg_dir",),
    "EVALUATION": ("save_csv_dir",),
    "EXPORT": ("export_dir",),
}


def inside_model_dir(path: PathLike, model_dir: PathLike) -> bool:
    """Whether ``path`` is ``model_dir`` or lies under it (lexically, after resolving ``..``)."""
    folder = Path(os.path.normpath(Path(model_dir).absolute()))
    target = Path(os.path.normpath(Path(path).absolute()))
    return target == folder or folder in target.parents


def check_contained_outputs(ini: Path, name: str, section: Any, model_dir: Path) -> None:
    """Refuse a relative output folder of ``[name]`` that resolves outside ``model_dir``.

    Args:
        ini: The config file, for the message.
        name: The section's INI name, e.g. ``INFERENCE``.
        section: The parsed section, its paths not yet resolved.
        model_dir: The resolved ``[SYSTEM] model_dir``.

    Raises:
        ConfigError: a key of :data:`CONTAINED_OUTPUTS` holds a relative path
            leading out of ``model_dir``.
    """
    for key in CONTAINED_OUTPUTS.get(name, ()):
        value = getattr(section, key)
        given = Path(os.path.expanduser(value)) if value else None
        if given is None or given.is_absolute() or inside_model_dir(model_dir / given, model_dir):
            continue
        raise ConfigError(
            f"{ini}: [{name}] {key} = {value}: a relative path resolves against model_dir and this one "
            f"leads out of it (to {os.path.normpath(model_dir / given)}); give an absolute path to "
            "write outside model_dir, or a folder inside it"
        )


def note_outside_model_dir(path: PathLike, model_dir: PathLike) -> bool:
    """Log ``writing outside model_dir: PATH`` when ``path`` lies outside ``model_dir``.

    Returns:
        Whether it does.
    """
    if inside_model_dir(path, model_dir):
        return False
    _LOG.info("writing outside model_dir: %s", Path(path))
    return True
