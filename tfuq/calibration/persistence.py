"""Plain-JSON persistence of fitted recalibrators (exact round trip).

A recalibrator is stored as ``{"kind": ..., "format_version": 1, "config":
{...}, "fitted": {...}}`` with plain numbers and lists only. Python's JSON
writer prints floats with the shortest repr that reads back to the same
double, so ``from_json(to_json())`` reproduces every fitted value bit for bit.
Files are written atomically (:func:`tfuq.atomic.write_json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfuq.atomic import write_json
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["FORMAT_VERSION", "dumps", "load_payload", "loads", "save_payload"]

#: Version of the stored layout; bumped when it changes incompatibly.
FORMAT_VERSION = 1


def dumps(kind: str, config: dict[str, Any], fitted: dict[str, Any] | None) -> str:
    """Serialise a recalibrator to a JSON string.

    Args:
        kind: Class name, e.g. ``"IsotonicRecalibrator"``.
        config: Constructor arguments (plain JSON values).
        fitted: Fitted values (plain JSON values), or None when not fitted.

    Returns:
        A compact JSON string with sorted keys.
    """
    payload = {"kind": kind, "format_version": FORMAT_VERSION, "config": config, "fitted": fitted}
    return json.dumps(payload, sort_keys=True, allow_nan=False)


def loads(text: str | dict[str, Any], kind: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Parse a JSON string (or an already-parsed dict) written by :func:`dumps`.

    Args:
        text: JSON text or dict.
        kind: The class name the payload must carry.

    Returns:
        ``(config, fitted)``.

    Raises:
        ValueError: not JSON, another kind, another format version, or
            missing fields.
    """
    if isinstance(text, dict):
        payload = text
    else:
        try:
            payload = json.loads(text)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Not a JSON {kind}. Expected a JSON object. Received: {error}") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"Expected a stored {kind}. Received: kind={found!r}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"Unsupported {kind} format. Expected format_version={FORMAT_VERSION}. "
            f"Received: format_version={payload.get('format_version')!r}"
        )
    config, fitted = payload.get("config"), payload.get("fitted")
    if not isinstance(config, dict) or not (fitted is None or isinstance(fitted, dict)):
        raise ValueError(f"A stored {kind} needs a 'config' object and a 'fitted' object or null.")
    return config, fitted


def save_payload(path: PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write JSON text produced by :func:`dumps` to ``path`` atomically."""
    return write_json(path, json.loads(text), overwrite=overwrite)


def load_payload(path: PathLike, kind: str) -> dict[str, Any]:
    """Read a stored recalibrator file.

    Raises:
        UserError: the file is missing, unreadable or not valid JSON of ``kind``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        payload = json.loads(text)
        loads(payload, kind)
    except OSError as error:
        raise UserError(f"{path}: cannot read the {kind} file ({error.strerror}).") from None
    except ValueError as error:
        raise UserError(f"{path}: not a valid {kind} file: {error}") from None
    return payload
