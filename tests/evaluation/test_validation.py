from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from scipy import stats

from tfuq.errors import UserError
from tfuq.evaluation import validation as val
from tfuq.experiments.validate_uq_report import VALIDATION_FILES, write_validation


def _ball(shape, radius):
    index = np.indices(shape)
    centre = [(n - 1) / 2 for n in shape]
    return sum(((i - c) / radius) ** 2 for i, c in zip(index, centre)) <= 1.0


def test_noise_sweep_levels_are_seeded_and_have_the_right_std():
    image = np.full((20, 20, 20), 100.0)
    noisy = val.noise_sweep_inputs(image, [0.0, 10.0, 30.0], seed=3)
    np.testing.assert_array_equal(noisy[0], image)
    assert np.std(noisy[1] - image) == pytest.approx(10.0, rel=0.05)
    assert np.std(noisy[2] - image) == pytest.approx(30.0, rel=0.05)
    assert np.mean(noisy[2] - image) == pytest.approx(0.0, abs=1.0)
    again = val.noise_sweep_inputs(image, [0.0, 10.0, 50.0], seed=3)
    np.testing.assert_array_equal(again[1], noisy[1])  # a level does not depend on the others
    assert not np.array_equal(
        val.noise_sweep_inputs(image, [10.0], seed=4)[0], val.noise_sweep_inputs(image, [10.0], seed=3)[0]
    )
    mask = np.zeros(image.shape, bool)
    mask[5:10] = True
    inside = val.noise_sweep_inputs(image.astype(np.float32), [5.0], seed=0, mask=mask)[0]
    assert inside.dtype == np.float32
    assert np.all(inside[~mask] == 100.0) and np.std(inside[mask]) > 4.0
    channels = val.noise_sweep_inputs(np.zeros((20, 20, 20, 2)), [5.0], seed=0, mask=mask)[0]
    assert np.all(channels[~mask] == 0.0) and np.all(channels[mask] != 0.0)
    with pytest.raises(ValueError, match="mask"):
        val.noise_sweep_inputs(image, [5.0], seed=0, mask=mask[:-1])
    with pytest.raises(ValueError, match="noise_stds"):
        val.noise_sweep_inputs(image, [-1.0], seed=0)


def test_nested_subsets():
    items = [f"s{i}" for i in range(10)]
    subsets = val.nested_subsets(items, [2, 5, 10], seed=0)
    assert [len(s) for s in subsets] == [2, 5, 10]
    assert subsets[1][:2] == subsets[0] and subsets[2][:5] == subsets[1]
    assert sorted(subsets[2]) == sorted(items)
    assert val.nested_subsets(items, [2, 5], seed=0) == subsets[:2]
    assert val.nested_subsets(items, [5], seed=1) != val.nested_subsets(items, [5], seed=0)
    for bad in ([5, 5], [0, 2], [3, 11], []):
        with pytest.raises(ValueError, match="sizes"):
            val.nested_subsets(items, bad, seed=0)


def test_aleatoric_vs_noise_against_scipy():
    rng = np.random.default_rng(1)
    true = rng.uniform(5.0, 50.0, size=(8, 8, 8))
    est = 2.0 * true
    result = val.aleatoric_vs_noise(est, true)
    assert result["ratio"] == pytest.approx(2.0) and result["median_ratio"] == pytest.approx(2.0)
    assert result["spearman"] == pytest.approx(1.0)
    noisy = true * rng.lognormal(0.0, 0.5, size=true.shape)
    mask = true > 20.0
    result = val.aleatoric_vs_noise(noisy, true, mask)
    assert result["spearman"] == pytest.approx(stats.spearmanr(noisy[mask], true[mask]).statistic)
    assert result["ratio"] == pytest.approx(noisy[mask].mean() / true[mask].mean())


def _summary(**changes):
    args = {
        "noise_levels": [0.0, 10.0, 20.0],
        "noise_aleatoric": [1.0, 2.0, 3.0],
        "sizes": [2, 4, 8],
        "size_epistemic": [3.0, 2.0, 1.0],
        "anomaly_trials": [
            {"inside": 3.0, "outside": 1.0, "ratio": 3.0, "auroc": 0.95},
            {"inside": 2.0, "outside": 1.0, "ratio": 2.0, "auroc": 0.85},
        ],
        "aleatoric_noise": {"ratio": 1.1, "median_ratio": 1.0, "spearman": 0.7},
    }
    args.update(changes)
    return val.validation_summary(**args)


def test_validation_summary_keys_and_failures():
    summary = _summary()
    for key in val.VALIDATION_KEYS:
        assert key in summary
    assert summary["passed"] and summary["failures"] == []
    assert summary["anomaly_auroc"] == pytest.approx(0.9) and summary["anomaly_ratio"] == pytest.approx(2.5)
    assert summary["noise_sweep"]["mean_aleatoric_std"] == [1.0, 2.0, 3.0]
    failing = _summary(
        noise_aleatoric=[1.0, 3.0, 2.0],
        size_epistemic=[1.0, 2.0, 3.0],
        anomaly_trials=[{"inside": 1.0, "outside": 1.0, "ratio": 1.0, "auroc": 0.5}],
        aleatoric_noise={"ratio": 1.0, "spearman": -0.1},
    )
    assert not failing["passed"] and len(failing["failures"]) == 5
    no_phantom = _summary(aleatoric_noise=None, anomaly_trials=[])
    assert no_phantom["passed"] and math.isnan(no_phantom["aleatoric_vs_noise_spearman"])
    assert math.isnan(no_phantom["anomaly_auroc"])
    with pytest.raises(ValueError, match="one value per level"):
        _summary(sizes=[1, 2])


