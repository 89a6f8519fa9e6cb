"""The reliability reference against NumPy: slice means, quantile threshold, scores and the flag rule."""

from __future__ import annotations

import numpy as np
import pytest

from tfuq.calibration.qc_reference import (
    QCReference,
    fit_qc_reference,
    load_qc_reference,
    qc_score,
    slice_statistics,
)
from tfuq.errors import UserError

RNG = np.random.default_rng(11)


def test_slice_statistics_are_masked_slice_means_and_drop_thin_slices() -> None:
    values = RNG.random((6, 5, 4))
    mask = np.zeros(values.shape, bool)
    mask[:, :, 0] = True  # 30 voxels
    mask[:3, :, 1] = True  # 15 voxels
    mask[0, 0, 2] = True  # 1 voxel: under 10 % of 30, dropped
    out = slice_statistics(values, mask)
    np.testing.assert_allclose(out, [values[:, :, 0].mean(), values[:3, :, 1].mean()])
    np.testing.assert_allclose(slice_statistics(values, axis=0), values.mean(axis=(1, 2)))
    with pytest.raises(UserError, match="selects no voxel"):
        slice_statistics(values, np.zeros(values.shape, bool))
    with pytest.raises(ValueError, match="min_fraction"):
        slice_statistics(values, mask, min_fraction=0.0)


def test_reference_threshold_scores_and_flag_rule_equal_numpy() -> None:
    a, b = RNG.normal(1.0, 0.1, 150), RNG.normal(1.05, 0.1, 120)
    ref = fit_qc_reference({"a": a, "b": b}, quantile=0.95, minimum=0.1, margin=2.0)
    pooled = np.concatenate([a, b])
    assert ref.slice_threshold == pytest.approx(np.quantile(pooled, 0.95))
    # each reference subject scored as a new one would be: against the other's threshold
    assert ref.subjects == {"a": pytest.approx(np.mean(a > np.quantile(b, 0.95))),
                            "b": pytest.approx(np.mean(b > np.quantile(a, 0.95)))}  # fmt: skip
    # the upper median of two scores is the larger one
    assert ref.flag_score == pytest.approx(max(0.1, 2.0 * max(ref.subjects.values())))
    assert "leave one subject out" in ref.how
    # a held-out subject is never flagged by its own reference; a doubled std is
    for values in (a, b):
        assert not qc_score(values, ref)["flagged"]
    shifted = qc_score(2.0 * a, ref)
    assert shifted["flagged"] and shifted["score"] == pytest.approx(np.mean(2 * a > ref.slice_threshold))
    assert shifted["threshold"] == ref.flag_score and shifted["num_slices"] == a.size


def test_leave_one_out_scores_do_not_flag_clean_subjects_an_in_sample_fit_would() -> None:
    # Clean subjects from one population, each with its own small offset (subject-level variation, as
    # scans have). In-sample reference scores sit near 1 - quantile by construction, so a flag rule
    # set from them flags clean new subjects; leave-one-out scores see the between-subject spread.
    rng = np.random.default_rng(1)
    population = [rng.normal(rng.normal(0.0, 0.1), 0.1, 40) for _ in range(200)]
    ref = fit_qc_reference({"a": population[0], "b": population[1]})
    in_sample = max(np.mean(v > ref.slice_threshold) for v in population[:2])
    naive = max(0.1, 2.0 * in_sample)
    naive_flagged = np.mean([np.mean(v > ref.slice_threshold) > naive for v in population[2:]])
    flagged = np.mean([qc_score(v, ref)["flagged"] for v in population[2:]])
    assert naive_flagged > 0.1 and flagged == 0.0
    assert qc_score(population[5] + 1.0, ref)["flagged"]  # a shifted scan still is


def test_one_atypical_reference_subject_does_not_switch_the_flag_off() -> None:
    # BraTS, measured: of 4 held-out subjects one had 80 % of its slices above the others' 0.99
    # quantile; 2 x the largest reference score (1.6) was a flag score no scan can reach. The median
    # keeps the rule set by the typical subjects and lists the atypical one instead.
    rng = np.random.default_rng(2)
    typical = {s: rng.normal(5.0, 1.0, 130) for s in ("a", "b", "c")}
    ref_odd = rng.normal(9.0, 1.0, 130)
    ref = fit_qc_reference({**typical, "odd": ref_odd})
    scores = ref.subjects
    assert scores["odd"] > 0.5 and max(scores[s] for s in typical) < 0.1
    assert 2.0 * max(scores.values()) > 1.0  # the old rule could never have fired
    assert ref.flagged_reference_subjects == ["odd"] and "odd" in ref.how
    # the slice threshold and flag score are those of the typical subjects alone
    alone = fit_qc_reference(typical)
    assert ref.slice_threshold == alone.slice_threshold and ref.flag_score == alone.flag_score
    assert scores["odd"] == pytest.approx(np.mean(ref_odd > alone.slice_threshold))
    assert qc_score(rng.normal(9.0, 1.0, 130), ref)["flagged"]  # a shifted scan like it is flagged
    assert not any(qc_score(rng.normal(5.0, 1.0, 130), ref)["flagged"] for _ in range(20))
    assert qc_score(typical["a"], ref)["flagged_reference_subjects"] == ["odd"]


def test_round_trip_and_errors(tmp_path) -> None:
    ref = fit_qc_reference({"a": np.arange(10.0)}, in_sample=True)
    path = ref.save(tmp_path / "qc.json")
    assert load_qc_reference(path) == ref and ref.in_sample and "in-sample" in ref.how
    assert load_qc_reference(tmp_path / "none.json") is None
    path.write_text("{}")
    with pytest.raises(UserError, match="not a valid tfuq QC reference"):
        load_qc_reference(path)
    with pytest.raises(ValueError, match="quantile"):
        fit_qc_reference({"a": [1.0]}, quantile=1.0)
    with pytest.raises(ValueError, match="at least one subject"):
        fit_qc_reference({})
    assert isinstance(ref, QCReference)
