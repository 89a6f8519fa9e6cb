"""Synthetic anomalies for ``tfuq validate-uq``: zero cubes placed in the body and their scores.

Reinhold et al. (ISBI 2020, section 3.3) insert an all-zero cube at a random
place inside the brain mask of held-out images and compare the epistemic
uncertainty inside it with the rest of the mask. Here a cube lies wholly
inside the mask when it fits, is placed only where zeroing changes the input
(:func:`anomaly_changes`), and is scored by the ratio of means and the AUROC
of the epistemic std for the cube's voxels.

Reference:
    Reinhold, Carass, Prince et al., "Validating uncertainty in medical image
    translation", ISBI 2020, arXiv:2002.04639.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfuq.data.phantom import insert_zero_cube
from tfuq.evaluation.checks import as_map, resolve_mask
from tfuq.evaluation.uq_metrics import auroc

__all__ = ["anomaly_changes", "anomaly_scores", "insert_anomaly", "random_cube_center"]


def _box_sums(volume: np.ndarray, side: int) -> np.ndarray:
    """Sum of ``volume`` over every ``side``^3 box, indexed by the box start (an integral volume)."""
    total = np.pad(volume.astype(np.int64), ((1, 0), (1, 0), (1, 0))).cumsum(0).cumsum(1).cumsum(2)
    a, b = slice(side, None), slice(None, -side)
    return (
        total[a, a, a]
        - total[b, a, a]
        - total[a, b, a]
        - total[a, a, b]
        + total[b, b, a]
        + total[b, a, b]
        + total[a, b, b]
        - total[b, b, b]
    )


def random_cube_center(
    mask: Any, side: int, *, seed: int, changed: Any | None = None, min_changed: float = 0.5
) -> tuple[int, int, int]:
    """A seeded random centre for a cube of ``side`` voxels that lies wholly inside ``mask``.

    The cube of centre ``c`` covers ``c - side // 2`` to ``c - side // 2 +
    side - 1`` on each axis (the convention of
    :func:`tfuq.data.phantom.insert_zero_cube`). When no cube fits, the
    centre is drawn among the positions where the cube covers the most mask
    voxels. With ``changed``, only the places (among those) where at least
    ``min_changed`` of the cube's voxels are ``changed`` are drawn from (when
    none is, the places where the most are): a zero cube dropped into air or
    gas changes nothing and is no anomaly.

    Args:
        mask: 3D boolean body/brain mask.
        side: Cube side in voxels, >= 1 and at most every axis length.
        seed: Seed of the draw.
        changed: Optional 3D boolean map of the voxels the anomaly would
            change (e.g. input far from the fill value).
        min_changed: Fraction in [0, 1] of the cube's voxels that must be
            ``changed``.

    Returns:
        ``(i, j, k)`` voxel index.

    Raises:
        ValueError: mask not 3D, bad side, ``changed`` of another shape,
            ``min_changed`` outside [0, 1].
        UserError: empty mask.
    """
    region = np.asarray(mask)
    if region.ndim != 3:
        raise ValueError(f"mask must be 3D. Received: shape {region.shape}")
    region = resolve_mask(region, region.shape)
    if isinstance(side, bool) or int(side) != side or not 1 <= side <= min(region.shape):
        raise ValueError(f"side must be an int in [1, {min(region.shape)}]. Received: side={side!r}")
    if not 0.0 <= min_changed <= 1.0:
        raise ValueError(f"min_changed must be in [0, 1]. Received: min_changed={min_changed!r}")
    side = int(side)
    counts = _box_sums(region, side)
    best = counts == counts.max()
    if changed is not None:
        moved = np.asarray(changed, dtype=bool)
        if moved.shape != region.shape:
            raise ValueError(f"changed must have the mask's shape {region.shape}. Received: {moved.shape}")
        hits = np.where(best, _box_sums(moved & region, side), -1)
        enough = best & (hits >= min_changed * side**3)
        best = enough if enough.any() else hits == hits.max()
    starts = np.argwhere(best)
    start = starts[np.random.default_rng(int(seed)).integers(len(starts))]
    return tuple(int(s) + side // 2 for s in start)  # type: ignore[return-value]


def anomaly_changes(image: Any, mask: Any, *, tolerance: float = 0.1) -> np.ndarray:
    """Voxels a zero cube would change: some channel farther than ``tolerance`` of its span from 0.

    The span of a channel is its 1st-99th percentile range inside ``mask``,
    so the rule holds in any units (raw MR, HU, normalised).

    Args:
        image: Input volume, 3D or ``(X, Y, Z, C)``.
        mask: 3D boolean mask of the image's spatial shape.
        tolerance: Fraction of the span, >= 0.

    Returns:
        3D boolean map.

    Raises:
        ValueError: shapes differ, negative tolerance.
    """
    volume = np.asarray(image, dtype=np.float64)
    volume = volume[..., None] if volume.ndim == 3 else volume
    region = np.asarray(mask, dtype=bool)
    if volume.ndim != 4 or volume.shape[:3] != region.shape:
        raise ValueError(
            f"mask must have the image's spatial shape {volume.shape[:3]}. Received: {region.shape}"
        )
    if not tolerance >= 0.0:
        raise ValueError(f"tolerance must be >= 0. Received: tolerance={tolerance!r}")
    inside = volume[region] if region.any() else volume.reshape(-1, volume.shape[-1])
    low, high = np.percentile(inside, [1.0, 99.0], axis=0)
    return np.any(np.abs(volume) > tolerance * (high - low), axis=-1)


def insert_anomaly(
    image: Any, mask: Any, side: int, *, seed: int, min_changed: float = 0.5
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Zero a cube of ``side`` voxels at a seeded random place inside the mask where zeros are anomalous.

    The cube lies inside the mask (Reinhold: "placed randomly inside the
    brain mask") and at least ``min_changed`` of its voxels are changed by
    zeroing (:func:`anomaly_changes`), so a cube is never placed where the
    input is already about zero (air, gas), which would test nothing.

    Args:
        image: Input volume, 3D or ``(X, Y, Z, C)`` (every channel is zeroed).
        mask: 3D boolean body/brain mask of the image's spatial shape.
        side: Cube side in voxels (Reinhold: 40 at 0.7 x 0.7 x 1 mm).
        seed: Seed of the position (one per trial).
        min_changed: Fraction of the cube's voxels that zeroing must change;
            0 = anywhere inside the mask (Reinhold's rule).

    Returns:
        ``(anomalous_image, anomaly_mask, center)``: the image with the cube
        zeroed, the boolean cube mask (spatial shape) and the centre.

    Raises:
        ValueError: shapes differ, bad side or ``min_changed``.
    """
    volume = np.asarray(image)
    region = np.asarray(mask)
    if volume.shape[:3] != region.shape:
        raise ValueError(
            f"mask must have the image's spatial shape {volume.shape[:3]}. Received: {region.shape}"
        )
    changed = anomaly_changes(volume, region) if min_changed > 0 else None
    center = random_cube_center(region, side, seed=seed, changed=changed, min_changed=min_changed)
    cube = insert_zero_cube(np.ones(region.shape, dtype=np.int8), center, side) == 0
    return insert_zero_cube(volume, center, side), cube, center


