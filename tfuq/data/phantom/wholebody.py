"""Whole-body phantom anatomy: shoulders to mid-thigh, with moving bowel gas.

Shapes are placed in a subject frame (mm, NIfTI RAS+ axes: +x toward the
subject's right, +y anterior, +z superior; origin at the kidneys' level),
which is the world frame stretched per axis by the subject's size and moved
by the subject's position. Everything random is drawn from one generator in
a fixed order, so ``(grid, rng state)`` fixes the subject.

Painter's order: body (subcutaneous fat, then muscle), thoracic and
abdominal cavities (fat), bowel, bladder, liver, spleen, kidneys (in
perirenal fat), lungs, heart, spine (vertebrae with cortical shell and
trabecular core, discs between them, canal, posterior arches), sacrum,
pelvic ring and iliac wings, femurs (head, neck, shaft), then the bowel gas
pockets of the reference (MR) geometry.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tfuq.data.phantom.noise import JITTER_OFFSETS, JITTER_PROBABILITIES, MovingPart
from tfuq.data.phantom.shapes import (
    Capsule,
    Difference,
    Ellipsoid,
    EllipticCylinder,
    Grid,
    Loft,
    Shape,
    paint,
    random_smooth_field,
    rotation_matrix,
)
from tfuq.data.phantom.tissues import (
    BLADDER,
    BOWEL,
    CORTICAL_BONE,
    DISC,
    FAT,
    GAS,
    HEART,
    KIDNEY,
    LIVER,
    LUNG,
    MUSCLE,
    SPINAL_CANAL,
    SPLEEN,
    TISSUES,
    TRABECULAR_BONE,
    Anatomy,
)

__all__ = ["GAS_POSITION_PROBABILITIES", "wholebody_anatomy"]

#: Probabilities of the CT position of a gas pocket relative to the MR: in
#: place, or one voxel along +-x, +-y, +-z (array axes, as the jitter).
GAS_POSITION_PROBABILITIES = JITTER_PROBABILITIES
_CROSS = ndimage.generate_binary_structure(3, 1)
_SOFT = (FAT, MUSCLE, BOWEL, LIVER, SPLEEN, KIDNEY, HEART, BLADDER)


def _paint_bone(labels: np.ndarray, grid: Grid, outer: Shape, inner: Shape) -> None:
    """Cortical ``outer`` shape with a trabecular ``inner`` core, over soft tissue only."""
    paint(labels, grid, outer, CORTICAL_BONE, only=_SOFT)
    paint(labels, grid, inner, TRABECULAR_BONE, only=(CORTICAL_BONE,))


def _body(labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
    field = random_smooth_field(rng, wavelengths=(150.0, 300.0))
    torso = Loft(
        (0.0, 0.0),
        (-250.0, -200.0, -120.0, -40.0, 40.0, 120.0, 200.0, 280.0, 450.0),
        (148.0, 160.0, 156.0, 145.0, 147.0, 154.0, 158.0, 162.0, 162.0),
        (105.0, 115.0, 110.0, 105.0, 105.0, 112.0, 115.0, 110.0, 100.0),
        field,
        0.03,
    )
    legs = [
        Loft(
            (side * 88.0, 5.0), (-520.0, -300.0, -190.0), (62.0, 72.0, 78.0), (66.0, 76.0, 80.0), field, 0.03
        )
        for side in (-1.0, 1.0)
    ]
    torso_fat, leg_fat = rng.uniform(12.0, 28.0), rng.uniform(8.0, 20.0)
    for shape in (torso, *legs):
        paint(labels, grid, shape, FAT)
    paint(labels, grid, torso.shrunk(torso_fat, bottom=torso_fat), MUSCLE)
    for leg in legs:
        paint(labels, grid, leg.shrunk(leg_fat), MUSCLE)
    paint(labels, grid, Ellipsoid((0.0, -2.0, 195.0), (125.0, 80.0, 140.0)), FAT, only=(MUSCLE,))
    paint(labels, grid, Ellipsoid((0.0, 8.0, -50.0), (120.0, 76.0, 150.0)), FAT, only=(MUSCLE,))


def _organs(labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> Ellipsoid:
    """Abdominal and thoracic organs; returns the bowel (where gas may lie)."""

    def jitter(center: tuple[float, float, float], spread: float) -> tuple[float, float, float]:
        c = np.asarray(center) + rng.uniform(-spread, spread, size=3)
        return (float(c[0]), float(c[1]), float(c[2]))

    def size(radii: tuple[float, float, float], spread: float = 0.1) -> tuple[float, float, float]:
        r = np.asarray(radii) * rng.uniform(1.0 - spread, 1.0 + spread, size=3)
        return (float(r[0]), float(r[1]), float(r[2]))

    def bumpy(
        center: tuple[float, float, float],
        radii: tuple[float, float, float],
        bump: float,
        rotation: np.ndarray | None = None,
    ) -> Ellipsoid:
        field = random_smooth_field(rng, wavelengths=(40.0, 100.0))
        return Ellipsoid(jitter(center, 10.0), size(radii), rotation, field, bump)

    bowel = bumpy((0.0, 20.0, -100.0), (112.0, 60.0, 85.0), 0.12)
    paint(labels, grid, bowel, BOWEL, only=(FAT,))
    bladder = Ellipsoid(jitter((0.0, 40.0, -205.0), 5.0), size((38.0, 32.0, 28.0), 0.2))
    paint(labels, grid, bladder, BLADDER, only=(FAT, MUSCLE))
    liver = bumpy((62.0, 12.0, 45.0), (88.0, 72.0, 72.0), 0.1, rotation_matrix((0, rng.uniform(-10, 10), 0)))
    paint(labels, grid, liver, LIVER, only=(FAT, MUSCLE, BOWEL))
    paint(
        labels, grid, bumpy((-82.0, -35.0, 70.0), (32.0, 45.0, 50.0), 0.1), SPLEEN, only=(FAT, MUSCLE, BOWEL)
    )
    for side in (-1.0, 1.0):
        tilt = rotation_matrix((0.0, side * rng.uniform(5.0, 20.0), side * rng.uniform(-15.0, 15.0)))
        kidney = Ellipsoid(jitter((side * 62.0, -50.0, -5.0), 8.0), size((28.0, 24.0, 52.0)), tilt)
        organs = (FAT, MUSCLE, BOWEL, LIVER, SPLEEN)
        paint(labels, grid, kidney.shrunk(-8.0), FAT, only=organs)
        paint(labels, grid, kidney, KIDNEY, only=organs)
    for side in (-1.0, 1.0):
        radii = (62.0 if side > 0 else 55.0, 80.0, 130.0)
        lung = bumpy((side * 72.0, -8.0, 205.0), radii, 0.06)
        paint(labels, grid, lung, LUNG, only=(FAT, MUSCLE, LIVER, SPLEEN))
    heart = Ellipsoid(
        jitter((-22.0, 30.0, 140.0), 8.0), size((52.0, 45.0, 58.0)), rotation_matrix((0, 20, -30))
    )
    paint(labels, grid, heart, HEART, only=(FAT, LUNG, MUSCLE, LIVER))
    return bowel


def _spine(labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
    amplitude, period = rng.uniform(4.0, 10.0), rng.uniform(600.0, 900.0)
    phase = rng.uniform(0.0, 2.0 * np.pi)

    def curve(z: np.ndarray) -> np.ndarray:
        return amplitude * np.sin(2.0 * np.pi * z / period + phase)

    height, disc = rng.uniform(21.0, 25.0), rng.uniform(9.0, 11.0)
    canal = EllipticCylinder((0.0, -112.0), (11.0, 10.0), (-160.0, 460.0), curve, amplitude)
    bottom = -150.0
    while bottom < 460.0:
        rx = 22.0 + 6.0 * float(np.clip((200.0 - bottom) / 350.0, 0.0, 1.0))
        top = bottom + height
        body = EllipticCylinder((0.0, -78.0), (rx, 0.8 * rx), (bottom, top), curve, amplitude)
        core = EllipticCylinder(
            (0.0, -78.0), (rx - 6.0, 0.8 * rx - 6.0), (bottom + 4.0, top - 4.0), curve, amplitude
        )
        _paint_bone(labels, grid, body, core)
        disc_shape = EllipticCylinder(
            (0.0, -78.0), (rx - 1.0, 0.8 * rx - 1.0), (top, top + disc), curve, amplitude
        )
        paint(labels, grid, disc_shape, DISC, only=_SOFT)
        arch = EllipticCylinder((0.0, -112.0), (21.0, 19.0), (bottom + 2.0, top - 2.0), curve, amplitude)
        paint(labels, grid, arch, CORTICAL_BONE, only=_SOFT)
        middle = 0.5 * (bottom + top)
        y = -112.0 + float(curve(np.asarray(middle)))
        process = Capsule((0.0, y - 15.0, middle), (0.0, y - 42.0, middle - 8.0), 6.0)
        paint(labels, grid, process, CORTICAL_BONE, only=_SOFT)
        bottom = top + disc
    paint(labels, grid, canal, SPINAL_CANAL, only=(CORTICAL_BONE, *_SOFT))


def _pelvis_and_femurs(labels: np.ndarray, grid: Grid, rng: np.random.Generator) -> None:
    sacrum = EllipticCylinder((0.0, -85.0), (48.0, 24.0), (-215.0, -152.0))
    _paint_bone(labels, grid, sacrum, sacrum.shrunk(7.0))
    flare = rng.uniform(25.0, 40.0)
    for side in (-1.0, 1.0):
        wing = Ellipsoid(
            (side * 98.0, -45.0, -115.0), (16.0, 62.0, 55.0), rotation_matrix((0, -side * 15, side * flare))
        )
        _paint_bone(labels, grid, wing, wing.shrunk(6.0))
    outer = EllipticCylinder((0.0, -15.0), (118.0, 82.0), (-245.0, -195.0))
    inner = EllipticCylinder((0.0, -15.0), (96.0, 62.0), (-245.0, -195.0))
    core = Difference(outer.shrunk(6.0), inner.shrunk(-6.0))
    _paint_bone(labels, grid, Difference(outer, inner), core)
    for side in (-1.0, 1.0):
        head = (side * 104.0, -5.0, -218.0)
        ball = Ellipsoid(head, (23.0, 23.0, 23.0))
        _paint_bone(labels, grid, ball, ball.shrunk(5.0))
        trochanter = (side * 132.0, -5.0, -250.0)
        _paint_bone(labels, grid, Capsule(head, trochanter, 15.0), Capsule(head, trochanter, 9.0))
        knee = (side * rng.uniform(85.0, 92.0), 10.0, -700.0)
        top = (side * 128.0, 0.0, -255.0)
        _paint_bone(labels, grid, Capsule(top, knee, 16.0), Capsule(top, knee, 9.0))


def _gas(
    labels: np.ndarray, grid: Grid, rng: np.random.Generator, bowel: Ellipsoid, voxel_shift: np.ndarray
) -> tuple[MovingPart, ...]:
    """Bowel gas pockets; each moves to one of 7 positions in the CT.

    ``voxel_shift`` is one voxel along each array axis in subject-frame mm
    (signed), so the positions are exactly the jitter offsets in voxels.
    """
    shifts = np.asarray(JITTER_OFFSETS, dtype=float) * voxel_shift
    taken = np.zeros(labels.shape, dtype=bool)
    parts: list[MovingPart] = []
    wanted = int(rng.integers(3, 7))
    for _ in range(40):
        if len(parts) == wanted:
            break
        direction = rng.normal(size=3)
        direction *= rng.uniform() ** (1.0 / 3.0) / np.linalg.norm(direction)
        center = np.asarray(bowel.center) + 0.7 * direction * np.asarray(bowel.radii)
        pocket = Ellipsoid(tuple(center), tuple(rng.uniform(9.0, 16.0, size=3)))
        lower, upper = pocket.bounds()
        reach = np.abs(shifts).max(axis=0)
        region = grid.box(lower - reach, upper + reach, margin=2)
        if region is None:
            continue
        x, y, z = grid.open(region)
        bowel_here = labels[region] == BOWEL
        masks = np.stack([pocket.moved(s).inside(x, y, z) & bowel_here for s in shifts])
        # Voxels a pocket can affect (its positions and their face neighbours)
        # must not meet another pocket's, so that each voxel sees one pocket.
        affected = ndimage.binary_dilation(masks.any(axis=0), _CROSS)
        if not masks[0].any() or np.any(taken[region] & affected):
            continue
        taken[region] |= affected
        parts.append(MovingPart(region, masks, np.asarray(GAS_POSITION_PROBABILITIES), TISSUES[GAS].ct))
    for part in parts:
        labels[part.region][part.masks[0]] = GAS
    return tuple(parts)


def wholebody_anatomy(grid: Grid, rng: np.random.Generator) -> Anatomy:
    """Draw one whole-body subject on a world grid.

    The subject's size (x, y: +-10 %, z: +-7 %) and position (up to 10, 8,
    20 mm) vary, as do fat thickness, organ centres, sizes and bumpy
    surfaces, spine curvature and vertebra heights, pelvic flare and the
    number (3-6), size and place of the gas pockets.

    Args:
        grid: World coordinates (mm) of the voxel centres.
        rng: Source of randomness for the anatomy (not the noise).

    Returns:
        The :class:`~tfuq.data.phantom.tissues.Anatomy`, with the gas
        pockets as moving parts of the CT.
    """
    scale = np.array([rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1), rng.uniform(0.93, 1.07)])
    offset = np.array([rng.uniform(-10.0, 10.0), rng.uniform(-8.0, 8.0), rng.uniform(-20.0, 20.0)])
    local = grid.transformed(offset, scale)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    _body(labels, local, rng)
    bowel = _organs(labels, local, rng)
    _spine(labels, local, rng)
    _pelvis_and_femurs(labels, local, rng)
    voxel_shift = np.array([axis[1] - axis[0] if axis.size > 1 else 1.0 for axis in local.axes])
    parts = _gas(labels, local, rng, bowel, voxel_shift)
    x, y, z = local.open()
    texture = random_smooth_field(rng, wavelengths=(40.0, 140.0), terms=6)(x, y, z)
    bias = np.exp(0.2 * random_smooth_field(rng, wavelengths=(300.0, 900.0), terms=3)(x, y, z))
    return Anatomy(labels=labels, texture=texture, bias=bias, moving_parts=parts)