def test_only_required_checks_fail_the_validation():
    falling_size = {"size_epistemic": [1.0, 2.0, 3.0]}
    assert not _summary(**falling_size)["passed"]
    summary = _summary(**falling_size, required=("noise", "anomaly", "phantom_noise"))
    assert summary["passed"] and summary["failures"] == []
    assert summary["failures_reported"] == [
        "size sweep: mean epistemic std does not fall as the training set grows"
    ]
    assert summary["required_checks"] == ["noise", "anomaly", "phantom_noise"]
    both = _summary(**falling_size, noise_aleatoric=[3.0, 2.0, 1.0], required=("noise",))
    assert not both["passed"] and len(both["failures"]) == 1 and len(both["failures_reported"]) == 1
    assert _summary(**falling_size, required=())["passed"]
    with pytest.raises(ValueError, match="required checks"):
        _summary(required=("sizes",))


def test_bootstrap_mean_interval_against_exact_and_scipy():
    # Two values: the resampled mean is a, (a+b)/2 or b with probabilities 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % quantiles are a and b exactly; a 40 % interval is the middle value alone.
    assert val.bootstrap_mean_interval([1.0, 3.0]) == (1.0, 3.0)
    assert val.bootstrap_mean_interval([1.0, 3.0], level=0.4) == (2.0, 2.0)
    assert val.bootstrap_mean_interval([5.0, 5.0, 5.0]) == (5.0, 5.0)
    values = np.random.default_rng(3).normal(100.0, 20.0, size=12)
    low, high = val.bootstrap_mean_interval(values, resamples=20_000, seed=4)
    oracle = stats.bootstrap(
        (values,), np.mean, confidence_level=0.95, method="percentile", n_resamples=20_000,
        random_state=np.random.default_rng(5),
    ).confidence_interval  # fmt: skip
    assert low == pytest.approx(oracle.low, abs=1.0) and high == pytest.approx(oracle.high, abs=1.0)
    assert low < values.mean() < high
    assert val.bootstrap_mean_interval(values, seed=4) == val.bootstrap_mean_interval(values, seed=4)
    assert val.bootstrap_mean_interval([2.0]) is None and val.bootstrap_mean_interval([]) is None
    for bad in ({"level": 1.0}, {"level": 0.0}, {"resamples": 0}):
        with pytest.raises(ValueError, match="level"):
            val.bootstrap_mean_interval(values, **bad)
    with pytest.raises(ValueError, match="finite"):
        val.bootstrap_mean_interval([1.0, float("nan")])


def test_validation_summary_size_intervals_and_separation():
    assert _summary()["size_sweep_separated"] is None and "ci95" not in _summary()["size_sweep"]
    apart = _summary(size_intervals=[(2.5, 3.5), None, (0.5, 1.5)], size_intervals_over="repeats")
    assert apart["size_sweep_separated"] is True
    assert apart["size_sweep"]["ci95"] == [[2.5, 3.5], None, [0.5, 1.5]]
    assert apart["size_sweep"]["ci95_over"] == "repeats"
    # A fall inside the spread passes the check (it is on the means) but is not separated.
    overlapping = _summary(size_intervals=[(1.5, 4.0), (1.0, 3.0), (0.5, 2.0)])
    assert overlapping["passed"] and overlapping["size_sweep_separated"] is False
    assert _summary(size_intervals=[None, (1.0, 3.0), (0.5, 1.5)])["size_sweep_separated"] is None
    with pytest.raises(ValueError, match="one interval per size"):
        _summary(size_intervals=[(1.0, 2.0)])


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_write_validation(tmp_path):
    rng = np.random.default_rng(2)
    true = rng.uniform(5.0, 50.0, 3000)
    summary = _summary(noise_aleatoric_image=[0.5, 1.0, 1.5])
    paths = write_validation(tmp_path, summary, aleatoric_sample=(true * 1.1, true), units="HU")
    assert set(paths) == set(VALIDATION_FILES)
    stored = json.loads(paths["json"].read_text())
    for key in val.VALIDATION_KEYS:
        assert key in stored
    assert stored["passed"] is True
    assert _png_size(paths["sweeps"]) == (1000, 400)
    assert _png_size(paths["anomaly"]) == (500, 450)
    assert _png_size(paths["noise"]) == (550, 450)
    with pytest.raises(UserError, match="already exists"):
        write_validation(tmp_path, summary)
    only = write_validation(tmp_path / "b", _summary(anomaly_trials=[], aleatoric_noise=None))
    assert set(only) == {"json", "sweeps"}
    assert json.loads(only["json"].read_text())["anomaly_auroc"] is None
    # Repeats: every size-sweep model's record is stored and drawn beside the mean.
    repeated = _summary(size_intervals=[(2.5, 3.5), None, (0.5, 1.5)], size_intervals_over="repeats")
    repeated["size_sweep"]["training_mean_epistemic_std"] = [2.9, 1.9, 0.9]
    sizes = repeated["size_sweep"]["sizes"]
    repeated["size_sweep"]["models"] = [
        {"repeat": r, "size": n, "mean_epistemic_std": {"s1": 1.0 / n + r, "s2": 2.0}, "model_dir": None}
        for r in (1, 2)
        for n in sizes
    ]
    stored = json.loads(write_validation(tmp_path / "c", repeated)["json"].read_text())
    assert stored["size_sweep"] == repeated["size_sweep"]  # models, intervals, in-sample values
    assert stored["size_sweep_separated"] is True
    assert _png_size(tmp_path / "c" / VALIDATION_FILES["sweeps"]) == (1000, 400)