def anomaly_scores(epistemic_std: Any, anomaly_mask: Any, region: Any | None = None) -> dict[str, float]:
    """Epistemic std inside a synthetic anomaly against outside it.

    Args:
        epistemic_std: Epistemic std map predicted for the anomalous input.
        anomaly_mask: Boolean cube mask (e.g. from :func:`insert_anomaly`).
        region: Optional boolean mask of the comparison region (the brain or
            body); outside = region minus anomaly. None: the whole image.

    Returns:
        dict: ``inside`` and ``outside`` (mean std), ``ratio``
        (inside / outside; inf if outside is 0), ``auroc`` (of the std for
        anomaly voxels among anomaly + outside voxels).

    Raises:
        ValueError: shapes differ, no anomaly voxel or no outside voxel.
    """
    std = as_map(epistemic_std, "epistemic_std")
    cube = resolve_mask(anomaly_mask, std.shape, "anomaly_mask")
    outside = resolve_mask(region, std.shape, "region") & ~cube
    if not outside.any():
        raise ValueError("No voxel outside the anomaly. Expected a region larger than the cube.")
    inside_mean, outside_mean = float(np.mean(std[cube])), float(np.mean(std[outside]))
    ratio = inside_mean / outside_mean if outside_mean > 0 else float("inf")
    return {
        "inside": inside_mean,
        "outside": outside_mean,
        "ratio": ratio,
        "auroc": auroc(std, cube, cube | outside),
    }
