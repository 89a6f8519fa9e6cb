"""Typed INI settings: one ``setting()`` per key, parsed and validated from text.

A section is a frozen dataclass whose fields are made with :func:`setting`;
the field's type annotation says how its text is parsed, the metadata says
what is valid (choices, bounds) and documents it (one-line help). The same
metadata renders ``configs/defaults.ini``, so documentation cannot drift.

Values are read in NiftyNet's syntax too: a list may be wrapped in parentheses
or braces (``(8, 8, 8)``, ``(L, A, S)``, ``()`` for none) and a boolean may be
spelled as NiftyNet's ``str2boolean`` spells it (``True``, ``t``, ``y``, ...).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConfigValueError",
    "FieldSpec",
    "field_specs",
    "format_value",
    "parse_value",
    "setting",
]

#: Boolean spellings, case-insensitive: tfuq's and NiftyNet's (``t``/``y``, ``f``/``n``).
_TRUE = {"true", "yes", "on", "1", "t", "y"}
_FALSE = {"false", "no", "off", "0", "f", "n"}
#: Brackets NiftyNet allows around a list.
_BRACKETS = (("(", ")"), ("{", "}"))


class ConfigValueError(ValueError):
    """A value that does not parse or is out of range; the message says what was expected."""


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    length: int | Sequence[int] | None = None,
    path: str | None = None,
) -> Any:
    """Declare one INI key of a section dataclass.

    Args:
        default: Default value (already of the field's type).
        help: One-line description, rendered into ``configs/defaults.ini``.
        choices: Valid values (case-sensitive), or None for any.
        min: Lower bound for numbers (each element for tuples).
        max: Upper bound for numbers (each element for tuples).
        min_exclusive: The lower bound itself is invalid.
        max_exclusive: The upper bound itself is invalid.
        length: Valid tuple length(s); an empty tuple is always allowed and
            means "not set".
        path: ``"ini"`` or ``"model_dir"``: the value is a path resolved
            against the INI file's folder or against ``[SYSTEM] model_dir``.

    Returns:
        A ``dataclasses.field`` carrying the metadata.
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "max_exclusive": max_exclusive,
        "length": (length,) if isinstance(length, int) else (tuple(length) if length else None),
        "path": path,
    }
    if isinstance(default, (list, tuple)):
        frozen = tuple(default)
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """A key of a section: its name, parsed type, default and metadata."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    min: float | None
    max: float | None
    min_exclusive: bool
    max_exclusive: bool
    length: tuple[int, ...] | None
    path: str | None

    @property
    def is_tuple(self) -> bool:
        """Whether the key holds a comma-separated list."""
        return typing.get_origin(self.type) is tuple

    @property
    def element_type(self) -> Any:
        """Type of the value, or of each element for tuples."""
        return typing.get_args(self.type)[0] if self.is_tuple else self.type

    def expected(self) -> str:
        """Human description of a valid value, for error messages."""
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}[self.element_type]
        if self.is_tuple:
            n = "/".join(str(v) for v in self.length) if self.length else "any number of"
            kind = f"{n} comma-separated values, each {kind}"
        if self.choices is not None:
            kind = "one of " + ", ".join(str(c) for c in self.choices)
            if self.is_tuple:
                kind = "comma-separated values, each " + kind
        bounds = []
        if self.min is not None:
            bounds.append(f"{'>' if self.min_exclusive else '>='} {self.min:g}")
        if self.max is not None:
            bounds.append(f"{'<' if self.max_exclusive else '<='} {self.max:g}")
        return kind + (" " + " and ".join(bounds) if bounds else "")


def field_specs(section_cls: type) -> dict[str, FieldSpec]:
    """Return ``{key: FieldSpec}`` for a section dataclass, in declaration order."""
    hints = typing.get_type_hints(section_cls)
    specs = {}
    for f in dataclasses.fields(section_cls):
        if "help" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        specs[f.name] = FieldSpec(
            name=f.name,
            type=hints[f.name],
            default=default,
            **{k: f.metadata[k] for k in FieldSpec.__dataclass_fields__ if k in f.metadata},
        )
    return specs


def _parse_scalar(spec: FieldSpec, text: str) -> Any:
    kind = spec.element_type
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigValueError(spec.expected())
    if kind is int:
        try:
            return int(text, 10)
        except ValueError:
            raise ConfigValueError(spec.expected()) from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigValueError(spec.expected()) from None
        if not math.isfinite(value):
            raise ConfigValueError(spec.expected())
        return value
    return text


def _check(spec: FieldSpec, value: Any) -> None:
    if spec.choices is not None and value not in spec.choices:
        raise ConfigValueError(spec.expected())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = spec.min, spec.max
        if lo is not None and (value < lo or (spec.min_exclusive and value == lo)):
            raise ConfigValueError(spec.expected())
        if hi is not None and (value > hi or (spec.max_exclusive and value == hi)):
            raise ConfigValueError(spec.expected())


def parse_value(spec: FieldSpec, text: str) -> Any:
    """Parse and validate the INI text of one key.

    Args:
        spec: The key's specification.
        text: Raw INI value; lists are comma-separated, optionally in NiftyNet's
            parentheses or braces; an empty list is "" (or "()").

    Returns:
        The typed value.

    Raises:
        ConfigValueError: with the description of a valid value as message.
    """
    if spec.is_tuple:
        text = text.strip()
        if len(text) >= 2 and (text[0], text[-1]) in _BRACKETS:
            text = text[1:-1]
        parts = [p for p in (s.strip() for s in text.split(",")) if p != ""]
        values = tuple(_parse_scalar(spec, p) for p in parts)
        if values and spec.length and len(values) not in spec.length:
            raise ConfigValueError(spec.expected())
        for v in values:
            _check(spec, v)
        return values
    value = _parse_scalar(spec, text)
    _check(spec, value)
    return value


def format_value(value: Any) -> str:
    """Render a typed value back to INI text (inverse of :func:`parse_value`)."""
    if isinstance(value, tuple):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
