"""``<model_dir>/normalisation.json``: the target normalisation a network's outputs are in.

Written by ``tfuq train`` (fitted by :mod:`tfuq.training.normalisation`),
read by inference, evaluation, export and the CLI to put the maps back in the
target's units.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfuq.atomic import write_json
from tfuq.config import Config
from tfuq.data.normalisation import NormalisationParams
from tfuq.errors import UserError
from tfuq.model_store.layout import NORMALISATION_FILE
from tfuq.typing import PathLike

__all__ = ["normalisation_record", "read_target_normalisation", "write_normalisation"]


def normalisation_record(config: Config, target: NormalisationParams) -> dict[str, Any]:
    """The JSON payload of ``normalisation.json``: target parameters, input settings."""
    mask_name = getattr(config.app, "mask", "")
    inputs = {}
    for name in config.input_sections:
        source = config.sources[name]
        inputs[name] = {
            "method": source.intensity_normalisation,
            "per_subject": True,
            "cutoff": list(source.cutoff),
            "window": list(source.intensity_window),
            "foreground_only": source.normalise_foreground_only,
            "mask": mask_name if source.normalise_foreground_only else "",
        }
    record = {"section": config.target_section, **target.to_dict(), "per_subject": config.per_subject_target}
    return {"target": record, "inputs": inputs}


def write_normalisation(model_dir: PathLike, config: Config, target: NormalisationParams) -> Path:
    """Write ``<model_dir>/normalisation.json`` atomically (replacing an older one)."""
    return write_json(
        Path(model_dir) / NORMALISATION_FILE, normalisation_record(config, target), overwrite=True
    )


def read_target_normalisation(model_dir: PathLike) -> NormalisationParams | None:
    """The target parameters stored in ``<model_dir>/normalisation.json``, or None without the file.

    Raises:
        UserError: the file exists but is not a valid record.
    """
    path = Path(model_dir) / NORMALISATION_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return NormalisationParams.from_dict(payload["target"])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a valid tfuq normalisation record: {err}") from None
