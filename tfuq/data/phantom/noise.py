"""The random part of a phantom image and its exact per-voxel moments.

An observed image is a noise-free rendering ``f`` (in the reference geometry)
passed through three random steps, all independent of any other modality:

1. **Moving parts** (bowel gas): each part takes one of ``M`` positions with
   known probabilities ``q_m``; voxels in its mask at that position take the
   part's value (e.g. -1000 HU).
2. **Sub-voxel misregistration / partial volume** (``jitter``): each voxel
   independently keeps its value with probability ``p_0 = 0.4`` or, with
   probability ``0.1`` for each of the six face neighbours ``e_k``, becomes
   ``(1 - a) f(v) + a f(v + e_k)`` with ``a = 0.5`` (the image linearly
   interpolated half a voxel away). Edges repeat the border value.
3. **Tissue noise**: Gaussian ``f + s(v) eps`` (CT) or Rician
   ``|f + s(v) (eps_1 + i eps_2)|`` (MR), ``s(v)`` a per-voxel map.

Because every step is a finite mixture over known values, the mean and
variance of each voxel are sums over the components ``c`` (position ``m`` of
the part that can reach the voxel, jitter direction ``k``) with weights
``w_c = q_m p_k``::

    E[y]   = sum_c w_c mu_c
    Var[y] = sum_c w_c (v_c + (mu_c - E[y])^2)

with ``mu_c = f_c, v_c = s^2`` for Gaussian noise and the Rician moments
``mu_c = s sqrt(pi/2) L_{1/2}(-f_c^2 / 2 s^2)``, ``v_c = f_c^2 + 2 s^2 - mu_c^2``.
Nothing is estimated: the moments are exact up to floating point.

Reference:
    Rician moments: Gudbjartsson & Patz, "The Rician distribution of noisy
    MRI data", MRM 1995, DOI: 10.1002/mrm.1910340618.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

__all__ = [
    "JITTER_FRACTION",
    "JITTER_OFFSETS",
    "JITTER_PROBABILITIES",
    "MovingPart",
    "NoiseModel",
    "exact_moments",
    "jitter_candidates",
    "rician_mean",
    "rician_std",
    "sample_image",
]

#: Interpolation fraction ``a`` of the sub-voxel jitter.
JITTER_FRACTION = 0.5
#: Jitter directions: stay, then +x, -x, +y, -y, +z, -z (array axes).
JITTER_OFFSETS = ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
#: Probability of each jitter direction.
JITTER_PROBABILITIES = (0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
_KINDS = ("gaussian", "rician")
_CROSS = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True, eq=False)
class MovingPart:
    """A part (gas pocket) whose position in the observed image is random.

    Attributes:
        region: Index box (three slices) holding every voxel the part can
            reach; its masks keep 2 voxels clear of the box faces that are
            not volume faces, and regions of different parts do not share
            any voxel the parts can affect.
        masks: ``(M, *region shape)`` bool; ``masks[m]`` is the part at
            position ``m``.
        probabilities: ``(M,)`` probabilities of the positions, summing to 1.
        value: Noise-free value of the part's voxels (e.g. -1000 HU).
    """

    region: tuple[slice, slice, slice]
    masks: np.ndarray
    probabilities: np.ndarray
    value: float


@dataclass(frozen=True, eq=False)
class NoiseModel:
    """Everything random about one modality of one subject.

    Attributes:
        base: Noise-free rendering in the reference geometry (float64).
        sigma: Per-voxel Gaussian std or Rician sigma (float64, > 0 for Rician).
        kind: ``"gaussian"`` or ``"rician"``.
        jitter: Apply the sub-voxel misregistration term.
        moving_parts: Parts with random positions.
    """

    base: np.ndarray
    sigma: np.ndarray
    kind: str
    jitter: bool = True
    moving_parts: tuple[MovingPart, ...] = ()


def rician_mean(nu: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """Mean of a Rician variable ``|nu + sigma (e1 + i e2)|``.

    Uses ``L_{1/2}(-x) = e^{-x/2}((1 + x) I0(x/2) + x I1(x/2))`` with the
    exponentially scaled Bessel functions, stable for large ``nu / sigma``.

    Args:
        nu: Noise-free magnitude, >= 0.
        sigma: Noise standard deviation per channel, > 0 (broadcastable).

    Returns:
        ``sigma sqrt(pi/2) L_{1/2}(-nu^2 / (2 sigma^2))``.
    """
    half = np.square(nu) / (4.0 * np.square(sigma))
    laguerre = (1.0 + 2.0 * half) * special.i0e(half) + 2.0 * half * special.i1e(half)
    return sigma * np.sqrt(np.pi / 2.0) * laguerre


def rician_std(nu: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """Standard deviation of a Rician variable: ``sqrt(nu^2 + 2 sigma^2 - mean^2)``."""
    return np.sqrt(np.maximum(_rician_variance(nu, sigma, rician_mean(nu, sigma)), 0.0))


def _rician_variance(nu: np.ndarray, sigma: np.ndarray | float, mean: np.ndarray) -> np.ndarray:
    return np.maximum(np.square(nu) + 2.0 * np.square(sigma) - np.square(mean), 0.0)


def jitter_candidates(image: np.ndarray, fraction: float = JITTER_FRACTION) -> np.ndarray:
    """The seven values a voxel can take under the sub-voxel jitter.

    Args:
        image: 3D array.
        fraction: Interpolation fraction ``a`` toward the neighbour.

    Returns:
        ``(7, *image.shape)``: the image, then ``(1 - a) f(v) + a f(v + e_k)``
        for each offset of :data:`JITTER_OFFSETS` (edge values repeated).
    """
    padded = np.pad(image, 1, mode="edge")
    n0, n1, n2 = image.shape
    out = np.empty((len(JITTER_OFFSETS), *image.shape), dtype=np.float64)
    for k, (d0, d1, d2) in enumerate(JITTER_OFFSETS):
        neighbour = padded[1 + d0 : 1 + d0 + n0, 1 + d1 : 1 + d1 + n1, 1 + d2 : 1 + d2 + n2]
        out[k] = (1.0 - fraction) * image + fraction * neighbour
    return out


def _components(image: np.ndarray, jitter: bool) -> tuple[np.ndarray, np.ndarray]:
    if jitter:
        return jitter_candidates(image), np.asarray(JITTER_PROBABILITIES)
    return image[None].astype(np.float64), np.ones(1)


def _mixture(
    values: np.ndarray, weights: np.ndarray, sigma: np.ndarray, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the mixture over axis 0 of ``values``."""
    w = weights.reshape((-1,) + (1,) * (values.ndim - 1))
    if kind == "gaussian":
        means, within = values, np.square(sigma)
    else:
        means = rician_mean(values, sigma)
        within = np.sum(w * _rician_variance(values, sigma, means), axis=0)
    mean = np.sum(w * means, axis=0)
    variance = within + np.sum(w * np.square(means - mean), axis=0)
    return mean, variance


