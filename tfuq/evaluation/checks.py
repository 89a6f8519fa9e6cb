"""Input checks shared by the evaluation functions: same-shape float maps and masks."""

from __future__ import annotations

from typing import Any

import numpy as np

from tfuq.errors import UserError

__all__ = ["as_map", "finite_or_none", "resolve_mask", "same_shape_maps"]


def as_map(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a float64 array, refusing empty, NaN or infinite input.

    Args:
        values: Array-like (NumPy array, tensor, nested lists).
        name: Argument name used in the error message.

    Returns:
        float64 array of the same shape.

    Raises:
        ValueError: empty, or holds NaN or infinite values.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{name} is empty. Expected at least one value. Received: shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN or infinite values out of {array.size}. "
            "Expected finite values only."
        )
    return array


def same_shape_maps(**maps: Any) -> dict[str, np.ndarray]:
    """Convert several maps with :func:`as_map` and check they share one shape.

    Args:
        **maps: Name -> array-like.

    Returns:
        dict name -> float64 array, in the order given.

    Raises:
        ValueError: a map is empty or non-finite, or the shapes differ.
    """
    out = {name: as_map(value, name) for name, value in maps.items()}
    shapes = {name: a.shape for name, a in out.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"Expected maps of one shape. Received: {shapes}")
    return out


def resolve_mask(mask: Any | None, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """Boolean mask of ``shape``; all True when ``mask`` is None.

    Args:
        mask: Boolean or 0/1 array of ``shape``, or None for every voxel.
        shape: Shape of the maps the mask selects from.
        name: Argument name used in the error message.

    Returns:
        Boolean array of ``shape``.

    Raises:
        ValueError: the mask has another shape.
        UserError: the mask selects no voxel.
    """
    if mask is None:
        return np.ones(shape, dtype=bool)
    selector = np.asarray(mask)
    if selector.shape != tuple(shape):
        raise ValueError(f"Expected {name} of shape {tuple(shape)}. Received: {name}.shape={selector.shape}")
    selector = selector.astype(bool) if selector.dtype != np.bool_ else selector
    if not selector.any():
        raise UserError(f"{name}: selects no voxel; expected at least one voxel inside the mask.")
    return selector


def finite_or_none(value: Any) -> Any:
    """JSON-safe copy: NaN and infinite floats become None, containers are walked.

    Args:
        value: A number, string, bool, None, NumPy scalar/array, list, tuple or dict.

    Returns:
        The same structure with plain Python types, non-finite floats as None.
    """
    if isinstance(value, dict):
        return {str(k): finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, np.ndarray):
        return [finite_or_none(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if np.isfinite(number) else None
    return value
