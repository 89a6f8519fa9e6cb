"""Random augmentation of training windows with NiftyNet's keys, drawn once per window.

One :class:`Augmentation` is drawn per window (:func:`draw_augmentation`)
and applied to every section of it, so inputs, target and mask stay paired:

- spatial (all sections, :func:`augment_crop`): a rotation by angles drawn
  uniformly in ``rotation_angle`` degrees (about each axis for 3D windows;
  in-plane only for a window with one axis of size 1), a scaling of each
  axis by ``1 + u/100`` with ``u`` uniform in ``scaling_percentage`` (a factor
  above 1 enlarges the content), both about the window's centre, then a flip
  of each axis in ``random_flipping_axes`` with probability 1/2. The window
  is resampled straight from the volume (never from a smaller crop, so no
  empty corners), with each section's spline order (0, nearest, for masks
  and labels) and the volume padding mode outside the volume;
- intensity (inputs only, :func:`augment_intensity`): a multiplicative bias
  field ``exp(sum_{i+j+k <= bf_order} c_ijk x^i y^j z^k)``, with ``x, y, z``
  spanning [-1, 1] over the window and every ``c_ijk`` uniform in
  ``bias_field_range`` (NiftyNet's random bias field), then an additive shift
  per channel uniform in ``[-intensity_shift, intensity_shift]``.

With no key set the draw is the identity and the windows are plain crops.

Mathematical details:
    For output voxel ``p`` of a window with centre ``c`` (``start + (size-1)/2``),
    the value is the volume interpolated at ``c + M (p - c)`` with
    ``M = S^-1 R^T``, ``S = diag(scales)``, ``R = R_z R_y R_x``; then the
    flips reverse the chosen axes of the result.

Reference:
    Gibson et al., "NiftyNet: a deep-learning platform for medical imaging",
    Computer Methods and Programs in Biomedicine 158, 2018,
    doi:10.1016/j.cmpb.2018.01.025 (rotation, scaling, flipping, bias field).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from tfuq.data.windows import as_window, crop_padded

__all__ = [
    "Augmentation",
    "AugmentationSettings",
    "augment_crop",
    "augment_intensity",
    "bias_field",
    "draw_augmentation",
    "polynomial_terms",
    "rotation_matrix",
]

_MARGIN = 12  # voxels around the resampled box so its edges do not affect the spline prefilter
_CHUNK = 1 << 20  # output voxels interpolated at once


@dataclasses.dataclass(frozen=True)
class AugmentationSettings:
    """What to randomise (``[TRAINING]`` keys); empty ranges switch a part off.

    Attributes:
        rotation_angle: ``(low, high)`` degrees, or ``()``.
        scaling_percentage: ``(low, high)`` percent, each > -100, or ``()``.
        flip_axes: Axes (0, 1, 2) flipped with probability 1/2 each.
        bias_field_range: ``(low, high)`` polynomial coefficients, or ``()``.
        bf_order: Bias field polynomial order, >= 1.
        intensity_shift: Half-width of the additive shift (normalised units), >= 0.

    Raises:
        ValueError: a malformed range, axis or order.
    """

    rotation_angle: tuple[float, ...] = ()
    scaling_percentage: tuple[float, ...] = ()
    flip_axes: tuple[int, ...] = ()
    bias_field_range: tuple[float, ...] = ()
    bf_order: int = 3
    intensity_shift: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rotation_angle", "scaling_percentage", "bias_field_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if value and (len(value) != 2 or not value[0] <= value[1] or not all(map(math.isfinite, value))):
                raise ValueError(f"Expected {name} as () or finite (low, high). Received: {name}={value}")
            object.__setattr__(self, name, value)
        if self.scaling_percentage and self.scaling_percentage[0] <= -100:
            raise ValueError(f"Expected scaling_percentage > -100. Received: {self.scaling_percentage}")
        axes = tuple(int(a) for a in self.flip_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"Expected distinct flip axes in 0, 1, 2. Received: flip_axes={self.flip_axes}")
        object.__setattr__(self, "flip_axes", axes)
        if self.bf_order < 1:
            raise ValueError(f"Expected bf_order >= 1. Received: bf_order={self.bf_order}")
        if not self.intensity_shift >= 0:
            raise ValueError(
                f"Expected intensity_shift >= 0. Received: intensity_shift={self.intensity_shift}"
            )

    @classmethod
    def from_config(cls, training: Any) -> AugmentationSettings:
        """Settings from a ``[TRAINING]`` section (:class:`tfuq.config.TrainingSection`)."""
        return cls(
            rotation_angle=training.rotation_angle,
            scaling_percentage=training.scaling_percentage,
            flip_axes=training.random_flipping_axes,
            bias_field_range=training.bias_field_range,
            bf_order=training.bf_order,
            intensity_shift=training.intensity_shift,
        )

    @property
    def enabled(self) -> bool:
        """Whether any part is switched on."""
        return bool(
            self.rotation_angle
            or self.scaling_percentage
            or self.flip_axes
            or self.bias_field_range
            or self.intensity_shift
        )


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One random draw, applied identically to every section of a window.

    Attributes:
        matrix: ``(3, 3)`` map from output offsets (from the window centre) to
            volume offsets, ``S^-1 R^T``; the identity when not rotated/scaled.
        flips: Axes reversed after resampling.
        bias: Bias field coefficients in :func:`polynomial_terms` order (empty: none).
        bf_order: Bias field order.
        shift: Additive shift per input channel (empty: none).
    """

    matrix: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    flips: tuple[int, ...] = ()
    bias: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    bf_order: int = 3
    shift: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def resamples(self) -> bool:
        """Whether the windows must be interpolated (rotation or scaling drawn)."""
        return not np.array_equal(self.matrix, np.eye(3))


def rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """``R_z R_y R_x`` for angles (degrees) about axes 0, 1, 2 (right-handed).

    ``R_a`` turns axis ``a+1`` towards axis ``a+2`` (modulo 3): about axis 2, a
    positive angle turns axis 0 towards axis 1, like ``np.rot90(m, 1, axes=(0, 1))``.

    Example:
        >>> np.round(rotation_matrix((0, 0, 90)) @ [1, 0, 0], 6).tolist()
        [0.0, 1.0, 0.0]
    """
    out = np.eye(3)
    for axis, degrees in enumerate(angles):
        a, b = (axis + 1) % 3, (axis + 2) % 3
        cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
        rot = np.eye(3)
        rot[a, a], rot[a, b], rot[b, a], rot[b, b] = cos, -sin, sin, cos
        out = rot @ out
    return out


def polynomial_terms(order: int) -> list[tuple[int, int, int]]:
    """Exponents ``(i, j, k)`` with ``i + j + k <= order``, in lexicographic order."""
    return [t for t in itertools.product(range(order + 1), repeat=3) if sum(t) <= order]


def draw_augmentation(
    settings: AugmentationSettings, rng: np.random.Generator, window: Sequence[int], num_channels: int = 1
) -> Augmentation:
    """Draw one augmentation for a window of size ``window`` with ``num_channels`` input channels.

    Axes of size 1 (2D slices) are never rotated out of plane nor scaled.

    Returns:
        Augmentation: the identity when ``settings`` enables nothing.
    """
    window = as_window(window)
    flips = tuple(a for a in settings.flip_axes if rng.random() < 0.5)
    flat = [a for a in range(3) if window[a] == 1]
    angles = [0.0, 0.0, 0.0]
    if settings.rotation_angle and len(flat) <= 1:
        for axis in flat or range(3):
            angles[axis] = float(rng.uniform(*settings.rotation_angle))
    scales = np.ones(3)
    if settings.scaling_percentage:
        for axis in range(3):
            if axis not in flat:
                scales[axis] = 1.0 + rng.uniform(*settings.scaling_percentage) / 100.0
    matrix = (
        np.eye(3)
        if not any(angles) and np.all(scales == 1)
        else np.diag(1 / scales) @ rotation_matrix(angles).T
    )
    bias = np.zeros(0)
    if settings.bias_field_range:
        bias = rng.uniform(*settings.bias_field_range, size=len(polynomial_terms(settings.bf_order)))
    shift = np.zeros(0)
    if settings.intensity_shift:
        shift = rng.uniform(-settings.intensity_shift, settings.intensity_shift, size=num_channels)
    return Augmentation(matrix=matrix, flips=flips, bias=bias, bf_order=settings.bf_order, shift=shift)