def _affected(part: MovingPart, jitter: bool) -> np.ndarray:
    union = part.masks.any(axis=0)
    return ndimage.binary_dilation(union, _CROSS) if jitter else union


def _check(model: NoiseModel) -> None:
    if model.kind not in _KINDS:
        raise ValueError(f"Unknown noise kind. Expected one of {_KINDS}. Received: kind={model.kind!r}")
    if model.base.shape != model.sigma.shape or model.base.ndim != 3:
        raise ValueError(
            "base and sigma must be 3D arrays of one shape. "
            f"Received: base.shape={model.base.shape}, sigma.shape={model.sigma.shape}"
        )
    if model.kind == "rician" and not np.all(model.sigma > 0):
        raise ValueError("Rician sigma must be > 0 everywhere. Received: a sigma map with values <= 0")
    owner = np.zeros(model.base.shape, dtype=bool)
    margin = 2 if model.jitter else 0
    for index, part in enumerate(model.moving_parts):
        region_shape = owner[part.region].shape
        probabilities = np.asarray(part.probabilities, dtype=float)
        if part.masks.shape != (probabilities.size, *region_shape):
            raise ValueError(
                f"moving part {index}: masks must have shape (M, *region). "
                f"Received: masks.shape={part.masks.shape}, region shape={region_shape}, "
                f"M={probabilities.size}"
            )
        if np.any(probabilities < 0) or not np.isclose(probabilities.sum(), 1.0):
            raise ValueError(
                f"moving part {index}: probabilities must be >= 0 and sum to 1. Received: {probabilities}"
            )
        union = part.masks.any(axis=0)
        for axis, sl in enumerate(part.region):
            start, stop, _ = sl.indices(model.base.shape[axis])
            low = start > 0 and union.take(range(min(margin, union.shape[axis])), axis=axis).any()
            high_cut = range(max(union.shape[axis] - margin, 0), union.shape[axis])
            high = stop < model.base.shape[axis] and union.take(high_cut, axis=axis).any()
            if low or high:
                raise ValueError(
                    f"moving part {index}: its masks reach the face of its region on axis {axis}."
                )
        block = owner[part.region]
        affected = _affected(part, model.jitter)
        if np.any(block & affected):
            raise ValueError(f"moving part {index}: it can affect voxels another moving part also affects.")
        block |= affected


