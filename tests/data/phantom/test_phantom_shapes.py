"""Phantom shapes and smooth fields against closed-form volumes and hand values."""

from __future__ import annotations

import numpy as np
import pytest

from tfuq.data.phantom.shapes import (
    Capsule,
    Difference,
    Ellipsoid,
    EllipticCylinder,
    Grid,
    Loft,
    SmoothField,
    ellipsoid_radius,
    paint,
    random_smooth_field,
    rotation_matrix,
    segment_distance,
)

STEP = 1.0
# z ranges end half a voxel off the grid so that slice counts equal heights.


@pytest.fixture(scope="module")
def grid():
    """A 1 mm grid over [-40, 40]^3, the first two axes decreasing (L-P-S like)."""
    axis = np.arange(-40.0, 40.0 + STEP / 2, STEP)
    return Grid((axis[::-1].copy(), axis[::-1].copy(), axis.copy()))


def _volume(grid, shape):
    labels = np.zeros(grid.shape, dtype=np.uint8)
    paint(labels, grid, shape, 1)
    return labels.sum() * STEP**3


def test_ellipsoid_radius_on_axes_and_rotated():
    x, y, z = np.array([3.0]), np.array([0.0]), np.array([0.0])
    assert ellipsoid_radius(x, y, z, (0, 0, 0), (3, 5, 7))[0] == pytest.approx(1.0)
    # Rotating 90 degrees about z puts the first axis (radius 3) along y.
    rotation = rotation_matrix((0, 0, 90))
    assert ellipsoid_radius(np.array([0.0]), np.array([3.0]), z, (0, 0, 0), (3, 5, 7), rotation)[
        0
    ] == pytest.approx(1.0)
    assert ellipsoid_radius(np.array([5.0]), y, z, (0, 0, 0), (3, 5, 7), rotation)[0] == pytest.approx(1.0)


def test_rotation_matrix_is_a_rotation():
    r = rotation_matrix((10, -20, 35))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_segment_distance_hand_values():
    d = segment_distance(
        np.array([0.0, 5.0, -3.0]), np.array([4.0, 0.0, 0.0]), np.zeros(3), (0, 0, 0), (0, 10, 0)
    )
    np.testing.assert_allclose(d, [0.0, 5.0, 3.0])  # (0, 4, 0) lies on the segment
    beyond = segment_distance(np.array([0.0]), np.array([13.0]), np.array([4.0]), (0, 0, 0), (0, 10, 0))
    assert beyond[0] == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (Ellipsoid((1.5, -2.0, 3.0), (20.0, 12.0, 16.0)), 4 / 3 * np.pi * 20 * 12 * 16),
        (
            Ellipsoid((0.0, 0.0, 0.0), (25.0, 10.0, 14.0), rotation_matrix((20, 30, 40))),
            4 / 3 * np.pi * 25 * 10 * 14,
        ),
        (EllipticCylinder((2.0, 3.0), (15.0, 9.0), (-20.5, 24.5)), np.pi * 15 * 9 * 45),
        (Capsule((-10.0, 0.0, -15.0), (10.0, 5.0, 15.0), 8.0), None),
        (Loft((0.0, 0.0), (-30.5, 29.5), (10.0, 10.0), (20.0, 20.0)), np.pi * 10 * 20 * 60),
        (
            Difference(
                EllipticCylinder((0, 0), (30, 30), (-9.5, 10.5)),
                EllipticCylinder((0, 0), (20, 20), (-9.5, 10.5)),
            ),
            np.pi * (30**2 - 20**2) * 20,
        ),
    ],
)
def test_painted_volumes_match_closed_forms(grid, shape, expected):
    if expected is None:  # capsule: cylinder of the segment's length + a ball
        length = np.linalg.norm(np.subtract(shape.end, shape.start))
        expected = np.pi * shape.radius**2 * length + 4 / 3 * np.pi * shape.radius**3
    assert _volume(grid, shape) == pytest.approx(expected, rel=0.03)


def test_shrunk_and_moved_ellipsoid(grid):
    ball = Ellipsoid((0.0, 0.0, 0.0), (20.0, 20.0, 20.0))
    assert _volume(grid, ball.shrunk(5.0)) == pytest.approx(4 / 3 * np.pi * 15**3, rel=0.03)
    moved = ball.moved((3.0, -2.0, 1.0))
    assert moved.center == (3.0, -2.0, 1.0)
    assert moved.inside(np.array([22.5]), np.array([-2.0]), np.array([1.0]))[0]
    assert not ball.inside(np.array([22.5]), np.array([0.0]), np.array([0.0]))[0]


def test_curved_cylinder_follows_its_axis(grid):
    shape = EllipticCylinder((0.0, 0.0), (4.0, 4.0), (-30.0, 30.0), lambda z: 0.5 * z, 15.0)
    x, y, z = grid.open()
    inside = np.broadcast_to(shape.inside(x, y, z), grid.shape)
    k = int(np.argmin(np.abs(grid.axes[2] - 20.0)))
    ys = grid.axes[1][inside[:, :, k].any(axis=0)]
    assert ys.mean() == pytest.approx(10.0, abs=0.6)


def test_smooth_field_is_bounded_and_random_fields_follow_their_settings():
    rng = np.random.default_rng(0)
    field = random_smooth_field(rng, wavelengths=(20.0, 40.0), terms=5)
    assert field.amplitudes.sum() == pytest.approx(1.0)
    wavelengths = 1.0 / np.linalg.norm(field.frequencies, axis=1)
    assert np.all((wavelengths >= 20.0 - 1e-9) & (wavelengths <= 40.0 + 1e-9))
    values = field(*Grid((np.linspace(-200, 200, 50),) * 3).open())
    assert values.min() >= -1.0 and values.max() <= 1.0
    assert values.std() > 0.05
    single = SmoothField(np.array([[0.1, 0.0, 0.0]]), np.array([0.0]), np.array([1.0]))
    np.testing.assert_allclose(
        single(np.array([0.0, 5.0]), np.zeros(1), np.zeros(1)), [1.0, -1.0], atol=1e-12
    )


def test_grid_box_handles_decreasing_axes(grid):
    box = grid.box((-1.2, -1.2, -1.2), (1.2, 1.2, 1.2))
    x, y, _ = grid.open(box)
    np.testing.assert_array_equal(sorted(x.ravel()), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(y.ravel(), [1.0, 0.0, -1.0])
    assert grid.box((100.0, 0, 0), (110.0, 1, 1)) is None
    grown = grid.box((-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), margin=2)
    assert grown[0].stop - grown[0].start == 7


def test_paint_only_and_keep(grid):
    labels = np.zeros(grid.shape, dtype=np.uint8)
    paint(labels, grid, Ellipsoid((0, 0, 0), (10, 10, 10)), 1)
    paint(labels, grid, Ellipsoid((10, 0, 0), (10, 10, 10)), 2, only=(1,))
    assert set(np.unique(labels)) == {0, 1, 2}
    x, y, z = grid.open()
    outside_first = np.broadcast_to(~Ellipsoid((0, 0, 0), (10, 10, 10)).inside(x, y, z), grid.shape)
    assert not np.any(labels[outside_first] == 2)
    paint(labels, grid, Ellipsoid((0, 0, 0), (30, 30, 30)), 3, keep=(2,))
    assert np.any(labels == 2) and not np.any(labels == 1)
