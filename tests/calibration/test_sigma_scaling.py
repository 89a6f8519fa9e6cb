from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize, stats
from utils import raw_beta, raw_scale

from tfuq.calibration import SigmaScaling, pit_values, rms_calibration_error
from tfuq.distributions import constrain
from tfuq.errors import UserError


@pytest.fixture(scope="module")
def overconfident_normal():
    rng = np.random.default_rng(0)
    n = 200_000
    loc = rng.normal(size=n) * 100.0
    sigma = np.exp(rng.normal(size=n))
    y = loc + sigma * rng.normal(size=n)
    return np.stack([loc, raw_scale(0.5 * sigma)], -1), y, sigma


@pytest.mark.parametrize("objective", ["nll", "calibration"])
def test_recalibrates_overconfident_normal_on_held_out(overconfident_normal, objective):
    params, y, _ = overconfident_normal
    half = y.size // 2
    assert rms_calibration_error(pit_values("normal", params[half:], y[half:])) > 0.1
    scaling = SigmaScaling(objective).fit("normal", params[:half], y[:half])
    assert scaling.scale_factor == pytest.approx(2.0, rel=0.02)
    scaled = scaling.scale_params("normal", params[half:])
    assert rms_calibration_error(pit_values("normal", scaled, y[half:])) < 0.02


def test_normal_closed_form_is_root_mean_square_z():
    loc, scale, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 0.5]), np.array([1.0, -3.0, 2.5])
    params = np.stack([loc, raw_scale(scale)], -1)
    z = (y - loc) / scale
    expected = np.sqrt(np.mean(z**2))  # = sqrt((1 + 4 + 1) / 3)
    assert SigmaScaling().fit("normal", params, y).scale_factor == pytest.approx(expected, rel=1e-6)
    assert SigmaScaling().fit_moments(loc, scale, y).scale_factor == pytest.approx(np.sqrt(2.0), rel=1e-12)


def test_laplace_closed_form_minimises_nll():
    rng = np.random.default_rng(1)
    loc, b = rng.normal(size=500), np.exp(rng.normal(size=500))
    y = stats.laplace.rvs(loc, 3.0 * b, random_state=rng)
    params = np.stack([loc, raw_scale(b)], -1)
    s = SigmaScaling().fit("laplace", params, y).scale_factor

    def mean_nll(log_s):
        return -stats.laplace.logpdf(y, loc, np.exp(log_s) * b).mean()

    oracle = np.exp(optimize.minimize_scalar(mean_nll, bounds=(-5, 5), method="bounded").x)
    assert s == pytest.approx(oracle, rel=1e-4)
    assert s == pytest.approx(3.0, rel=0.1)


def test_ggd_numerical_fit_and_held_out_calibration():
    rng = np.random.default_rng(2)
    n = 60_000
    loc, alpha, beta = rng.normal(size=n), np.exp(rng.normal(size=n) * 0.3), rng.uniform(1.0, 4.0, n)
    y = stats.gennorm.rvs(beta, loc, alpha, random_state=rng)
    params = np.stack([loc, raw_scale(0.5 * alpha), raw_beta(beta)], -1)
    half = n // 2
    scaling = SigmaScaling().fit("generalized_normal", params[:half], y[:half])
    assert scaling.scale_factor == pytest.approx(2.0, rel=0.03)
    scaled = scaling.scale_params("generalized_normal", params[half:])
    assert rms_calibration_error(pit_values("generalized_normal", scaled, y[half:])) < 0.02
    # Only the scale channel changed.
    before = constrain("generalized_normal", params[half:])
    after = constrain("generalized_normal", scaled)
    np.testing.assert_array_equal(after["loc"], before["loc"])
    np.testing.assert_array_equal(after["power"], before["power"])
    np.testing.assert_allclose(after["scale"], scaling.scale_factor * before["scale"].numpy(), rtol=1e-9)


def test_mixture_fit_with_mask():
    rng = np.random.default_rng(3)
    t, n = 4, 20_000
    loc = rng.normal(size=(t, n))
    member = rng.integers(0, t, size=n)
    y = loc[member, np.arange(n)] + 1.5 * rng.normal(size=n)
    params = np.stack([loc, raw_scale(np.full((t, n), 0.75))], -1)
    mask = np.ones(n, dtype=bool)
    mask[::2] = False
    scaling = SigmaScaling().fit("normal", params, y, mixture=True, mask=mask)
    assert scaling.scale_factor == pytest.approx(2.0, rel=0.05)


def test_std_and_interval_helpers():
    scaling = SigmaScaling.from_json(
        json.dumps(
            {
                "kind": "SigmaScaling",
                "format_version": 1,
                "config": {"objective": "nll", "bounds": [0.001, 1000.0], "num_bins": 100},
                "fitted": {"scale_factor": 1.5},
            }
        )
    )
    np.testing.assert_allclose(scaling.scale_std(np.array([2.0, 4.0])), [3.0, 6.0])
    lower, upper = scaling.scale_interval(np.array([10.0]), np.array([8.0]), np.array([12.0]))
    np.testing.assert_allclose(lower, [7.0])
    np.testing.assert_allclose(upper, [13.0])


def test_json_round_trip_is_exact(tmp_path):
    scaling = SigmaScaling("calibration", bounds=(0.01, 50.0), num_bins=30)
    scaling.fit_moments(np.zeros(1000), np.ones(1000), np.random.default_rng(4).normal(0, 1.7, 1000))
    text = scaling.to_json()
    back = SigmaScaling.from_json(text)
    assert back.scale_factor == scaling.scale_factor
    assert (
        back.get_config()
        == scaling.get_config()
        == {
            "objective": "calibration",
            "bounds": [0.01, 50.0],
            "num_bins": 30,
        }
    )
    assert back.to_json() == text
    path = tmp_path / "sigma.json"
    scaling.save(path)
    assert SigmaScaling.load(path).scale_factor == scaling.scale_factor
    assert not SigmaScaling.from_json(SigmaScaling().to_json()).is_fitted


def test_errors(tmp_path):
    params, y = np.zeros((3, 2)), np.zeros(3)
    with pytest.raises(ValueError, match="not fitted"):
        SigmaScaling().scale_std(1.0)
    with pytest.raises(ValueError, match="objective"):
        SigmaScaling("mse")
    with pytest.raises(ValueError, match="bounds"):
        SigmaScaling(bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="point"):
        SigmaScaling().fit("point", np.zeros((3, 1)), y)
    with pytest.raises(ValueError, match="NaN"):
        SigmaScaling().fit("normal", params, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="empty"):
        SigmaScaling().fit("normal", params, y, mask=np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="scale_factor"):
        SigmaScaling.from_json(
            '{"kind": "SigmaScaling", "format_version": 1, "config": {}, "fitted": {"scale_factor": -1}}'
        )
    with pytest.raises(ValueError, match="format_version"):
        SigmaScaling.from_json('{"kind": "SigmaScaling", "format_version": 9, "config": {}, "fitted": null}')
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "IsotonicRecalibrator"}', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.json"):
        SigmaScaling.load(bad)