def augment_crop(
    array: npt.ArrayLike,
    start: Sequence[int],
    size: int | Sequence[int],
    augmentation: Augmentation | None = None,
    *,
    order: int = 3,
    mode: str = "minimum",
    cval: float | npt.ArrayLike | None = None,
) -> np.ndarray:
    """The window ``[start, start + size)`` of ``array`` under ``augmentation``'s geometry.

    Args:
        array: Volume ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        start: Window start (may be outside the volume: padding).
        size: Window size.
        augmentation: The draw (None or identity: a plain :func:`crop_padded`).
        order: Spline order 0-5 (0 for masks and labels).
        mode: Volume padding mode (:data:`tfuq.data.windows.PADDING_MODES`).
        cval: Fill value for ``"constant"``/``"minimum"`` (default 0 / the minimum per channel).

    Returns:
        ``(*size[, C])``: float arrays keep their dtype; an integer array keeps
        it with ``order=0`` and becomes float32 otherwise.
    """
    data = np.asarray(array)
    size = as_window(size, name="size")
    if augmentation is None or not augmentation.resamples:
        out = crop_padded(data, start, size, mode=mode, cval=cval)
    else:
        if mode in ("constant", "minimum") and cval is None:
            channels = [data[..., c] for c in range(data.shape[3])] if data.ndim == 4 else [data]
            cval = 0.0 if mode == "constant" else [c.min() for c in channels]
        out = _resample(data, start, size, augmentation.matrix, order, mode, cval)
    if augmentation is not None and augmentation.flips:
        out = np.ascontiguousarray(np.flip(out, axis=augmentation.flips))
    return out


def bias_field(shape: Sequence[int], coefficients: npt.ArrayLike, order: int) -> np.ndarray:
    """``exp(sum c_ijk x^i y^j z^k)`` on a ``shape`` grid, coordinates spanning [-1, 1] (0 on size-1 axes).

    Args:
        shape: Spatial shape ``(X, Y, Z)``.
        coefficients: One per :func:`polynomial_terms` ``(order)`` term.
        order: Polynomial order.

    Returns:
        float32 field of shape ``shape``.
    """
    coefficients = np.asarray(coefficients, dtype=np.float64)
    terms = polynomial_terms(order)
    if coefficients.shape != (len(terms),):
        raise ValueError(f"Expected {len(terms)} coefficients. Received: shape={coefficients.shape}")
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    powers = [np.stack([x**p for p in range(order + 1)]) for x in axes]
    log_field = np.zeros(tuple(shape))
    for c, (i, j, k) in zip(coefficients, terms):
        log_field += (
            c * powers[0][i][:, None, None] * powers[1][j][None, :, None] * powers[2][k][None, None, :]
        )
    return np.exp(log_field).astype(np.float32)


def augment_intensity(inputs: npt.ArrayLike, augmentation: Augmentation | None) -> np.ndarray:
    """Apply the bias field and shift to input windows ``(*spatial, C)`` (inputs only, never the target)."""
    data = np.asarray(inputs)
    if augmentation is None or (augmentation.bias.size == 0 and augmentation.shift.size == 0):
        return data
    out = data.astype(np.float32, copy=True)
    if augmentation.bias.size:
        out *= bias_field(out.shape[:3], augmentation.bias, augmentation.bf_order)[..., None]
    if augmentation.shift.size:
        if augmentation.shift.size != out.shape[-1]:
            raise ValueError(
                f"Expected {augmentation.shift.size} input channels. Received: inputs.shape={out.shape}"
            )
        out += augmentation.shift.astype(np.float32)
    return out


def _resample(
    data: np.ndarray,
    start: Sequence[int],
    size: tuple[int, int, int],
    matrix: np.ndarray,
    order: int,
    mode: str,
    cval: Any,
) -> np.ndarray:
    # Interpolate inside a box read with the volume's padding; the box extends
    # `margin` voxels past every sampled point, so how scipy extends the box
    # itself only touches the spline prefilter there (its effect decays as 0.27^d).
    centre = np.asarray(start, dtype=np.float64) + (np.asarray(size) - 1) / 2.0
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in size])), dtype=np.float64)
    mapped = centre + (corners + np.asarray(start) - centre) @ matrix.T
    margin = _MARGIN if order > 1 else 1
    lo = np.floor(mapped.min(axis=0)).astype(int) - margin
    hi = np.ceil(mapped.max(axis=0)).astype(int) + margin
    box = crop_padded(data, lo, hi - lo + 1, mode=mode, cval=cval)
    if box.ndim == 3:
        box = box[..., None]
    if order > 0 and not np.issubdtype(box.dtype, np.floating):
        box = box.astype(np.float32)
    out = np.empty((*size, box.shape[-1]), dtype=box.dtype)
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) for n in size), indexing="ij"), axis=-1)
    rows = max(1, _CHUNK // (size[1] * size[2]))
    for r in range(0, size[0], rows):
        offsets = grid[r : r + rows] + np.asarray(start) - centre
        coords = (centre + offsets @ matrix.T - lo).reshape(-1, 3).T
        for c in range(box.shape[-1]):
            values = ndimage.map_coordinates(
                box[..., c], coords, order=order, mode="mirror", prefilter=order > 1
            )
            out[r : r + rows, ..., c] = values.reshape(offsets.shape[:3])
    return out if data.ndim == 4 else out[..., 0]
