"""Feature-space distance of a scan's windows to the training data: a shift score beside the stds.

MC-dropout epistemic std need not rise on inputs unlike the training data
(Fellaji & Pennerath 2024). Deterministic uncertainty methods (DDU, Mukhoti et
al. 2023) instead fit a Gaussian density to a network's deep features on the
training set and score a new input by its distance to it. Here:

* **features** :func:`window_features`: the network's *bottleneck* (the
  deepest feature map: the layer of smallest spatial size, the last such
  before the head; for networks that never downsample, the last feature map
  before the head), averaged over each window, one deterministic pass (MC
  sampling off) per window; windows hold at least ``min_fraction`` of the
  fullest window's mask voxels;
* **density** :func:`fit_feature_density`: mean and a shrunk covariance
  ``(1 - a) S + a tr(S)/d I`` (``a`` = 0.1) of the training windows' features;
* **distance** :func:`mahalanobis`: ``sqrt((f - mu)^T Sigma^-1 (f - mu))``
  per window.

The per-window distances of held-out subjects make a reliability reference
exactly as the std statistics do (:mod:`tfuq.calibration.qc_reference`).

Reference:
    Mukhoti et al., "Deep deterministic uncertainty: a new simple baseline",
    CVPR 2023, arXiv:2102.11582. Lee et al., "A simple unified framework for
    detecting out-of-distribution samples and adversarial attacks", NeurIPS
    2018 (Mahalanobis distance of deep features).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfuq.data.windows import pad_volume, window_grid
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "FEATURE_DENSITY_FILE",
    "FeatureDensity",
    "bottleneck_layer",
    "fit_feature_density",
    "mahalanobis",
    "window_features",
]

#: File name in ``<model_dir>/calibration/``.
FEATURE_DENSITY_FILE = "feature_density.npz"
_SKIPPED = ("InputLayer", "Dropout", "SpatialDropout", "Concatenate", "UpSampling")


def bottleneck_layer(model: keras.Model) -> keras.layers.Layer:
    """The deepest feature map of ``model`` (see the module notes).

    Raises:
        ValueError: the model has no spatial feature map besides its output.
    """
    outputs = {id(t) for t in model.outputs}
    candidates = []
    for layer in model.layers:
        name = type(layer).__name__
        if any(s in name for s in _SKIPPED) or "Head" in name:
            continue
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if len(shape) < 4 or id(layer.output) in outputs or None in shape[1:-1]:
            continue
        candidates.append((math.prod(shape[1:-1]), layer))
    if not candidates:
        raise ValueError(f"Expected a spatial feature map in {model.name}. Received: none besides the output")
    smallest = min(size for size, _ in candidates)
    last = None
    for size, layer in candidates:
        if size == smallest:
            last = layer
        elif last is not None:
            break  # past the bottleneck: the decoder grows again
    return last


def _extractor(model: keras.Model) -> keras.Model:
    layer = bottleneck_layer(model)
    pooled = keras.ops.mean(layer.output, axis=tuple(range(1, len(layer.output.shape) - 1)))
    return keras.Model(model.inputs[0], pooled, name=f"{model.name}_features")


def window_features(
    model: keras.Model,
    volume: np.ndarray,
    window: Sequence[int],
    mask: np.ndarray | None = None,
    *,
    min_fraction: float = 0.1,
    stride: int = 1,
    batch_size: int = 8,
) -> np.ndarray:
    """Bottleneck features, averaged per window, of the windows of a volume that hold the mask.

    Args:
        model: A single-input network (2D models take windows with one axis of size 1).
        volume: Normalised inputs ``(X, Y, Z, C)``.
        window: Window ``(X, Y, Z)``, non-overlapping tiling (the last window shifted to fit).
        mask: Boolean ``(X, Y, Z)``; windows with fewer than ``min_fraction`` of the
            fullest window's mask voxels are skipped. None: every window.
        min_fraction: See ``mask``. Default 0.1.
        stride: Keep every ``stride``-th kept window (subsampling). Default 1.
        batch_size: Windows per forward call.

    Returns:
        float64 ``(N, F)``.

    Raises:
        ValueError: a multi-input model, bad shapes.
        UserError: no window holds the mask.
    """
    if len(model.inputs) != 1:
        raise ValueError("Feature scores need a single-input network (not MultiRes).")
    values = np.asarray(volume, dtype=np.float32)
    grid = window_grid(values.shape[:3], tuple(window), overlap=0.0)
    padded = pad_volume(values, grid.padding, "minimum")
    inside = np.ones(values.shape[:3], bool) if mask is None else np.asarray(mask).astype(bool)
    padded_mask = np.pad(inside, grid.padding)
    origins = grid.origins
    counts = np.array([padded_mask[grid.slices(o)].sum() for o in origins])
    if counts.max() == 0:
        raise UserError("mask: no window holds a mask voxel; expected at least one.")
    kept = origins[counts >= min_fraction * counts.max()][:: max(1, int(stride))]
    extractor = _extractor(model)
    squeeze = None
    if len(model.inputs[0].shape) == 4:  # a 2D network: drop the window's axis of size 1
        ones = [i for i, w in enumerate(grid.window) if w == 1]
        if len(ones) != 1:
            raise ValueError(f"A 2D model needs one window axis of size 1. Received: window={grid.window}")
        squeeze = ones[0] + 1
    out = []
    for first in range(0, len(kept), batch_size):
        batch = np.stack([padded[grid.slices(o)] for o in kept[first : first + batch_size]])
        if squeeze is not None:
            batch = np.squeeze(batch, axis=squeeze)
        out.append(np.asarray(extractor(batch, training=False), dtype=np.float64))
    return np.concatenate(out)


class FeatureDensity:
    """Mean and precision of the training windows' features (see :func:`fit_feature_density`)."""

    def __init__(self, mean: np.ndarray, precision: np.ndarray, num_windows: int) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.precision = np.asarray(precision, dtype=np.float64)
        if self.mean.ndim != 1 or self.precision.shape != (self.mean.size, self.mean.size):
            raise ValueError(f"Expected mean (F,) and precision (F, F). Received: {self.precision.shape}")
        self.num_windows = int(num_windows)

    def save(self, path: PathLike) -> Path:
        """Write as ``.npz`` (atomically: temp file + rename)."""
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        temp = file.with_name(f".{file.name}.tmp.npz")
        np.savez(temp, mean=self.mean, precision=self.precision, num_windows=self.num_windows)
        temp.replace(file)
        return file

    @classmethod
    def load(cls, path: PathLike) -> FeatureDensity | None:
        """The stored density, or None without the file (UserError when unreadable)."""
        file = Path(path)
        if not file.is_file():
            return None
        try:
            with np.load(file) as data:
                return cls(data["mean"], data["precision"], int(data["num_windows"]))
        except (OSError, KeyError, ValueError) as error:
            raise UserError(f"{file}: not a valid tfuq feature density: {error}") from None


