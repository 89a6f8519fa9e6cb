from __future__ import annotations

import numpy as np
import pytest

from tfuq.inference import (
    ALEATORIC_VAR,
    BETWEEN_MEMBER_VAR,
    DECOMPOSITION_KEYS,
    ENSEMBLE_KEYS,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    WITHIN_MEMBER_VAR,
    decompose,
    ensemble_decompose,
)


def _params(shape, seed=0):
    rng = np.random.default_rng(seed)
    params = rng.normal(size=(*shape, 2))
    params[..., 0] = 5.0 * params[..., 0]
    return params


def test_members_without_mc_samples_equal_plain_decomposition():
    params = _params((5, 3, 4))
    out = ensemble_decompose("normal", params)
    reference = decompose("normal", params)
    assert set(out) == set(ENSEMBLE_KEYS)
    for key in DECOMPOSITION_KEYS:
        np.testing.assert_allclose(out[key], reference[key], rtol=1e-12)
    np.testing.assert_allclose(out[BETWEEN_MEMBER_VAR], reference[EPISTEMIC_VAR], rtol=1e-12)
    np.testing.assert_array_equal(out[WITHIN_MEMBER_VAR], 0.0)


def test_members_times_mc_samples_equal_pooled_decomposition():
    params = _params((4, 6, 3, 2), seed=1)  # K=4, T=6
    out = ensemble_decompose("laplace", params, mc_samples=True)
    pooled = decompose("laplace", params.reshape(24, 3, 2, 2))
    for key in DECOMPOSITION_KEYS:
        np.testing.assert_allclose(out[key], pooled[key], rtol=1e-10)
    loc = params[..., 0]
    np.testing.assert_allclose(out[BETWEEN_MEMBER_VAR], loc.mean(axis=1).var(axis=0), rtol=1e-10)
    np.testing.assert_allclose(out[WITHIN_MEMBER_VAR], loc.var(axis=1).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(
        out[EPISTEMIC_VAR], out[BETWEEN_MEMBER_VAR] + out[WITHIN_MEMBER_VAR], rtol=1e-12
    )


def test_members_with_different_sample_counts_weigh_equally():
    members = [_params((t, 3), seed=t) for t in (2, 5, 9)]
    out = ensemble_decompose("normal", members, mc_samples=True)
    locs = [m[..., 0] for m in members]
    variances = [(np.logaddexp(0.0, m[..., 1]) + 1e-5) ** 2 for m in members]
    member_means = np.stack([loc.mean(axis=0) for loc in locs])
    np.testing.assert_allclose(out[MEAN], member_means.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(out[BETWEEN_MEMBER_VAR], member_means.var(axis=0), rtol=1e-10)
    within = np.mean([loc.var(axis=0) for loc in locs], axis=0)
    np.testing.assert_allclose(out[WITHIN_MEMBER_VAR], within, rtol=1e-10)
    aleatoric = np.mean([v.mean(axis=0) for v in variances], axis=0)
    np.testing.assert_allclose(out[ALEATORIC_VAR], aleatoric, rtol=1e-8)
    np.testing.assert_allclose(out[TOTAL_VAR], member_means.var(axis=0) + within + aleatoric, rtol=1e-8)


def test_list_of_single_predictions():
    members = [_params((3,), seed=k) for k in range(4)]
    out = ensemble_decompose("normal", members)
    reference = decompose("normal", np.stack(members))
    np.testing.assert_allclose(out[TOTAL_VAR], reference[TOTAL_VAR], rtol=1e-12)


@pytest.mark.parametrize(
    ("members", "mc_samples", "match"),
    [
        ([], False, "no member"),
        (np.zeros((0, 3, 2)), False, "no member"),
        (np.zeros((3, 2)), True, "too few axes"),
        ([np.zeros((2, 3, 2)), np.zeros((2, 4, 2))], True, "same shape"),
        (np.zeros((3, 4, 3)), False, "channels"),
    ],
)
def test_errors(members, mc_samples, match):
    with pytest.raises(ValueError, match=match):
        ensemble_decompose("normal", members, mc_samples=mc_samples)
