"""Shapes and smooth random fields for the phantom, evaluated on world grids.

Every shape is a small frozen description (centre, radii, ...) with two
methods: ``bounds()`` gives its world bounding box in mm and
``inside(x, y, z)`` tells which points lie in it. The points are given as
*open* coordinate arrays that broadcast against each other (``x`` of shape
``(n0, 1, 1)``, ``y`` of ``(1, n1, 1)``, ``z`` of ``(1, 1, n2)``), which is
exact for the axis-aligned grids of the phantom and costs one full-size array
per operation. :func:`paint` evaluates a shape only inside the index box that
covers its bounds, so small shapes are cheap on large volumes.

Smooth fields are sums of a few cosine plane waves with amplitudes summing to
one, so their values always lie in ``[-1, 1]``; they bump organ surfaces and
give tissues a smooth texture shared by all modalities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Capsule",
    "Difference",
    "Ellipsoid",
    "EllipticCylinder",
    "Grid",
    "Loft",
    "Shape",
    "SmoothField",
    "ellipsoid_radius",
    "paint",
    "random_smooth_field",
    "rotation_matrix",
    "segment_distance",
]

BoolArray = npt.NDArray[np.bool_]
Box = tuple[slice, slice, slice]


@dataclass(frozen=True, eq=False)
class Grid:
    """Axis-aligned voxel grid: the coordinate (mm) of voxel centres along each axis.

    Args:
        axes: Three 1D float arrays; ``axes[a][i]`` is the coordinate along
            world axis ``a`` of voxel index ``i`` along array axis ``a``.
            Each may increase or decrease.
    """

    axes: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the voxel array."""
        return (self.axes[0].size, self.axes[1].size, self.axes[2].size)

    def open(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return broadcastable coordinate arrays ``(x, y, z)`` of a box (default: all)."""
        box = box or (slice(None),) * 3
        x, y, z = (axis[sl] for axis, sl in zip(self.axes, box))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def box(self, lower: Sequence[float], upper: Sequence[float], margin: int = 0) -> Box | None:
        """Index box of the voxels whose centres lie in a world box, grown by ``margin``.

        Args:
            lower: Lower world corner (mm), 3 values.
            upper: Upper world corner (mm), 3 values.
            margin: Voxels added on every side (clipped to the volume).

        Returns:
            Three slices, or None when no voxel centre lies in the box.
        """
        slices = []
        for axis, lo, hi in zip(self.axes, lower, upper):
            index = np.nonzero((axis >= lo) & (axis <= hi))[0]
            if index.size == 0:
                return None
            start = max(int(index[0]) - margin, 0)
            stop = min(int(index[-1]) + 1 + margin, axis.size)
            slices.append(slice(start, stop))
        return (slices[0], slices[1], slices[2])

    def transformed(self, offset: Sequence[float], scale: Sequence[float]) -> Grid:
        """Grid in a subject's own frame: ``(world - offset) / scale`` per axis."""
        return Grid(tuple((axis - o) / s for axis, o, s in zip(self.axes, offset, scale)))


@dataclass(frozen=True, eq=False)
class SmoothField:
    """Sum of cosine plane waves: ``sum_i a_i cos(2 pi f_i . p + phi_i)``.

    Args:
        frequencies: ``(n, 3)`` wave vectors in cycles per mm.
        phases: ``(n,)`` phases in radians.
        amplitudes: ``(n,)`` non-negative amplitudes summing to 1, so the
            field lies in ``[-1, 1]``.
    """

    frequencies: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Evaluate the field at broadcastable coordinates (mm)."""
        total = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape))
        for (fx, fy, fz), phase, amplitude in zip(self.frequencies, self.phases, self.amplitudes):
            total += amplitude * np.cos(2.0 * np.pi * (fx * x + fy * y + fz * z) + phase)
        return total


def random_smooth_field(
    rng: np.random.Generator, *, wavelengths: tuple[float, float], terms: int = 4
) -> SmoothField:
    """Draw a :class:`SmoothField` with wavelengths (mm) uniform in a range.

    Args:
        rng: Source of randomness.
        wavelengths: ``(shortest, longest)`` wavelength in mm, both > 0.
        terms: Number of plane waves, >= 1.

    Returns:
        The field; directions are uniform on the sphere, amplitudes
        Dirichlet(1, ..., 1), phases uniform.
    """
    directions = rng.normal(size=(terms, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = rng.uniform(wavelengths[0], wavelengths[1], size=terms)
    return SmoothField(
        frequencies=directions / lengths[:, None],
        phases=rng.uniform(0.0, 2.0 * np.pi, size=terms),
        amplitudes=rng.dirichlet(np.ones(terms)),
    )


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` from angles (degrees) about x, y and z."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid_radius(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    center: Sequence[float],
    radii: Sequence[float],
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised radius ``|R^T (p - c) / r|``: < 1 inside the ellipsoid, 1 on it.

    Args:
        x: Broadcastable x coordinates (mm).
        y: Broadcastable y coordinates (mm).
        z: Broadcastable z coordinates (mm).
        center: Centre ``c`` (mm).
        radii: Semi-axes ``r`` (mm), > 0, along the rotated axes.
        rotation: 3x3 rotation whose columns are the ellipsoid's axes
            (default: identity).

    Returns:
        The normalised radius, broadcast shape of the inputs.
    """
    d = (x - center[0], y - center[1], z - center[2])
    if rotation is None:
        local = d
    else:
        local = tuple(rotation[0, i] * d[0] + rotation[1, i] * d[1] + rotation[2, i] * d[2] for i in range(3))
    return np.sqrt(sum((u / r) ** 2 for u, r in zip(local, radii)))


def segment_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, start: Sequence[float], end: Sequence[float]
) -> np.ndarray:
    """Euclidean distance (mm) from points to the segment ``[start, end]``."""
    a = np.asarray(start, dtype=float)
    axis = np.asarray(end, dtype=float) - a
    d = (x - a[0], y - a[1], z - a[2])
    t = np.clip((d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2]) / float(axis @ axis), 0.0, 1.0)
    return np.sqrt(sum((d[i] - t * axis[i]) ** 2 for i in range(3)))