def fit_feature_density(features: Any, shrinkage: float = 0.1) -> FeatureDensity:
    """Gaussian of training features with a shrunk covariance (see the module notes).

    Args:
        features: ``(N, F)`` with N >= 2.
        shrinkage: ``a`` in [0, 1]. Default 0.1.

    Example:
        >>> d = fit_feature_density(np.random.default_rng(0).normal(size=(500, 3)), shrinkage=0.0)
        >>> bool(np.allclose(d.precision, np.eye(3), atol=0.2))
        True
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"Expected finite features (N, F) with N >= 2. Received: shape {x.shape}")
    if not 0.0 <= float(shrinkage) <= 1.0:
        raise ValueError(f"Expected 0 <= shrinkage <= 1. Received: {shrinkage!r}")
    mean = x.mean(axis=0)
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    d = cov.shape[0]
    scale = max(float(np.trace(cov)) / d, 1e-12)
    shrunk = (1.0 - shrinkage) * cov + shrinkage * scale * np.eye(d)
    return FeatureDensity(mean, np.linalg.pinv(shrunk, hermitian=True), x.shape[0])


def mahalanobis(features: Any, density: FeatureDensity) -> np.ndarray:
    """Distance of each row of ``features`` ``(N, F)`` to the density, ``(N,)``."""
    x = np.asarray(features, dtype=np.float64) - density.mean
    return np.sqrt(np.maximum(np.einsum("nf,fg,ng->n", x, density.precision, x), 0.0))
