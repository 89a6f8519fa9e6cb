"""Scans a model was not trained for, made from clean ones: does the reliability flag fire?

A reliability score is only useful if it rises on inputs the model should not
be trusted with and stays low on clean subjects of the training distribution.
:func:`shifted_input` makes the standard acquisition shifts of one input
volume (inside its foreground; the background stays as it was):

* ``bias_field``: a strong smooth multiplicative field ``exp(a p(x))`` with
  ``p`` a fixed second-order polynomial of the normalised coordinates scaled to
  [-1, 1] over the volume, ``a = log(1.6)`` by default (0.62x-1.6x);
* ``noise3x``: Gaussian noise added so the noise std becomes 3x the scan's own
  (:func:`estimate_noise_std`): std ``sqrt(8) sigma``;
* ``rescale``: intensities x 1.3 (a 30 % rescale);
* ``swap``: another contrast given in place of the input (e.g. the FLAIR or
  T2 instead of the T1): the caller passes it as ``other``.

:func:`shift_auroc` is the AUROC of a score separating shifted from clean
cases (1 = every shifted case scores above every clean one).

Reference:
    Fellaji & Pennerath, "The epistemic uncertainty hole", 2024,
    arXiv:2407.01985 (MC-dropout epistemic uncertainty need not rise under
    shift); Mehrtash et al., IEEE TMI 2020 (failure detection from uncertainty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SHIFTS", "estimate_noise_std", "shift_auroc", "shifted_input"]

#: Shift names :func:`shifted_input` makes.
SHIFTS = ("bias_field", "noise3x", "rescale", "swap")


def estimate_noise_std(volume: Any, mask: Any | None = None) -> float:
    """Noise std of a scan from differences of neighbouring voxels along the first axis.

    ``d = x[i+1] - x[i]`` inside the mask has variance ``2 sigma^2`` for white
    noise; its median absolute deviation times 1.4826 is a robust std (edges
    are a minority), so ``sigma = 1.4826 MAD(d) / sqrt(2)``.

    Example:
        >>> x = np.random.default_rng(0).normal(0, 2.0, (40, 40, 40))
        >>> round(estimate_noise_std(x), 1)
        2.0
    """
    x = np.asarray(volume, dtype=np.float64)
    inside = np.ones(x.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    both = inside[1:] & inside[:-1]
    d = (x[1:] - x[:-1])[both]
    if d.size < 2:
        raise ValueError("Expected at least two neighbouring voxel pairs inside the mask.")
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def _bias_field(shape: tuple[int, ...], strength: float) -> np.ndarray:
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    p = 0.5 * x + 0.3 * y - 0.2 * z + 0.4 * x * y - 0.3 * x**2 + 0.2 * z**2
    p = 2.0 * (p - p.min()) / max(float(np.ptp(p)), 1e-12) - 1.0
    return np.exp(strength * p)


def shifted_input(
    volume: Any,
    shift: str,
    mask: Any | None = None,
    *,
    other: Any | None = None,
    seed: int = 0,
    bias_strength: float = float(np.log(1.6)),
    rescale: float = 1.3,
) -> np.ndarray:
    """One input volume under an acquisition shift (see the module notes).

    Args:
        volume: The clean input ``(X, Y, Z)``.
        shift: One of :data:`SHIFTS`.
        mask: Foreground; shifts apply inside it only (None: everywhere).
        other: The contrast given instead, for ``"swap"`` (same shape).
        seed: Noise seed.
        bias_strength: ``a`` of the bias field.
        rescale: Factor of ``"rescale"``.

    Returns:
        float32 array of ``volume``'s shape.

    Raises:
        ValueError: unknown shift, ``swap`` without ``other`` or shapes that differ.
    """
    x = np.asarray(volume, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"Expected a 3D volume. Received: shape {x.shape}")
    inside = np.ones(x.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    if inside.shape != x.shape:
        raise ValueError(f"Expected mask of shape {x.shape}. Received: {inside.shape}")
    if shift == "bias_field":
        out = x * _bias_field(x.shape, float(bias_strength))
    elif shift == "noise3x":
        sigma = estimate_noise_std(x, inside)
        out = x + np.random.default_rng(seed).normal(0.0, np.sqrt(8.0) * sigma, x.shape)
    elif shift == "rescale":
        out = x * float(rescale)
    elif shift == "swap":
        if other is None or np.shape(other) != x.shape:
            raise ValueError(f"swap needs other of shape {x.shape}. Received: {np.shape(other)}")
        out = np.asarray(other, dtype=np.float64)
    else:
        raise ValueError(f"Expected shift in {SHIFTS}. Received: shift={shift!r}")
    return np.where(inside, out, x).astype(np.float32)


def shift_auroc(clean: Sequence[float], shifted: Sequence[float]) -> float:
    """AUROC of a score for shifted (positive) against clean cases; ties count one half.

    Example:
        >>> shift_auroc([0.0, 0.1], [0.5, 0.05])
        0.75
    """
    a, b = np.asarray(clean, dtype=np.float64), np.asarray(shifted, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("Expected at least one clean and one shifted score.")
    greater = (b[:, None] > a[None, :]).sum() + 0.5 * (b[:, None] == a[None, :]).sum()
    return float(greater / (a.size * b.size))
