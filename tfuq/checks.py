"""Argument checks shared by the whole package (floor 0): one message format, ``ValueError``.

Every function returns the checked value (as a plain Python type) or raises
``ValueError("Expected <name> to be ... Received: <name>=<value>")``. Booleans
are refused where an int is expected (``True`` is an ``int`` in Python).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_int", "check_number", "check_seed"]


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (NumPy integers accepted, bools refused).

    Example:
        >>> check_int(3, "batch_size", minimum=1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"Expected {name} to be an int{_range(minimum, maximum)}. Received: {name}={value!r}"
        )
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(
            f"Expected {name} to be an int{_range(minimum, maximum)}. Received: {name}={value!r}"
        )
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive: bool = False,
) -> float:
    """``value`` as a finite ``float`` in ``[minimum, maximum]`` (open interval with ``exclusive``).

    Example:
        >>> check_number(0.5, "rate", minimum=0.0, maximum=1.0, exclusive=True)
        0.5
    """
    bounds = _range(minimum, maximum, exclusive)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"Expected {name} to be a finite number{bounds}. Received: {name}={value!r}")
    low = minimum is not None and (value <= minimum if exclusive else value < minimum)
    high = maximum is not None and (value >= maximum if exclusive else value > maximum)
    if low or high:
        raise ValueError(f"Expected {name} to be a finite number{bounds}. Received: {name}={value!r}")
    return float(value)


def check_seed(value: Any, name: str = "seed") -> int | None:
    """An int seed or None.

    Example:
        >>> check_seed(None) is None
        True
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Expected {name} to be an int or None. Received: {name}={value!r}")
    return int(value)


def _range(minimum: float | None, maximum: float | None, exclusive: bool = False) -> str:
    lower, upper = (">", "<") if exclusive else (">=", "<=")
    parts = []
    if minimum is not None:
        parts.append(f" {lower} {minimum}")
    if maximum is not None:
        parts.append(f" {upper} {maximum}")
    return " and".join(parts)
