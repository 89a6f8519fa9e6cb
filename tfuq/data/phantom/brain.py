"""Brain phantom anatomy: scalp, skull, CSF, grey and white matter, ventricles.

Shapes are placed in a subject frame (mm, NIfTI RAS+ axes: +x toward the
subject's right, +y anterior, +z superior; origin near the head centre),
the world frame stretched per axis by the head's size and moved by its
position. Everything random is drawn from one generator in a fixed order.

Painter's order: head (scalp fat, scalp soft tissue), skull (cortical
bone), CSF inside the skull, cortex (grey matter with a folded surface),
white matter (its own folded surface), cerebellum (grey matter with a white
core), brainstem, deep grey nuclei, lateral ventricles, and the
interhemispheric fissure (CSF).
"""

from __future__ import annotations

import numpy as np

from tfuq.data.phantom.shapes import (
    Ellipsoid,
    EllipticCylinder,
    Grid,
    paint,
    random_smooth_field,
    rotation_matrix,
)
from tfuq.data.phantom.tissues import (
    CORTICAL_BONE,
    CSF,
    FAT,
    GREY_MATTER,
    MUSCLE,
    VENTRICLE,
    WHITE_MATTER,
    Anatomy,
)

__all__ = ["brain_anatomy"]

_BRAIN = (CSF, GREY_MATTER, WHITE_MATTER)


def brain_anatomy(grid: Grid, rng: np.random.Generator) -> Anatomy:
    """Draw one head on a world grid.

    The head's size (+-8 % per axis) and position (up to 6 mm) vary, as do
    the scalp and skull thickness, the folding of the cortex and of the
    white-matter surface, the size of the ventricles (x0.7 to x1.4) and of
    the deep grey nuclei, and the texture and bias fields.

    Args:
        grid: World coordinates (mm) of the voxel centres.
        rng: Source of randomness for the anatomy (not the noise).

    Returns:
        The :class:`~tfuq.data.phantom.tissues.Anatomy` (no moving parts).
    """
    scale = rng.uniform(0.92, 1.08, size=3)
    offset = rng.uniform(-6.0, 6.0, size=3)
    local = grid.transformed(offset, scale)
    labels = np.zeros(grid.shape, dtype=np.uint8)

    scalp, skull = rng.uniform(5.0, 8.0), rng.uniform(6.0, 9.0)
    head = Ellipsoid(
        (0.0, 0.0, -15.0), (76.0, 96.0, 95.0), None, random_smooth_field(rng, wavelengths=(100, 200)), 0.02
    )
    paint(labels, local, head, FAT)
    paint(labels, local, head.shrunk(3.0), MUSCLE)
    paint(labels, local, head.shrunk(scalp), CORTICAL_BONE)
    inner = head.shrunk(scalp + skull)
    paint(labels, local, inner, CSF)
    gyri = random_smooth_field(rng, wavelengths=(25.0, 45.0), terms=6)
    cortex = Ellipsoid(inner.center, inner.shrunk(2.0).radii, None, gyri, 0.04)
    paint(labels, local, cortex, GREY_MATTER, only=(CSF,))
    folds = random_smooth_field(rng, wavelengths=(30.0, 60.0), terms=6)
    white = Ellipsoid(inner.center, inner.shrunk(13.0).radii, None, folds, 0.05)
    paint(labels, local, white, WHITE_MATTER, only=(GREY_MATTER,))

    cerebellum = Ellipsoid((0.0, -50.0, -45.0), tuple(rng.uniform(0.9, 1.1) * np.array([45.0, 26.0, 20.0])))
    paint(labels, local, cerebellum, GREY_MATTER, only=_BRAIN)
    core = Ellipsoid(cerebellum.center, tuple(0.5 * np.asarray(cerebellum.radii)))
    paint(labels, local, core, WHITE_MATTER, only=_BRAIN)
    paint(
        labels,
        local,
        EllipticCylinder((0.0, -20.0), (13.0, 12.0), (-200.0, -25.0)),
        WHITE_MATTER,
        only=_BRAIN,
    )

    nuclei = rng.uniform(0.85, 1.15)
    ventricles = rng.uniform(0.7, 1.4)
    for side in (-1.0, 1.0):
        nucleus = Ellipsoid((side * 22.0, -5.0, -2.0), tuple(nuclei * np.array([12.0, 18.0, 12.0])))
        paint(labels, local, nucleus, GREY_MATTER, only=(WHITE_MATTER,))
    for side in (-1.0, 1.0):
        field = random_smooth_field(rng, wavelengths=(20.0, 40.0))
        radii = tuple(ventricles * np.array([8.0, 34.0, 13.0]))
        tilt = rotation_matrix((rng.uniform(-8.0, 8.0), 0.0, side * rng.uniform(0.0, 8.0)))
        ventricle = Ellipsoid((side * 11.0 * ventricles, 0.0, 12.0), radii, tilt, field, 0.1)
        paint(labels, local, ventricle, VENTRICLE, only=(GREY_MATTER, WHITE_MATTER))
    fissure = EllipticCylinder((0.0, 0.0), (2.25, 200.0), (15.0, 200.0))
    paint(labels, local, fissure, CSF, only=(GREY_MATTER, WHITE_MATTER))

    x, y, z = local.open()
    texture = random_smooth_field(rng, wavelengths=(20.0, 80.0), terms=6)(x, y, z)
    bias = np.exp(0.15 * random_smooth_field(rng, wavelengths=(200.0, 500.0), terms=3)(x, y, z))
    return Anatomy(labels=labels, texture=texture, bias=bias)
