"""TF Serving model layout: numbered versions under a model folder, and ``models.config``.

TF Serving watches a *base path* per model and serves the highest numeric
sub-folder that holds a SavedModel::

    <export_dir>/
        models.config              # ModelServerConfig text proto, every model below
        <model_name>/
            1/saved_model.pb ...   # version 1
            2/saved_model.pb ...   # version 2 (served by default)

A new version is written into a hidden temporary folder beside the versions
and renamed into place when complete, so a running server never loads a
half-written SavedModel. Existing versions are refused unless ``overwrite``
is asked for; the old folder is then replaced in one rename and deleted.

Reference:
    TF Serving configuration: the ``model_config_list`` text format,
    https://www.tensorflow.org/tfx/serving/serving_config.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tfuq.atomic import write_text
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "MODELS_CONFIG",
    "SAVED_MODEL_FILE",
    "check_model_name",
    "list_versions",
    "models_config_text",
    "next_version",
    "staged_version",
    "write_models_config",
]

#: File name of the TF Serving model server configuration in ``export_dir``.
MODELS_CONFIG = "models.config"
#: The file that makes a version folder a SavedModel.
SAVED_MODEL_FILE = "saved_model.pb"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_model_name(name: str) -> str:
    """Return ``name`` if it is usable as a served model name (and a folder name).

    Raises:
        UserError: empty, or characters other than letters, digits, ``_``, ``-``, ``.``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(
            f"[EXPORT] model_name: {name!r} is not a usable model name; expected letters, digits, "
            "'_', '-' or '.' (it is a folder name and part of the serving URL)."
        )
    return name


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"--version: expected an integer >= 1, got {version!r}")
    return version


def list_versions(model_base: PathLike) -> list[int]:
    """Numeric version folders under ``model_base``, ascending (non-numeric names ignored).

    Args:
        model_base: ``<export_dir>/<model_name>``; may not exist.

    Returns:
        list: version numbers, e.g. ``[1, 2, 5]``; empty when there is none.
    """
    base = Path(model_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_base: PathLike) -> int:
    """The next free version: one more than the highest existing one, 1 for a new model.

    Example:
        >>> next_version("/nonexistent/model")
        1
    """
    versions = list_versions(model_base)
    return versions[-1] + 1 if versions else 1


@contextlib.contextmanager
def staged_version(
    export_dir: PathLike,
    model_name: str,
    version: int | None = None,
    *,
    overwrite: bool = False,
) -> Iterator[tuple[Path, Path]]:
    """Yield a temporary folder to write a version into; move it into place on success.

    Args:
        export_dir: TF Serving base folder (created if missing).
        model_name: Served model name, see :func:`check_model_name`.
        version: Version number >= 1; None (default) takes :func:`next_version`.
        overwrite: Replace an existing version. Default False: refused.

    Yields:
        ``(staging_dir, final_dir)``: write the SavedModel into ``staging_dir``
        (an empty folder beside the versions, hidden from TF Serving by its
        non-numeric name); on normal exit it is renamed to ``final_dir``
        (``<export_dir>/<model_name>/<version>``). On error it is removed and
        nothing changes.

    Raises:
        UserError: the version exists and ``overwrite`` is False, a bad name or version.
    """
    base = Path(export_dir) / check_model_name(model_name)
    number = next_version(base) if version is None else _check_version(version)
    final = base / str(number)
    if final.exists() and not overwrite:
        raise UserError(
            f"{final}: version {number} of model {model_name!r} already exists; pass --overwrite "
            "to replace it, or omit --version to write the next free one."
        )
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{number}-", dir=base))
    try:
        yield staging, final
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".replaced-{number}-", dir=base))
            final.rename(trash / "old")
            staging.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _served_models(export_dir: Path) -> list[str]:
    """Model folders in ``export_dir`` that hold at least one complete version."""
    if not export_dir.is_dir():
        return []
    names = []
    for folder in sorted(p for p in export_dir.iterdir() if p.is_dir() and _NAME.match(p.name)):
        if any((folder / str(v) / SAVED_MODEL_FILE).is_file() for v in list_versions(folder)):
            names.append(folder.name)
    return names


def models_config_text(export_dir: PathLike, model_names: Sequence[str]) -> str:
    """TF Serving ``ModelServerConfig`` text proto serving ``model_names`` from ``export_dir``.

    Each model's ``base_path`` is the absolute ``<export_dir>/<name>``; TF
    Serving then serves its latest version (its default version policy).

    Args:
        export_dir: TF Serving base folder.
        model_names: Served model names.

    Returns:
        str: the text, e.g.::

            model_config_list {
              config {
                name: "mr2ct"
                base_path: "/abs/export/mr2ct"
                model_platform: "tensorflow"
              }
            }
    """
    root = Path(export_dir).absolute()
    lines = ["model_config_list {"]
    for name in model_names:
        path = str(root / check_model_name(name)).replace("\\", "\\\\").replace('"', '\\"')
        lines += [
            "  config {",
            f'    name: "{name}"',
            f'    base_path: "{path}"',
            '    model_platform: "tensorflow"',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_models_config(export_dir: PathLike) -> Path:
    """(Re)write ``<export_dir>/models.config`` listing every model folder with a complete version.

    Pass it to the server as ``tensorflow_model_server --model_config_file=...``.

    Returns:
        Path: the file written.
    """
    folder = Path(export_dir)
    path = folder / MODELS_CONFIG
    write_text(path, models_config_text(folder, _served_models(folder)), overwrite=True)
    return path
