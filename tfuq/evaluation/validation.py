"""The papers' uncertainty checks as pure functions: sweeps, synthetic anomalies, noise recovery.

These are the maths behind ``tfuq validate-uq`` (Reinhold et al. 2020,
section 3): the job trains/infers, these functions build the inputs and
score the outputs.

* Input-noise sweep: Gaussian noise of rising std added to the inputs; the
  mean aleatoric std must rise (Reinhold Fig. 1 right).
* Training-set-size sweep: nested training subsets of rising size; the mean
  epistemic std on held-out subjects must fall (Reinhold Fig. 1 left).
* Synthetic anomaly: an all-zero cube placed inside the body; epistemic std
  inside the cube against outside (ratio of means) and the AUROC of the
  epistemic std for cube voxels (Reinhold section 3.3, Fig. 3); the cube
  functions live in :mod:`tfuq.evaluation.anomaly` and are re-exported here.
* Phantom: estimated aleatoric std against the phantom's true noise std
  (ratio of means and Spearman correlation inside the body).

Reference:
    Reinhold, Carass, Prince et al., "Validating uncertainty in medical image
    translation", ISBI 2020, arXiv:2002.04639.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfuq.evaluation.anomaly import anomaly_changes, anomaly_scores, insert_anomaly, random_cube_center
from tfuq.evaluation.checks import as_map, resolve_mask
from tfuq.evaluation.uq_metrics import is_monotonic, spearman

__all__ = [
    "CHECKS",
    "VALIDATION_KEYS",
    "aleatoric_vs_noise",
    "anomaly_changes",
    "anomaly_scores",
    "bootstrap_mean_interval",
    "insert_anomaly",
    "nested_subsets",
    "noise_sweep_inputs",
    "random_cube_center",
    "validation_summary",
]

#: The checks of validate-uq, in the order ``[EVALUATION] required_checks`` names them.
CHECKS = ("noise", "size", "anomaly", "phantom_noise")

#: Keys validate_uq.json always holds.
VALIDATION_KEYS = (
    "noise_sweep_monotonic",
    "size_sweep_monotonic",
    "anomaly_auroc",
    "anomaly_ratio",
    "aleatoric_vs_noise_spearman",
)


def noise_sweep_inputs(
    image: Any, noise_stds: Sequence[float], *, seed: int, mask: Any | None = None
) -> list[np.ndarray]:
    """Copies of an input with zero-mean Gaussian noise of each std added.

    Args:
        image: Input volume (any shape, e.g. ``(X, Y, Z)`` or ``(X, Y, Z, C)``).
        noise_stds: Noise std per level, in the input's units, each >= 0
            (Reinhold: 10, 20, 30, 40, 50).
        seed: Seed; level ``i`` draws from ``SeedSequence([seed, i])``, so a
            level's noise does not depend on the other levels.
        mask: Optional boolean array of the image's shape (or its spatial
            shape for a ``(X, Y, Z, C)`` image): add noise only there.

    Returns:
        One float array per level, the image's shape (float64 unless the
        image is float32).

    Raises:
        ValueError: a negative or non-finite std, no level, non-finite image.

    Example:
        >>> noisy = noise_sweep_inputs(t1, [0.0, 10.0, 20.0], seed=0)
    """
    base = as_map(image, "image")
    if np.asarray(image).dtype == np.float32:
        base = base.astype(np.float32)
    stds = [float(s) for s in noise_stds]
    if not stds or not all(np.isfinite(s) and s >= 0 for s in stds):
        raise ValueError(f"noise_stds must be finite values >= 0. Received: {list(noise_stds)!r}")
    spatial = base.shape[:3] if base.ndim == 4 and np.shape(mask) == base.shape[:3] else base.shape
    selector = resolve_mask(mask, spatial, "mask")
    if selector.ndim < base.ndim:
        selector = selector[..., np.newaxis]
    out = []
    for level, std in enumerate(stds):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), level]))
        noise = rng.normal(0.0, std, size=base.shape) if std > 0 else np.zeros(base.shape)
        out.append((base + np.where(selector, noise, 0.0)).astype(base.dtype))
    return out


def nested_subsets(items: Sequence[Any], sizes: Sequence[int], *, seed: int) -> list[list[Any]]:
    """Nested training subsets of rising size from one seeded permutation.

    Args:
        items: Training subjects (ids or any objects).
        sizes: Subset sizes, strictly increasing, each in [1, len(items)]
            (Reinhold: 3, 5, 15, 45).
        seed: Seed of the permutation.

    Returns:
        One list per size; each is the first ``size`` items of the same
        permutation, so every subset contains the smaller ones.

    Raises:
        ValueError: sizes not strictly increasing or out of range.

    Example:
        >>> nested_subsets(["a", "b", "c", "d"], [1, 3], seed=0)  # e.g. [['c'], ['c', 'a', 'd']]
    """
    pool = list(items)
    counts = [int(s) for s in sizes]
    if not counts or counts[0] < 1 or counts[-1] > len(pool) or bool(np.any(np.diff(counts) <= 0)):
        raise ValueError(
            f"sizes must be strictly increasing values in [1, {len(pool)}]. Received: sizes={list(sizes)!r}"
        )
    order = np.random.default_rng(int(seed)).permutation(len(pool))
    return [[pool[i] for i in order[:n]] for n in counts]


def bootstrap_mean_interval(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of a few values.

    Reinhold et al. shade bootstrapped 95 % intervals around each point of
    their sweeps (Fig. 1); here the values are one per scored model
    (repeats) or one per held-out subject.

    Args:
        values: Shape (n,), finite.
        level: Coverage of the interval, in (0, 1).
        resamples: Bootstrap resamples (with replacement, n values each).
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``, the ``(1 - level) / 2`` and ``(1 + level) / 2``
        quantiles of the resampled means; None for fewer than 2 values.

    Raises:
        ValueError: a non-finite value, ``level`` outside (0, 1) or
            ``resamples`` < 1.

    Reference:
        Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(
            f"Expected 0 < level < 1 and resamples >= 1. Received: level={level!r}, resamples={resamples!r}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"Expected finite values. Received: {x.tolist()!r}")
    if x.size < 2:
        return None
    draws = np.random.default_rng(int(seed)).integers(0, x.size, size=(int(resamples), x.size))
    low, high = np.quantile(x[draws].mean(axis=1), [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def aleatoric_vs_noise(aleatoric_std: Any, noise_std: Any, mask: Any | None = None) -> dict[str, float]:
    """Estimated aleatoric std against the true noise std (phantom), inside the mask.

    Args:
        aleatoric_std: Predicted aleatoric std map, target units.
        noise_std: True noise std map of the target (the phantom's), same shape.
        mask: Optional body mask.

    Returns:
        dict: ``ratio`` (mean estimated / mean true), ``median_ratio`` (median
        of voxel ratios where the true std > 0), ``spearman``.

    Raises:
        ValueError: shapes differ, negative std.
    """
    estimate = as_map(aleatoric_std, "aleatoric_std")
    truth = as_map(noise_std, "noise_std")
    if estimate.shape != truth.shape:
        raise ValueError(f"Expected maps of one shape. Received: {estimate.shape} and {truth.shape}")
    if estimate.min() < 0 or truth.min() < 0:
        raise ValueError("aleatoric_std and noise_std must be >= 0. Received: negative values")
    selector = resolve_mask(mask, truth.shape)
    est, true = estimate[selector], truth[selector]
    positive = true > 0
    mean_true = float(np.mean(true))
    return {
        "ratio": float(np.mean(est)) / mean_true if mean_true > 0 else float("nan"),
        "median_ratio": float(np.median(est[positive] / true[positive])) if positive.any() else float("nan"),
        "spearman": spearman(est, true),
    }


def _mean_of(trials: Sequence[Mapping[str, float]], key: str) -> float:
    values = [float(t[key]) for t in trials]
    return float(np.mean(values)) if values else float("nan")


def validation_summary(
    *,
    noise_levels: Sequence[float],
    noise_aleatoric: Sequence[float],
    sizes: Sequence[int],
    size_epistemic: Sequence[float],
    anomaly_trials: Sequence[Mapping[str, float]],
    aleatoric_noise: Mapping[str, float] | None = None,
    noise_aleatoric_image: Sequence[float] | None = None,
    size_intervals: Sequence[tuple[float, float] | None] | None = None,
    size_intervals_over: str | None = None,
    min_auroc: float = 0.5,
    min_ratio: float = 1.0,
    min_spearman: float = 0.0,
    required: Sequence[str] = CHECKS,
) -> dict[str, Any]:
    """Assemble the content of validate_uq.json and decide pass or fail.

    Args:
        noise_levels: Input noise std per level, rising.
        noise_aleatoric: Mean aleatoric std (inside the mask) per level.
        sizes: Training-set sizes, rising.
        size_epistemic: Mean epistemic std on held-out subjects per size.
        anomaly_trials: One :func:`anomaly_scores` dict per anomalous input.
        aleatoric_noise: :func:`aleatoric_vs_noise` on the phantom, or None.
        noise_aleatoric_image: Optional mean aleatoric std over the whole
            image per level (plotted and stored, not checked).
        size_intervals: Optional 95 % interval of each size's value
            (:func:`bootstrap_mean_interval`; None where there is none).
        size_intervals_over: What the intervals resample, e.g. "repeats".
        min_auroc: The anomaly AUROC must exceed this. Default 0.5.
        min_ratio: The anomaly ratio must exceed this. Default 1.
        min_spearman: The aleatoric-noise Spearman must exceed this. Default 0.
        required: The checks (of :data:`CHECKS`) whose failure fails the
            validation; the failures of the others are listed in
            ``failures_reported`` and do not change ``passed``.

    Returns:
        JSON-ready dict with :data:`VALIDATION_KEYS`, the raw sweeps
        (``noise_sweep``, ``size_sweep``; with ``size_intervals`` the sweep's
        ``ci95`` and ``ci95_over``), ``anomaly`` trials,
        ``aleatoric_vs_noise_ratio``, ``size_sweep_separated`` (the smallest
        size's interval lies wholly above the largest's, i.e. the fall is
        larger than the spread the intervals measure; None without both
        intervals; reported, not checked), ``failures`` (expected
        directions that failed, one line each) and ``passed``.

    Raises:
        ValueError: a sweep's values do not match its levels, or fewer than 2.
    """
    if len(noise_levels) != len(noise_aleatoric) or len(sizes) != len(size_epistemic):
        raise ValueError(
            "Each sweep needs one value per level. "
            f"Received: {len(noise_levels)} noise levels / {len(noise_aleatoric)} values, "
            f"{len(sizes)} sizes / {len(size_epistemic)} values"
        )
    intervals = None if size_intervals is None else list(size_intervals)
    if intervals is not None and len(intervals) != len(sizes):
        raise ValueError(f"Expected one interval per size. Received: {len(intervals)} for {len(sizes)} sizes")
    separated = None
    if intervals and intervals[0] is not None and intervals[-1] is not None:
        separated = bool(intervals[-1][1] < intervals[0][0])
    noise_ok = is_monotonic(noise_aleatoric, "increasing")
    size_ok = is_monotonic(size_epistemic, "decreasing")
    auroc_value = _mean_of(anomaly_trials, "auroc")
    ratio_value = _mean_of(anomaly_trials, "ratio")
    noise = dict(aleatoric_noise or {})
    rho = float(noise.get("spearman", float("nan")))
    unknown = sorted(set(required) - set(CHECKS))
    if unknown:
        raise ValueError(f"required checks must be among {CHECKS}. Received: {unknown}")
    found: list[tuple[str, str]] = []
    if not noise_ok:
        found.append(("noise", "noise sweep: mean aleatoric std does not rise with the input noise"))
    if not size_ok:
        found.append(("size", "size sweep: mean epistemic std does not fall as the training set grows"))
    if anomaly_trials and not auroc_value > min_auroc:
        found.append(("anomaly", f"anomaly: AUROC {auroc_value:.3f} is not above {min_auroc}"))
    if anomaly_trials and not ratio_value > min_ratio:
        found.append(
            ("anomaly", f"anomaly: epistemic inside/outside ratio {ratio_value:.3f} is not above {min_ratio}")
        )
    if aleatoric_noise is not None and not rho > min_spearman:
        found.append(
            (
                "phantom_noise",
                f"phantom: Spearman(aleatoric std, true noise std) {rho:.3f} is not above {min_spearman}",
            )
        )
    failures = [text for check, text in found if check in required]
    reported = [text for check, text in found if check not in required]
    sweep = {
        "levels": [float(v) for v in noise_levels],
        "mean_aleatoric_std": [float(v) for v in noise_aleatoric],
    }
    if noise_aleatoric_image is not None:
        sweep["mean_aleatoric_std_image"] = [float(v) for v in noise_aleatoric_image]
    size_sweep: dict[str, Any] = {
        "sizes": [int(s) for s in sizes],
        "mean_epistemic_std": [float(v) for v in size_epistemic],
    }
    if intervals is not None:
        size_sweep["ci95"] = [None if c is None else [float(c[0]), float(c[1])] for c in intervals]
        size_sweep["ci95_over"] = size_intervals_over
    return {
        "noise_sweep_monotonic": noise_ok,
        "size_sweep_monotonic": size_ok,
        "anomaly_auroc": auroc_value,
        "anomaly_ratio": ratio_value,
        "aleatoric_vs_noise_spearman": rho,
        "aleatoric_vs_noise_ratio": float(noise.get("ratio", float("nan"))),
        "size_sweep_separated": separated,
        "noise_sweep": sweep,
        "size_sweep": size_sweep,
        "anomaly": {"trials": [dict(t) for t in anomaly_trials]},
        "thresholds": {"min_auroc": min_auroc, "min_ratio": min_ratio, "min_spearman": min_spearman},
        "required_checks": [c for c in CHECKS if c in required],
        "failures": failures,
        "failures_reported": reported,
        "passed": not failures,
    }