def exact_moments(model: NoiseModel) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-voxel mean and standard deviation of the observed image.

    Args:
        model: The modality's noise model.

    Returns:
        ``(mean, std)``, float64 arrays of the volume shape: ``mean`` is the
        expected observed image (the "clean" image) and ``std`` the standard
        deviation of ``observed - mean``.

    Raises:
        ValueError: An inconsistent model (shapes, probabilities, parts
            that overlap or reach their region's faces).
    """
    _check(model)
    values, weights = _components(model.base, model.jitter)
    mean, variance = _mixture(values, weights, model.sigma, model.kind)
    for part in model.moving_parts:
        local = model.base[part.region]
        values, weights = [], []
        for mask, probability in zip(part.masks, part.probabilities):
            v, w = _components(np.where(mask, part.value, local), model.jitter)
            values.append(v)
            weights.append(probability * w)
        m, var = _mixture(
            np.concatenate(values), np.concatenate(weights), model.sigma[part.region], model.kind
        )
        affected = _affected(part, model.jitter)
        mean[part.region][affected] = m[affected]
        variance[part.region][affected] = var[affected]
    return mean, np.sqrt(variance)


def sample_image(model: NoiseModel, rng: np.random.Generator) -> np.ndarray:
    """Draw one observed image (float64) from the noise model.

    Args:
        model: The modality's noise model (not re-validated here; call
            :func:`exact_moments` once to check it).
        rng: Source of randomness; draws happen in a fixed order (part
            positions, jitter directions, noise), so a seed fixes the image.

    Returns:
        The observed image, volume shape.
    """
    image = model.base.copy()
    for part in model.moving_parts:
        position = rng.choice(len(part.probabilities), p=np.asarray(part.probabilities, dtype=float))
        image[part.region][part.masks[position]] = part.value
    if model.jitter:
        cumulative = np.cumsum(JITTER_PROBABILITIES)
        direction = np.minimum(np.searchsorted(cumulative, rng.random(image.shape), side="right"), 6)
        image = np.take_along_axis(jitter_candidates(image), direction[None], axis=0)[0]
    if model.kind == "gaussian":
        return image + model.sigma * rng.standard_normal(image.shape)
    real = image + model.sigma * rng.standard_normal(image.shape)
    imaginary = model.sigma * rng.standard_normal(image.shape)
    return np.hypot(real, imaginary)
