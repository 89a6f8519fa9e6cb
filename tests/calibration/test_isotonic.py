from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from utils import raw_beta, raw_scale

from tfuq.calibration import (
    IsotonicRecalibrator,
    coverage,
    pit_values,
    rms_calibration_error,
)
from tfuq.errors import UserError


@pytest.fixture(scope="module")
def overconfident_normal():
    rng = np.random.default_rng(0)
    n = 200_000
    loc = rng.normal(size=n) * 100.0
    sigma = np.exp(rng.normal(size=n))
    y = loc + sigma * rng.normal(size=n)
    params = np.stack([loc, raw_scale(0.5 * sigma)], -1)  # std x 0.5
    return params, y, sigma


def test_recalibrates_overconfident_normal_on_held_out(overconfident_normal):
    params, y, sigma = overconfident_normal
    half = y.size // 2
    pit = pit_values("normal", params, y).numpy()
    assert rms_calibration_error(pit[half:]) > 0.1
    rec = IsotonicRecalibrator().fit(pit[:half])
    assert rms_calibration_error(rec.transform(pit[half:])) < 0.02
    # Recalibrated 95 % intervals cover ~95 % of held-out truths.
    lower, upper = rec.central_interval("normal", params[half:], 0.95)
    assert coverage(lower.numpy(), upper.numpy(), y[half:]) == pytest.approx(0.95, abs=0.005)
    # The effective (Gaussian-equivalent 68.27 %) std recovers the true sigma.
    eff = rec.effective_std("normal", params[half : half + 1000]).numpy()
    np.testing.assert_allclose(eff, sigma[half : half + 1000], rtol=0.03)


def test_recalibrates_overconfident_ggd_on_held_out():
    rng = np.random.default_rng(1)
    n = 100_000
    loc, alpha, beta = rng.normal(size=n), np.exp(rng.normal(size=n) * 0.3), rng.uniform(1.0, 4.0, n)
    y = stats.gennorm.rvs(beta, loc, alpha, random_state=rng)
    params = np.stack([loc, raw_scale(0.5 * alpha), raw_beta(beta)], -1)
    pit = pit_values("generalized_normal", params, y).numpy()
    half = n // 2
    before = rms_calibration_error(pit[half:])
    rec = IsotonicRecalibrator().fit(pit[:half])
    assert before > 0.05
    assert rms_calibration_error(rec.transform(pit[half:])) < 0.02


def test_calibrated_input_gives_near_identity_map():
    pit = stats.uniform.rvs(size=100_000, random_state=2)
    rec = IsotonicRecalibrator().fit(pit)
    grid = np.linspace(0, 1, 101)
    np.testing.assert_allclose(rec.transform(grid), grid, atol=0.01)


def test_hand_fixture_with_flat_part():
    rec = IsotonicRecalibrator().fit([0.1, 0.2, 0.7, 0.8])
    np.testing.assert_allclose(rec.knots_x, [0.0, 0.1, 0.2, 0.7, 0.8, 1.0])
    np.testing.assert_allclose(rec.knots_y, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert rec.transform(0.45) == pytest.approx(0.625)
    assert rec.transform(0.9) == pytest.approx(1.0)
    assert rec.inverse(0.625) == pytest.approx(0.45)
    # R is flat (= 1) on [0.8, 1]: the generalised inverse takes the left end.
    assert rec.inverse(1.0) == pytest.approx(0.8)
    assert rec.inverse(0.0) == pytest.approx(0.0)
    np.testing.assert_allclose(rec.transform([[-0.5, 1.5]]), [[0.0, 1.0]])  # clipped


def test_ties_and_inverse_roundtrip():
    rec = IsotonicRecalibrator().fit(np.full(8, 0.5))
    np.testing.assert_allclose(rec.knots_x, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(rec.knots_y, [0.0, 1.0, 1.0])
    rng = np.random.default_rng(3)
    rec = IsotonicRecalibrator().fit(rng.beta(0.5, 0.5, size=5000))
    p = np.linspace(0.001, 0.999, 200)
    np.testing.assert_allclose(rec.transform(rec.inverse(p)), p, atol=1e-12)
    assert np.all(np.diff(rec.transform(np.linspace(0, 1, 1001))) >= 0)


def test_knot_budget_bounds_the_error():
    pit = stats.beta.rvs(0.7, 1.3, size=50_000, random_state=4)
    full = IsotonicRecalibrator(max_knots=100_000).fit(pit)
    small = IsotonicRecalibrator(max_knots=50).fit(pit)
    assert small.knots_x.size <= 52
    grid = np.linspace(0, 1, 2001)
    assert np.max(np.abs(full.transform(grid) - small.transform(grid))) < 2.5 / 49


def test_mixture_quantile_path():
    params = np.stack([np.array([[0.0], [2.0]]), raw_scale([[1.0], [1.0]])], -1)  # (T=2, 1, 2)
    rec = IsotonicRecalibrator().fit(stats.uniform.rvs(size=20_000, random_state=5))
    q = rec.quantile("normal", params, 0.5, mixture=True).numpy()
    assert q[0] == pytest.approx(1.0, abs=0.02)  # the mixture median, R ~ identity


def test_json_round_trip_is_exact(tmp_path):
    rec = IsotonicRecalibrator(max_knots=64).fit(stats.beta.rvs(2, 5, size=3000, random_state=6))
    text = rec.to_json()
    payload = json.loads(text)
    assert payload["kind"] == "IsotonicRecalibrator"
    assert payload["config"] == rec.get_config() == {"max_knots": 64}
    back = IsotonicRecalibrator.from_json(text)
    np.testing.assert_array_equal(back.knots_x, rec.knots_x)
    np.testing.assert_array_equal(back.knots_y, rec.knots_y)
    assert back.to_json() == text
    path = tmp_path / "iso.json"
    rec.save(path)
    np.testing.assert_array_equal(IsotonicRecalibrator.load(path).knots_y, rec.knots_y)
    with pytest.raises(UserError, match="exists"):
        rec.save(path)
    unfitted = IsotonicRecalibrator.from_json(IsotonicRecalibrator().to_json())
    assert not unfitted.is_fitted


def test_errors(tmp_path):
    rec = IsotonicRecalibrator()
    with pytest.raises(ValueError, match="not fitted"):
        rec.transform(0.5)
    with pytest.raises(ValueError, match="empty"):
        rec.fit([])
    with pytest.raises(ValueError, match="NaN"):
        rec.fit([0.2, np.nan])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rec.fit([0.2, 1.5])
    with pytest.raises(ValueError, match="max_knots"):
        IsotonicRecalibrator(max_knots=1)
    with pytest.raises(ValueError, match="SigmaScaling"):
        IsotonicRecalibrator.from_json('{"kind": "SigmaScaling"}')
    with pytest.raises(ValueError, match="JSON"):
        IsotonicRecalibrator.from_json("not json")
    broken = json.loads(IsotonicRecalibrator().fit([0.3, 0.6]).to_json())
    broken["fitted"]["knots_x"] = [0.0, 0.5, 0.2]
    with pytest.raises(ValueError, match="increasing"):
        IsotonicRecalibrator.from_json(broken)
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.json"):
        IsotonicRecalibrator.load(bad_file)
    with pytest.raises(UserError, match="cannot read"):
        IsotonicRecalibrator.load(tmp_path / "missing.json")