@dataclass(frozen=True, eq=False)
class Ellipsoid:
    """Ellipsoid, optionally rotated, with a surface bumped by a smooth field.

    A point is inside when ``ellipsoid_radius(p) <= 1 + bump * field(p)``.

    Args:
        center: Centre (mm).
        radii: Semi-axes (mm).
        rotation: 3x3 rotation (columns are the axes) or None.
        field: Smooth field in ``[-1, 1]`` bumping the surface, or None.
        bump: Relative bump amplitude in ``[0, 1)``.
    """

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: np.ndarray | None = None
    field: SmoothField | None = None
    bump: float = 0.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box (mm), including the bump."""
        reach = np.full(3, max(self.radii)) if self.rotation is not None else np.asarray(self.radii)
        reach = reach * (1.0 + self.bump)
        center = np.asarray(self.center, dtype=float)
        return center - reach, center + reach

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> BoolArray:
        """Which points are inside."""
        level = ellipsoid_radius(x, y, z, self.center, self.radii, self.rotation)
        if self.field is None or self.bump == 0.0:
            return level <= 1.0
        return level <= 1.0 + self.bump * self.field(x, y, z)

    def shrunk(self, thickness: float) -> Ellipsoid:
        """Same ellipsoid with every semi-axis reduced by ``thickness`` mm."""
        radii = tuple(max(r - thickness, 1e-3) for r in self.radii)
        return Ellipsoid(self.center, radii, self.rotation, self.field, self.bump)

    def moved(self, shift: Sequence[float]) -> Ellipsoid:
        """Same ellipsoid translated by ``shift`` mm."""
        center = tuple(c + s for c, s in zip(self.center, shift))
        return Ellipsoid(center, self.radii, self.rotation, self.field, self.bump)


@dataclass(frozen=True, eq=False)
class EllipticCylinder:
    """Cylinder along z with an elliptic cross-section whose centre may follow z.

    Inside when ``z0 <= z <= z1`` and
    ``((x - cx) / rx)^2 + ((y - cy(z)) / ry)^2 <= 1``.

    Args:
        center: ``(cx, cy)`` (mm).
        radii: ``(rx, ry)`` (mm).
        z_range: ``(z0, z1)`` (mm), z0 < z1.
        y_of_z: Optional callable giving an extra y offset (mm) as a function
            of z (a curved axis, e.g. the spine); must stay within
            ``y_reach`` in absolute value.
        y_reach: Bound on ``|y_of_z|`` used for the bounding box.
    """

    center: tuple[float, float]
    radii: tuple[float, float]
    z_range: tuple[float, float]
    y_of_z: Callable[[np.ndarray], np.ndarray] | None = None
    y_reach: float = 0.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box (mm)."""
        lo = [self.center[0] - self.radii[0], self.center[1] - self.radii[1] - self.y_reach, self.z_range[0]]
        hi = [self.center[0] + self.radii[0], self.center[1] + self.radii[1] + self.y_reach, self.z_range[1]]
        return np.asarray(lo), np.asarray(hi)

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> BoolArray:
        """Which points are inside."""
        cy = self.center[1] + (self.y_of_z(z) if self.y_of_z is not None else 0.0)
        radial = ((x - self.center[0]) / self.radii[0]) ** 2 + ((y - cy) / self.radii[1]) ** 2
        return (radial <= 1.0) & (z >= self.z_range[0]) & (z <= self.z_range[1])

    def shrunk(self, thickness: float) -> EllipticCylinder:
        """Same cylinder with both radii reduced by ``thickness`` mm (z range kept)."""
        radii = (max(self.radii[0] - thickness, 1e-3), max(self.radii[1] - thickness, 1e-3))
        return EllipticCylinder(self.center, radii, self.z_range, self.y_of_z, self.y_reach)


