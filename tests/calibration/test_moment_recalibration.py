from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tfuq.calibration import IsotonicRecalibrator, SigmaScaling
from tfuq.calibration.moment_recalibration import MomentRecalibration, load_recalibrator
from tfuq.errors import UserError

Z95 = stats.norm.ppf(0.975)


def test_none_is_the_plain_decomposition():
    rec = MomentRecalibration.from_recalibrator(None)
    assert rec.kind == "none" and not rec.has_interval
    assert rec.aleatoric_scale == 1.0 and rec.std_factor == 1.0


def test_sigma_scaling_scales_the_aleatoric_part_only():
    scaling = SigmaScaling()
    scaling.scale_factor = 1.7
    rec = MomentRecalibration.from_recalibrator(scaling)
    assert rec.kind == "sigma_scaling" and rec.has_interval
    assert rec.aleatoric_scale == 1.7 and rec.std_factor == 1.0
    assert rec.lower_z == pytest.approx(-Z95) and rec.upper_z == pytest.approx(Z95)


def test_identity_isotonic_map_changes_nothing():
    rec = MomentRecalibration.from_recalibrator(IsotonicRecalibrator().fit(np.linspace(0, 1, 10001)))
    assert rec.std_factor == pytest.approx(1.0, abs=1e-3)
    assert rec.lower_z == pytest.approx(-Z95, abs=5e-3) and rec.upper_z == pytest.approx(Z95, abs=5e-3)


def test_isotonic_recovers_a_known_overconfidence():
    # Predicted N(0, 1), truth N(0, 2^2): R(u) = Phi(Phi^-1(u) / 2), so R^-1(p) = Phi(2 Phi^-1(p)):
    # Phi^-1(R^-1(p)) = 2 Phi^-1(p), i.e. k = 2 and z = +-2 * 1.96. By the DKW inequality the empirical
    # cdf of N = 200k PIT values is within eps = 0.004 of R with probability 0.997; an error eps in
    # probability moves 2 Phi^-1(p) by at most about 2 eps / phi(1.96) = 0.14 at p = 0.975, 3.5 % of
    # 3.92 (less at p = 0.84 for k), hence the 5 % tolerance.
    y = np.random.default_rng(0).normal(0.0, 2.0, 200_000)
    rec = MomentRecalibration.from_recalibrator(IsotonicRecalibrator().fit(stats.norm.cdf(y)))
    assert rec.kind == "isotonic" and rec.aleatoric_scale == 1.0
    assert rec.std_factor == pytest.approx(2.0, rel=0.05)
    assert rec.lower_z == pytest.approx(-2 * Z95, rel=0.05)
    assert rec.upper_z == pytest.approx(2 * Z95, rel=0.05)


def test_isotonic_matches_its_own_effective_std():
    # The exported factor is IsotonicRecalibrator.effective_std of a unit normal (the moment match).
    import tensorflow as tf

    pit = np.random.default_rng(1).beta(2.0, 2.0, 50_000)  # under-confident: PIT concentrated at 0.5
    iso = IsotonicRecalibrator().fit(pit)
    rec = MomentRecalibration.from_recalibrator(iso)
    params = tf.constant([[0.0, float(np.log(np.expm1(1.0 - 1e-5)))]])  # loc 0, scale 1
    effective = float(iso.effective_std("normal", params)[0])
    assert rec.std_factor == pytest.approx(effective, rel=1e-6)
    assert rec.std_factor < 1.0
    lower, upper = iso.central_interval("normal", params, 0.95)
    assert rec.lower_z == pytest.approx(float(lower[0]), rel=1e-6)
    assert rec.upper_z == pytest.approx(float(upper[0]), rel=1e-6)


def test_unfitted_and_foreign_objects_refused():
    with pytest.raises(ValueError, match="not fitted"):
        MomentRecalibration.from_recalibrator(SigmaScaling())
    with pytest.raises(ValueError, match="not fitted"):
        MomentRecalibration.from_recalibrator(IsotonicRecalibrator())
    with pytest.raises(ValueError, match="Expected an IsotonicRecalibrator"):
        MomentRecalibration.from_recalibrator(object())
    with pytest.raises(ValueError, match="kind"):
        MomentRecalibration(kind="platt")
    with pytest.raises(ValueError, match="lower_z < upper_z"):
        MomentRecalibration(kind="isotonic", lower_z=1.0, upper_z=-1.0)


def test_load_recalibrator_reads_either_kind(tmp_path):
    iso = IsotonicRecalibrator().fit(np.linspace(0, 1, 101) ** 2)
    iso.save(tmp_path / "iso.json")
    scaling = SigmaScaling()
    scaling.scale_factor = 0.8
    scaling.save(tmp_path / "sigma.json")
    loaded = load_recalibrator(tmp_path / "iso.json")
    assert isinstance(loaded, IsotonicRecalibrator)
    np.testing.assert_array_equal(loaded.knots_y, iso.knots_y)
    assert load_recalibrator(tmp_path / "sigma.json").scale_factor == 0.8


def test_load_recalibrator_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_recalibrator(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a JSON"):
        load_recalibrator(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"kind": "Platt"}')
    with pytest.raises(UserError, match="IsotonicRecalibrator or SigmaScaling"):
        load_recalibrator(tmp_path / "other.json")
    SigmaScaling().save(tmp_path / "unfitted.json")
    with pytest.raises(UserError, match="before fitting"):
        load_recalibrator(tmp_path / "unfitted.json")


def test_apply_is_the_hand_computed_map_on_arrays():
    """Oracle: s = 2 scales the aleatoric variance by 4; k = 0.8 every std; bounds from the unscaled total."""
    mean, epi, ale = np.array([1.0, -2.0]), np.array([0.09, 0.0]), np.array([0.04, 0.25])
    rec = MomentRecalibration(kind="isotonic", std_factor=0.8, lower_z=-1.5, upper_z=2.5)
    out = rec.apply(mean, epi, ale)
    total = np.sqrt(epi + ale)
    np.testing.assert_allclose(out["total_std"], 0.8 * total)
    np.testing.assert_allclose(out["epistemic_std"], 0.8 * np.sqrt(epi))
    np.testing.assert_allclose(out["lower95"], mean - 1.5 * total)
    np.testing.assert_allclose(out["upper95"], mean + 2.5 * total)
    scaled = MomentRecalibration(kind="sigma_scaling", aleatoric_scale=2.0).apply(mean, epi, ale)
    np.testing.assert_allclose(scaled["aleatoric_std"], 2.0 * np.sqrt(ale))
    np.testing.assert_allclose(scaled["total_std"], np.sqrt(epi + 4.0 * ale))
    assert set(MomentRecalibration().apply(mean, epi, ale)) == {"epistemic_std", "aleatoric_std", "total_std"}
