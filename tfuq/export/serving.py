"""TF Serving model layout: numbered versions under a model folder, and ``models.config``.

TF Serving watches a *base path* per model and serves the highest numeric
sub-folder that holds a SavedModel::

    <export_dir>/
        models.config              # ModelServerConfig text proto, every model below
        <model_name>/
            1/saved_model.pb ...   # version 1
            2/saved_model.pb ...   # version 2 (served by default)

A new version is written into a hidden folder ``.staging-<version>-<pid>``
beside the versions and renamed into place when complete, so a running
server never loads a half-written SavedModel. Existing versions are refused
unless ``overwrite`` is asked for; the complete new version is then first
renamed ``.ready-<version>-<pid>``, the old folder moved aside
(``.replaced-<version>-<pid>``), the new one renamed into place and the old
one deleted. :func:`recover_versions`, run before every export, cleans up
after a killed one (only these names, only of processes that are gone): an
unfinished ``.staging-*`` is removed, a ``.ready-*`` version is put in place
(the kill came between the renames of an overwrite), a ``.replaced-*`` one
is deleted. So a kill anywhere leaves either the old version or the new
one, never a half one, and no debris after the next export.

Reference:
    TF Serving configuration: the ``model_config_list`` text format,
    https://www.tensorflow.org/tfx/serving/serving_config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from tfuq.atomic import check_output_folder, process_gone, recover_interrupted, write_text
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "MODELS_CONFIG",
    "SAVED_MODEL_FILE",
    "check_model_name",
    "list_versions",
    "models_config_text",
    "next_version",
    "recover_versions",
    "staged_version",
    "write_models_config",
]

#: File name of the TF Serving model server configuration in ``export_dir``.
MODELS_CONFIG = "models.config"
#: The file that makes a version folder a SavedModel.
SAVED_MODEL_FILE = "saved_model.pb"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: What a version being written leaves beside the versions: ``.<kind>-<version>-<pid>``.
_WORK = re.compile(r"^\.(?P<kind>staging|ready|replaced)-(?P<version>\d+)-(?P<pid>\d+)$")
#: The staging folder of tfuq versions before the pid was in its name: ``.staging-<version>-<random8>``.
_OLD_STAGING = re.compile(r"^\.staging-\d+-[a-z0-9_]{8}$")
_LOG = logging.getLogger(__name__)


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


def _place(ready: Path, final: Path) -> None:
    """Replace ``final`` (if any) by the complete version ``ready``: two renames, then the old one goes."""
    trash = ready.with_name(ready.name.replace(".ready-", ".replaced-", 1))
    if final.exists():
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
    ready.rename(final)
    shutil.rmtree(trash, ignore_errors=True)


def recover_versions(model_base: PathLike) -> list[str]:
    """Clean up after exports killed while writing under ``model_base``; call it before an export.

    Of processes that are gone (:func:`tfuq.atomic.process_gone`): a complete
    version awaiting its place (``.ready-<v>-<pid>``) is put in place, an
    unfinished one (``.staging-<v>-<pid>``, and the pid-less staging folders
    of earlier tfuq versions) and a replaced old one (``.replaced-<v>-<pid>``)
    are removed. Nothing else is touched.

    Args:
        model_base: ``<export_dir>/<model_name>``; nothing happens when it does not exist.

    Returns:
        The folder names handled.
    """
    base = Path(model_base)
    if not base.is_dir():
        return []
    work = [(p, _WORK.match(p.name)) for p in sorted(base.iterdir()) if p.is_dir()]
    gone = [(p, m) for p, m in work if m and process_gone(int(m["pid"]))]
    handled = []
    for path, match in gone:  # first the complete versions: their old folder may be in a .replaced-*
        if match["kind"] == "ready":
            _LOG.warning("%s: putting version %s of an interrupted export in place", base, match["version"])
            _place(path, base / match["version"])
            handled.append(path.name)
    for path, match in [*gone, *((p, None) for p, _ in work if _OLD_STAGING.match(p.name))]:
        if path.exists() and (match is None or match["kind"] != "ready"):
            _LOG.info("%s: removing %s of an interrupted export", base, path.name)
            shutil.rmtree(path, ignore_errors=True)
            handled.append(path.name)
    return handled


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
        nothing changes. What a killed export left is cleaned up first
        (:func:`recover_versions`).

    Raises:
        UserError: the version exists and ``overwrite`` is False, a bad name
            or version, or an export folder that is a file or not writable.
    """
    name = check_model_name(model_name)
    number = None if version is None else _check_version(version)
    check_output_folder(export_dir, "[EXPORT] export_dir")
    base = check_output_folder(Path(export_dir) / name, f"[EXPORT] export_dir: model {name!r}:")
    recover_interrupted(export_dir)  # e.g. a models.config temp file
    recover_versions(base)
    number = next_version(base) if number is None else number
    final = base / str(number)
    if final.exists() and not overwrite:
        raise UserError(
            f"{final}: version {number} of model {model_name!r} already exists; pass --overwrite "
            "to replace it, or omit --version to write the next free one."
        )
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"[EXPORT] export_dir {base}: cannot be created: {error.strerror or error}") from None
    staging = base / f".staging-{number}-{os.getpid()}"
    if staging.exists():  # left by a killed export that had this pid
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging, final
        if final.exists():
            ready = base / f".ready-{number}-{os.getpid()}"
            staging.rename(ready)  # complete: from here a kill is rolled forward by recover_versions
            _place(ready, final)
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
