"""Input checks shared by the calibration functions: finite, non-empty arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["as_finite_array", "as_tensor", "check_probability"]


def as_finite_array(values: Any, name: str, *, flatten: bool = True) -> np.ndarray:
    """Return ``values`` as a float64 NumPy array, refusing empty or non-finite input.

    Args:
        values: Array-like or tensor.
        name: Argument name used in the error message.
        flatten: Return a 1-D array (default True).

    Returns:
        float64 array (1-D when ``flatten``).

    Raises:
        ValueError: the array is empty, or holds NaN or infinite values.
    """
    array = np.asarray(values, dtype=np.float64)
    if flatten:
        array = array.reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty. Expected at least one value. Received: shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(
            f"{name} holds {int(bad.sum())} NaN or infinite values out of {array.size}. "
            "Expected finite values only (mask out invalid voxels first)."
        )
    return array


def check_probability(value: float, name: str, *, open_interval: bool = True) -> float:
    """Return ``value`` as a float in (0, 1) (or [0, 1] when not ``open_interval``).

    Raises:
        ValueError: outside the interval or not a number.
    """
    number = float(value)
    inside = 0.0 < number < 1.0 if open_interval else 0.0 <= number <= 1.0
    if not inside:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must lie in {bounds}. Received: {name}={value!r}")
    return number


def as_tensor(values: Any, dtype: tf.DType) -> tf.Tensor:
    """Convert to a tensor of ``dtype`` without a float32 detour.

    ``tf.convert_to_tensor(0.1)`` makes a float32 tensor, and casting it to
    float64 keeps the float32 rounding; Python numbers and lists are therefore
    converted through NumPy in the target dtype.
    """
    if isinstance(values, (tf.Tensor, tf.Variable)):
        return tf.cast(values, dtype)
    return tf.constant(np.asarray(values, dtype=dtype.as_numpy_dtype), dtype=dtype)