@dataclass(frozen=True, eq=False)
class Loft:
    """Body-like cylinder along z whose elliptic radii vary with z.

    Inside when ``z`` lies within the knots and
    ``sqrt(((x - cx) / rx(z))^2 + ((y - cy) / ry(z))^2) <= 1 + bump * field``,
    with ``rx``, ``ry`` linearly interpolated between knots.

    Args:
        center: ``(cx, cy)`` (mm).
        z_knots: Increasing z positions (mm).
        rx_knots: x radius (mm) at each knot.
        ry_knots: y radius (mm) at each knot.
        field: Smooth field bumping the surface, or None.
        bump: Relative bump amplitude in ``[0, 1)``.
    """

    center: tuple[float, float]
    z_knots: tuple[float, ...]
    rx_knots: tuple[float, ...]
    ry_knots: tuple[float, ...]
    field: SmoothField | None = None
    bump: float = 0.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box (mm), including the bump."""
        grow = 1.0 + self.bump
        rx, ry = max(self.rx_knots) * grow, max(self.ry_knots) * grow
        lo = [self.center[0] - rx, self.center[1] - ry, self.z_knots[0]]
        hi = [self.center[0] + rx, self.center[1] + ry, self.z_knots[-1]]
        return np.asarray(lo), np.asarray(hi)

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> BoolArray:
        """Which points are inside."""
        rx = np.interp(z, self.z_knots, self.rx_knots)
        ry = np.interp(z, self.z_knots, self.ry_knots)
        level = np.sqrt(((x - self.center[0]) / rx) ** 2 + ((y - self.center[1]) / ry) ** 2)
        limit = 1.0 if self.field is None else 1.0 + self.bump * self.field(x, y, z)
        return (level <= limit) & (z >= self.z_knots[0]) & (z <= self.z_knots[-1])

    def shrunk(self, thickness: float, *, bottom: float = 0.0) -> Loft:
        """Radii reduced by ``thickness`` mm and the lowest knot raised by ``bottom`` mm."""
        z_knots = (self.z_knots[0] + bottom, *self.z_knots[1:])
        rx = tuple(max(r - thickness, 1e-3) for r in self.rx_knots)
        ry = tuple(max(r - thickness, 1e-3) for r in self.ry_knots)
        return Loft(self.center, z_knots, rx, ry, self.field, self.bump)


@dataclass(frozen=True, eq=False)
class Difference:
    """Points inside ``outer`` but not inside ``inner`` (a shell or a ring)."""

    outer: Shape
    inner: Shape

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box (mm) of the outer shape."""
        return self.outer.bounds()

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> BoolArray:
        """Which points are inside."""
        return self.outer.inside(x, y, z) & ~self.inner.inside(x, y, z)


@dataclass(frozen=True, eq=False)
class Capsule:
    """Points within ``radius`` mm of the segment ``[start, end]`` (a long bone)."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box (mm)."""
        ends = np.array([self.start, self.end], dtype=float)
        return ends.min(axis=0) - self.radius, ends.max(axis=0) + self.radius

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> BoolArray:
        """Which points are inside."""
        return segment_distance(x, y, z, self.start, self.end) <= self.radius


#: Anything with ``bounds()`` and ``inside(x, y, z)``.
Shape = Ellipsoid | EllipticCylinder | Loft | Capsule | Difference


def paint(
    labels: np.ndarray,
    grid: Grid,
    shape: Shape,
    value: int,
    *,
    only: Sequence[int] | None = None,
    keep: Sequence[int] | None = None,
) -> None:
    """Set ``labels`` to ``value`` inside ``shape`` (in place; painter's order).

    Args:
        labels: Label volume of ``grid.shape``, modified in place.
        grid: World coordinates of the voxels.
        shape: Anything with ``bounds()`` and ``inside(x, y, z)``.
        value: Label to paint.
        only: If given, paint only over voxels currently holding these labels.
        keep: If given, never paint over voxels holding these labels.
    """
    box = grid.box(*shape.bounds())
    if box is None:
        return
    region = labels[box]
    inside = np.broadcast_to(shape.inside(*grid.open(box)), region.shape).copy()
    if only is not None:
        inside &= np.isin(region, only)
    if keep is not None:
        inside &= ~np.isin(region, keep)
    region[inside] = value
