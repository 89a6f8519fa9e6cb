"""Invertible intensity normalisation: every method is one affine map.

Each method fits an ``offset`` and a positive ``scale`` and maps intensities
as

    y = (x - offset) / scale,        x = y * scale + offset,

so predictions made in normalised units go back to the units of the image
(HU for CT) exactly, and standard deviations go back by multiplying with
``scale`` (variances with ``scale**2``). The fitted parameters are stored
with a run (:meth:`NormalisationParams.to_dict`) so inference writes maps in
the original units.

The methods:

- ``"none"``: offset 0, scale 1.
- ``"minmax"``: minimum -> 0, maximum -> 1 (as in Klaser et al.'s MR -> CT).
- ``"percentile"``: the ``cutoff`` quantiles (default 1% and 99%) -> 0 and 1;
  values beyond them are not clipped, so the map stays invertible.
- ``"zscore"``: mean -> 0, standard deviation -> 1, optionally computed
  inside a foreground mask (NiftyNet's whitening).
- ``"window"``: a fixed intensity window -> [0, 1], e.g. the CT range
  (-1024, 3071) HU; independent of the image.

The functions are plain arithmetic, so :func:`normalise` and
:func:`denormalise` work on NumPy arrays and TensorFlow tensors alike.

Reference: Klaser et al., "Uncertainty-aware multi-resolution whole-body MR
to CT synthesis", SASHIMI 2020 (MR and CT rescaled to [0, 1], section 3.1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "NORMALISATION_METHODS",
    "NormalisationParams",
    "denormalise",
    "denormalise_std",
    "denormalise_var",
    "fit_normalisation",
    "normalise",
]

#: Names accepted by :func:`fit_normalisation`.
NORMALISATION_METHODS = ("none", "minmax", "percentile", "zscore", "window")
_DATA_METHODS = ("minmax", "percentile", "zscore")
_KEYS = ("method", "offset", "scale")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class NormalisationParams:
    """A fitted normalisation ``y = (x - offset) / scale``.

    Attributes:
        method: One of :data:`NORMALISATION_METHODS`.
        offset: Intensity mapped to 0, in image units.
        scale: Positive intensity span mapped to 1, in image units.

    Raises:
        ValueError: Unknown method, non-finite offset, or scale not > 0.
    """

    method: str
    offset: float
    scale: float

    def __post_init__(self) -> None:
        _check_method(self.method)
        offset, scale = float(self.offset), float(self.scale)
        if not math.isfinite(offset):
            raise ValueError(f"Expected a finite offset. Received: offset={self.offset!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"Expected a finite scale > 0. Received: scale={self.scale!r}")
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "scale", scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict ``{"method", "offset", "scale"}``."""
        return {"method": self.method, "offset": self.offset, "scale": self.scale}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> NormalisationParams:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ValueError: A key is missing or a value is invalid.
        """
        missing = [key for key in _KEYS if key not in payload]
        if missing:
            raise ValueError(f"Expected keys {list(_KEYS)}. Received: {sorted(payload)} (missing {missing})")
        return cls(str(payload["method"]), float(payload["offset"]), float(payload["scale"]))


def fit_normalisation(
    array: npt.ArrayLike,
    method: str,
    *,
    mask: npt.ArrayLike | None = None,
    cutoff: Sequence[float] = (0.01, 0.99),
    window: Sequence[float] = (-1024.0, 3071.0),
) -> NormalisationParams:
    """Fit the normalisation ``method`` to an image.

    Args:
        array: Image intensities, any shape (e.g. ``(X, Y, Z)``).
        method: One of :data:`NORMALISATION_METHODS`.
        mask: Optional boolean foreground mask, shape ``array.shape`` or its
            leading spatial part; statistics use the masked voxels only.
            Ignored by ``"none"`` and ``"window"``.
        cutoff: ``(low, high)`` quantile fractions for ``"percentile"``,
            ``0 <= low < high <= 1``. Default (0.01, 0.99).
        window: ``(low, high)`` intensities for ``"window"``, ``low < high``.
            Default (-1024, 3071), the CT range in HU.

    Returns:
        The fitted :class:`NormalisationParams` (float64 statistics).

    Raises:
        ValueError: Unknown method, bad cutoff/window/mask, empty or
            non-finite selection, or a constant image (scale would be 0).

    Example:
        >>> params = fit_normalisation(ct, "window")  # doctest: +SKIP
        >>> hu = denormalise(normalise(ct, params), params)  # doctest: +SKIP
    """
    _check_method(method)
    if method == "none":
        return NormalisationParams("none", 0.0, 1.0)
    if method == "window":
        low, high = _pair(window, "window")
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"Expected a finite window with low < high. Received: window={tuple(window)}")
        return NormalisationParams("window", low, high - low)
    values = _selected(np.asarray(array), mask)
    if method == "minmax":
        offset, top = float(values.min()), float(values.max())
        scale = top - offset
    elif method == "percentile":
        low, high = _pair(cutoff, "cutoff")
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(
                f"Expected cutoff fractions 0 <= low < high <= 1. Received: cutoff={tuple(cutoff)}"
            )
        offset, top = (float(p) for p in np.percentile(values, [100.0 * low, 100.0 * high]))
        scale = top - offset
    else:  # zscore
        offset, scale = float(values.mean()), float(values.std())
    if not scale > 1e-12 * max(1.0, abs(offset)):
        raise ValueError(
            f"Cannot normalise with method {method!r}: the selected voxels are constant "
            f"(value {offset:g}), so the scale would be 0."
        )
    return NormalisationParams(method, offset, scale)


def normalise(x: T, params: NormalisationParams) -> T:
    """Map intensities to normalised units: ``(x - offset) / scale``.

    Args:
        x: NumPy array or TensorFlow tensor (any shape); float32 stays float32.
        params: Fitted parameters.

    Returns:
        Normalised values, same shape.
    """
    return (x - params.offset) / params.scale  # type: ignore[operator, return-value]


def denormalise(y: T, params: NormalisationParams) -> T:
    """Map normalised values back to image units: ``y * scale + offset``."""
    return y * params.scale + params.offset  # type: ignore[operator, return-value]


def denormalise_std(std: T, params: NormalisationParams) -> T:
    """Map a standard deviation (or any scale parameter) to image units: ``std * scale``."""
    return std * params.scale  # type: ignore[operator, return-value]


def denormalise_var(var: T, params: NormalisationParams) -> T:
    """Map a variance to image units: ``var * scale**2``."""
    return var * (params.scale * params.scale)  # type: ignore[operator, return-value]


def _check_method(method: str) -> None:
    if method not in NORMALISATION_METHODS:
        raise ValueError(f"Expected method to be one of {NORMALISATION_METHODS}. Received: method={method!r}")


def _pair(values: Sequence[float], name: str) -> tuple[float, float]:
    items = tuple(values)
    if len(items) != 2:
        raise ValueError(f"Expected {name} as (low, high). Received: {name}={items}")
    return float(items[0]), float(items[1])


def _selected(array: np.ndarray, mask: npt.ArrayLike | None) -> np.ndarray:
    data = np.asarray(array, dtype=np.float64)
    if mask is not None:
        selector = np.asarray(mask)
        if selector.dtype != np.bool_:
            raise ValueError(f"Expected a boolean mask. Received: mask.dtype={selector.dtype}")
        if data.shape[: selector.ndim] != selector.shape:
            raise ValueError(
                f"Expected a mask of shape {data.shape} or a leading part of it. "
                f"Received: mask.shape={selector.shape}"
            )
        data = data[selector]
    if data.size == 0:
        raise ValueError("Cannot fit a normalisation: no voxel selected (empty image or mask).")
    if not np.all(np.isfinite(data)):
        raise ValueError("Cannot fit a normalisation: the image holds NaN or infinite values.")
    return data.ravel()
