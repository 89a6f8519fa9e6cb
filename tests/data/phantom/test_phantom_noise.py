"""The phantom's exact noise model against scipy, hand-computed fixtures and Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from tfuq.data.phantom.noise import (
    JITTER_OFFSETS,
    JITTER_PROBABILITIES,
    MovingPart,
    NoiseModel,
    exact_moments,
    jitter_candidates,
    rician_mean,
    rician_std,
    sample_image,
)


@pytest.mark.parametrize("sigma", [0.5, 20.0])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 1.0, 3.0, 10.0, 30.0])
def test_rician_moments_match_scipy(sigma, ratio):
    oracle = stats.rice(b=ratio, scale=sigma) if ratio > 0 else stats.rayleigh(scale=sigma)
    nu = np.array(ratio * sigma)
    np.testing.assert_allclose(rician_mean(nu, sigma), oracle.mean(), rtol=1e-10)
    np.testing.assert_allclose(rician_std(nu, sigma), oracle.std(), rtol=1e-9)


@pytest.mark.parametrize("ratio", [100.0, 1000.0])
def test_rician_moments_at_high_snr_match_numerical_integration(ratio):
    # scipy's closed-form moments overflow here; its pdf (i0e-based) does not.
    sigma = 20.0
    nu = ratio * sigma
    pdf = stats.rice(b=ratio, scale=sigma).pdf
    low, high = nu - 15 * sigma, nu + 15 * sigma
    mean = integrate.quad(lambda x: x * pdf(x), low, high, epsabs=0, epsrel=1e-12)[0]
    second = integrate.quad(lambda x: (x - mean) ** 2 * pdf(x), low, high, epsabs=0, epsrel=1e-12)[0]
    np.testing.assert_allclose(rician_mean(np.array(nu), sigma), mean, rtol=1e-9)
    np.testing.assert_allclose(rician_std(np.array(nu), sigma), np.sqrt(second), rtol=1e-6)


def test_rician_background_mean_is_sigma_sqrt_half_pi():
    np.testing.assert_allclose(rician_mean(np.zeros(3), 7.0), 7.0 * np.sqrt(np.pi / 2))
    np.testing.assert_allclose(rician_std(np.zeros(3), 7.0), 7.0 * np.sqrt(2 - np.pi / 2))


def test_jitter_candidates_hand_computed():
    image = np.zeros((3, 2, 1))
    image[1, 0, 0] = 10.0
    out = jitter_candidates(image, 0.5)
    assert out.shape == (7, 3, 2, 1)
    np.testing.assert_array_equal(out[0], image)
    # +x at voxel 0 looks at voxel 1: 0.5 * 0 + 0.5 * 10.
    assert out[JITTER_OFFSETS.index((1, 0, 0)), 0, 0, 0] == 5.0
    assert out[JITTER_OFFSETS.index((-1, 0, 0)), 2, 0, 0] == 5.0
    # +x at the last voxel repeats the edge.
    assert out[JITTER_OFFSETS.index((1, 0, 0)), 2, 0, 0] == 0.0
    # +y at (1, 0) looks at (1, 1) = 0; -y at (1, 0) repeats the edge (10).
    assert out[JITTER_OFFSETS.index((0, 1, 0)), 1, 0, 0] == 5.0
    assert out[JITTER_OFFSETS.index((0, -1, 0)), 1, 0, 0] == 10.0
    assert np.isclose(sum(JITTER_PROBABILITIES), 1.0)


def test_exact_moments_jitter_hand_computed():
    base = np.zeros((3, 1, 1))
    base[1] = 10.0
    model = NoiseModel(base, np.full(base.shape, 2.0), "gaussian", jitter=True)
    mean, std = exact_moments(model)
    # Middle voxel: 10 with p 0.4 + 0.4 (edge-padded y, z), 5 with p 0.2.
    assert mean[1, 0, 0] == pytest.approx(9.0)
    assert std[1, 0, 0] ** 2 == pytest.approx(0.8 * 100 + 0.2 * 25 - 81 + 4.0)
    # Outer voxels: 5 with p 0.1 (toward the middle), else 0.
    assert mean[0, 0, 0] == pytest.approx(0.5)
    assert std[0, 0, 0] ** 2 == pytest.approx(0.1 * 25 - 0.25 + 4.0)


def test_exact_moments_without_jitter_are_the_inputs():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, size=(4, 3, 2))
    sigma = rng.uniform(1, 5, size=base.shape)
    mean, std = exact_moments(NoiseModel(base, sigma, "gaussian", jitter=False))
    np.testing.assert_allclose(mean, base)
    np.testing.assert_allclose(std, sigma)
    mean, std = exact_moments(NoiseModel(base, sigma, "rician", jitter=False))
    np.testing.assert_allclose(mean, rician_mean(base, sigma))
    np.testing.assert_allclose(std, rician_std(base, sigma))


def _part(shape=(9, 1, 1)):
    """A 1-voxel part at index 4 (p 0.3) or 5 (p 0.7) along axis 0."""
    masks = np.zeros((2, *shape), dtype=bool)
    masks[0, 4] = True
    masks[1, 5] = True
    region = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    return MovingPart(region, masks, np.array([0.3, 0.7]), -1000.0)


def test_moving_part_bernoulli_hand_computed():
    base = np.full((9, 1, 1), 20.0)
    model = NoiseModel(base, np.full(base.shape, 3.0), "gaussian", jitter=False, moving_parts=(_part(),))
    mean, std = exact_moments(model)
    assert mean[4, 0, 0] == pytest.approx(0.3 * -1000 + 0.7 * 20)
    assert mean[5, 0, 0] == pytest.approx(0.7 * -1000 + 0.3 * 20)
    assert std[4, 0, 0] ** 2 == pytest.approx(0.3 * 0.7 * 1020**2 + 9.0)
    assert std[5, 0, 0] ** 2 == pytest.approx(0.3 * 0.7 * 1020**2 + 9.0)
    np.testing.assert_allclose(mean[[0, 1, 2, 3, 6, 7, 8]], 20.0)
    np.testing.assert_allclose(std[[0, 1, 2, 3, 6, 7, 8]], 3.0)


@pytest.mark.parametrize("kind", ["gaussian", "rician"])
def test_exact_moments_match_monte_carlo(kind):
    rng = np.random.default_rng(1)
    shape = (10, 6, 5)
    base = rng.choice([0.0, 50.0, 400.0], size=shape) + rng.uniform(0, 5, size=shape)
    sigma = rng.uniform(5.0, 30.0, size=shape)
    masks = np.zeros((3, 7, 6, 5), dtype=bool)
    masks[0, 2:4, 2:4, 1:3] = True
    masks[1, 3:5, 2:4, 1:3] = True
    masks[2, 2:4, 2:4, 2:4] = True
    part = MovingPart((slice(0, 7), slice(0, 6), slice(0, 5)), masks, np.array([0.5, 0.25, 0.25]), 900.0)
    model = NoiseModel(base, sigma, kind, jitter=True, moving_parts=(part,))
    mean, std = exact_moments(model)
    draws = 6000
    total = np.zeros(shape)
    squares = np.zeros(shape)
    for _ in range(draws):
        image = sample_image(model, rng)
        total += image
        squares += image**2
    empirical_mean = total / draws
    empirical_std = np.sqrt(squares / draws - empirical_mean**2)
    z = (empirical_mean - mean) / (std / np.sqrt(draws))
    assert np.sqrt(np.mean(z**2)) < 1.2
    assert np.abs(z).max() < 5.0
    np.testing.assert_allclose(empirical_std.mean(), std.mean(), rtol=0.02)
    assert np.median(np.abs(empirical_std / std - 1)) < 0.03
    if kind == "rician":
        assert image.min() >= 0.0


def test_sample_image_is_seeded():
    base = np.arange(24, dtype=float).reshape(2, 3, 4)
    model = NoiseModel(base, np.ones(base.shape), "rician")
    a = sample_image(model, np.random.default_rng(5))
    b = sample_image(model, np.random.default_rng(5))
    c = sample_image(model, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_invalid_models_are_refused():
    base = np.zeros((9, 1, 1))
    sigma = np.ones(base.shape)
    with pytest.raises(ValueError, match="noise kind"):
        exact_moments(NoiseModel(base, sigma, "poisson"))
    with pytest.raises(ValueError, match="one shape"):
        exact_moments(NoiseModel(base, np.ones((2, 2, 2)), "gaussian"))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        exact_moments(NoiseModel(base, np.zeros(base.shape), "rician"))
    part = _part()
    bad_probabilities = MovingPart(part.region, part.masks, np.array([0.5, 0.6]), 1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        exact_moments(NoiseModel(base, sigma, "gaussian", moving_parts=(bad_probabilities,)))
    with pytest.raises(ValueError, match="another moving part"):
        exact_moments(NoiseModel(base, sigma, "gaussian", moving_parts=(part, part)))
    # A region that stops inside the volume must keep its masks 2 voxels from that face.
    masks = np.zeros((1, 5, 1, 1), dtype=bool)
    masks[0, 3] = True
    touching = MovingPart((slice(0, 5), slice(0, 1), slice(0, 1)), masks, np.array([1.0]), 1.0)
    with pytest.raises(ValueError, match="face of its region"):
        exact_moments(NoiseModel(base, sigma, "gaussian", moving_parts=(touching,)))
