"""A trained model on your own scans in one command: no INI to edit.

``tfuq infer MODEL_DIR --image T1=scan.nii.gz --output-dir out/`` reads the
configuration stored with the model (``<model_dir>/training_config.ini``,
written by ``tfuq train``), so the normalisation, window, family,
calibration and reliability reference are the ones the model was trained
and calibrated with. :func:`model_config` builds that configuration with
the output folder and overwrite rule of the command line;
:func:`image_subject` turns ``SECTION=FILE`` pairs into one subject's files.

A section that reads the same files as an input section (e.g. a brain mask
``[BRAIN]`` defined as the non-zero voxels of the T1, the same
``filename_contains``) gets the input's file, so the mask used for
normalisation at training is used again; any other section the model uses
(a separate mask, the target for evaluation) can be given with its own
``--image``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from tfuq.config import SECTIONS, Config, InputSource, field_specs, load_config
from tfuq.data.subjects import file_subject_id
from tfuq.errors import UserError
from tfuq.model_store.layout import CONFIG_FILE

__all__ = ["image_subject", "model_config"]

_LOG = logging.getLogger(__name__)

#: The resolved configuration ``tfuq train`` stores in model_dir.


def model_config(
    source: Path,
    overrides: Sequence[str] = (),
    *,
    output_dir: Path | None = None,
    overwrite: bool | None = None,
    input_dir: Path | None = None,
) -> Config:
    """The configuration of a config file, or of the model stored in a model_dir.

    Args:
        source: An INI file, or a model_dir holding ``training_config.ini``
            (its ``[SYSTEM] model_dir`` then becomes ``source``, wherever the
            folder was trained or moved).
        overrides: ``SECTION.key=value`` strings, applied last.
        output_dir: ``[INFERENCE] save_seg_dir``.
        overwrite: ``[INFERENCE] overwrite`` (None: the config's).
        input_dir: Search every input section in this folder (matched by
            the sections' ``filename_contains``), inferring every subject
            found (``dataset_to_infer = all``).

    Returns:
        The loaded configuration.

    Raises:
        UserError: ``source`` is neither a config file nor a model_dir;
            ``input_dir`` is not a folder; any config error.
    """
    source = Path(source).expanduser()
    settings: list[str] = []
    if source.is_dir():
        ini = source / CONFIG_FILE
        if not ini.is_file():
            raise UserError(
                f"{source}: not a model directory (no {CONFIG_FILE}); "
                "give a model_dir written by tfuq train, or a config file"
            )
        settings.append(f"SYSTEM.model_dir={source.resolve()}")
        settings += _moved_with_model_dir(load_config(ini), source.resolve())
    elif not source.exists():
        raise UserError(f"{source}: no such config file or model directory")
    else:
        ini = source
    if output_dir is not None:
        settings.append(f"INFERENCE.save_seg_dir={Path(output_dir).expanduser().absolute()}")
    if overwrite is not None:
        settings.append(f"INFERENCE.overwrite={str(overwrite).lower()}")
    config = load_config(ini, [*settings, *overrides])
    if input_dir is None:
        return config
    folder = Path(input_dir).expanduser().absolute()
    if not folder.is_dir():
        raise UserError(f"--input-dir {folder}: no such folder")
    searched = [f"{name}.path_to_search={folder}" for name in config.sources]
    searched += [f"{name}.csv_file=" for name in config.sources]
    return load_config(ini, [*settings, *searched, "INFERENCE.dataset_to_infer=all", *overrides])


def _moved_with_model_dir(stored: Config, model_dir: Path) -> list[str]:
    """Overrides putting the stored paths that lay inside the trained model_dir inside ``model_dir``.

    ``training_config.ini`` holds resolved (absolute) paths; for a model_dir that was moved or
    copied, outputs that were inside it (``[INFERENCE] save_seg_dir``, ...: the settings resolved
    against model_dir) go inside its new place, not back to where it was trained.
    """
    old = Path(stored.model_dir).resolve()
    out = []
    for name in SECTIONS:
        section = stored.section(name)
        if section is None:
            continue
        for key, spec in field_specs(type(section)).items():
            value = getattr(section, key)
            if spec.path != "model_dir" or not value:
                continue
            try:
                inside = Path(value).resolve().relative_to(old)
            except ValueError:
                continue
            out.append(f"{name}.{key}={model_dir / inside}")
    return out


def _same_files(a: InputSource, b: InputSource) -> bool:
    keys = ("filename_contains", "filename_not_contains", "filename_removefromid", "csv_file")
    same_folders = set(a.path_to_search) == set(b.path_to_search)
    return same_folders and all(getattr(a, k) == getattr(b, k) for k in keys)


def image_subject(
    config: Config, images: Iterable[str], subject: str | None = None
) -> tuple[str, dict[str, Path]]:
    """One subject's files from ``SECTION=FILE`` pairs.

    Args:
        config: The model's configuration.
        images: ``SECTION=FILE`` strings; every input section must appear.
        subject: Output name; default the id the first input section gives
            its file (the file name without suffix and ``filename_contains``).

    Returns:
        (subject id, section name -> absolute file).

    Raises:
        UserError: a malformed pair, an unknown or repeated section, a
            missing file, or an input section left out.
    """
    files: dict[str, Path] = {}
    for item in images:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise UserError(f"--image: expected SECTION=FILE, got {item!r}")
        if name not in config.sources:
            known = ", ".join(config.sources)
            raise UserError(f"--image {item}: the model has no section [{name}] (its sections: {known})")
        if name in files:
            raise UserError(f"--image: section [{name}] given twice")
        path = Path(value).expanduser().absolute()
        if not path.is_file():
            raise UserError(f"--image {item}: no such file {path}")
        files[name] = path
    missing = [n for n in config.input_sections if n not in files]
    if missing:
        needed = " ".join(f"--image {n}=FILE" for n in missing)
        raise UserError(f"the model needs every input section: add {needed}")
    for name, source in config.sources.items():
        if name in files:
            continue
        twin = next((i for i in config.input_sections if _same_files(source, config.sources[i])), None)
        if twin is not None:
            files[name] = files[twin]
    mask = getattr(config.app, "mask", "")
    if mask and mask not in files:
        used = [n for n in config.input_sections if config.sources[n].normalise_foreground_only]
        if used:
            _LOG.warning(
                "no [%s] given (--image %s=FILE): %s normalised over the whole volume, not inside the mask "
                "as at training",
                mask,
                mask,
                ", ".join(used),
            )
    first = config.input_sections[0]
    name = subject or file_subject_id(files[first], config.sources[first])
    return name, files
