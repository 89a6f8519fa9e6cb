"""Proper scoring rules and interval checks: NLL, CRPS, interval score, coverage.

Mathematical details:
    * NLL: ``-log p(y)``; for T MC samples ``-log((1/T) sum_t p_t(y))``
      computed with ``logsumexp``.
    * CRPS, ``integral (F(x) - 1{x >= y})^2 dx``, in closed form for a normal
      ``s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]`` and a Laplace
      ``b [|z| + exp(-|z|) - 3/4]`` with ``z = (y - mu)/scale``; for a point
      forecast it is ``|y - mu|``. Otherwise (generalized normal, MC
      mixtures) the energy form ``E|X - y| - 0.5 E|X - X'|`` on draws X,
      with ``E|X - X'|`` from the sorted draws in ``O(S log S)``.
    * Interval score of a central ``(1 - alpha)`` interval [l, u]:
      ``(u - l) + (2/alpha)(l - y) 1{y < l} + (2/alpha)(y - u) 1{y > u}``.
    * Coverage: fraction of truths with ``l <= y <= u``.

Every function returns the mean over all values (a Python float) by default,
or the per-value scores with ``reduce=False``.

Reference:
    Gneiting & Raftery, "Strictly proper scoring rules, prediction, and
    estimation", JASA 102(477), 2007, doi:10.1198/016214506000001437
    (CRPS eq. 20-21, interval score eq. 43).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf
from scipy import special

from tfuq.calibration.checks import as_finite_array, check_probability
from tfuq.calibration.pit import check_prediction
from tfuq.distributions import family as fam

__all__ = [
    "coverage",
    "crps",
    "crps_laplace",
    "crps_normal",
    "crps_samples",
    "interval_score",
    "nll",
]


def _reduce(values: np.ndarray, reduce: bool) -> float | np.ndarray:
    return float(np.mean(values)) if reduce else values


def _same_shape(**arrays: np.ndarray) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"Inputs must have the same shape. Received: {shapes}")


def nll(
    family: str,
    params: Any,
    y: Any,
    *,
    mixture: bool = False,
    mask: Any | None = None,
    reduce: bool = True,
) -> float | np.ndarray:
    """Negative log-likelihood of the truth under the predictive distribution.

    Args:
        family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``.
        params: Unconstrained head channels ``(*s, P)``, or ``(T, *s, P)`` with
            ``mixture=True``.
        y: Ground truth, shape ``s``.
        mixture: Treat axis 0 of ``params`` as T MC samples.
        mask: Optional boolean array of shape ``s``: score only those voxels.
        reduce: Return the mean (default) or the per-voxel values.

    Returns:
        Mean NLL (nats) or an array (shape ``s``, or ``(n,)`` with a mask).
    """
    if fam.check_family(family) == "point":
        raise ValueError("A 'point' head has no density. Expected a probabilistic family.")
    params, y = check_prediction(family, params, y, mixture=mixture)
    dist = fam.make_distribution(family, params)
    if mixture:
        log_p = tf.reduce_logsumexp(dist.log_prob(y[tf.newaxis]), axis=0)
        log_p -= tf.math.log(tf.cast(tf.shape(params)[0], log_p.dtype))
    else:
        log_p = dist.log_prob(y)
    values = -log_p.numpy()
    if mask is not None:
        values = values[np.asarray(mask, dtype=bool)]
    return _reduce(as_finite_array(values, "nll values", flatten=False), reduce)


def crps_normal(mean: Any, std: Any, y: Any, *, reduce: bool = True) -> float | np.ndarray:
    """Closed-form CRPS of ``N(mean, std^2)`` at ``y`` (same-shape arrays, std > 0)."""
    mu = as_finite_array(mean, "mean", flatten=False)
    s = as_finite_array(std, "std", flatten=False)
    obs = as_finite_array(y, "y", flatten=False)
    _same_shape(mean=mu, std=s, y=obs)
    if s.min() <= 0:
        raise ValueError(f"std must be > 0. Received: min={s.min()!r}")
    z = (obs - mu) / s
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    values = s * (z * (2.0 * special.ndtr(z) - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    return _reduce(values, reduce)


def crps_laplace(loc: Any, scale: Any, y: Any, *, reduce: bool = True) -> float | np.ndarray:
    """Closed-form CRPS of ``Laplace(loc, scale)`` at ``y`` (same-shape arrays, scale > 0)."""
    mu = as_finite_array(loc, "loc", flatten=False)
    b = as_finite_array(scale, "scale", flatten=False)
    obs = as_finite_array(y, "y", flatten=False)
    _same_shape(loc=mu, scale=b, y=obs)
    if b.min() <= 0:
        raise ValueError(f"scale must be > 0. Received: min={b.min()!r}")
    z = np.abs(obs - mu) / b
    return _reduce(b * (z + np.exp(-z) - 0.75), reduce)


def crps_samples(samples: Any, y: Any, *, fair: bool = False, reduce: bool = True) -> float | np.ndarray:
    """Sample (energy-form) CRPS ``E|X - y| - 0.5 E|X - X'|`` from S draws.

    Args:
        samples: Draws of the predictive distribution, shape ``(S, *s)``, S >= 1
            (S >= 2 with ``fair``).
        y: Truth, shape ``s``.
        fair: Divide the pair term by ``S (S - 1)`` instead of ``S^2`` (the
            unbiased "fair" CRPS). Default False.
        reduce: Return the mean (default) or the per-value scores.

    Returns:
        float or array of shape ``s``.
    """
    x = np.sort(as_finite_array(samples, "samples", flatten=False), axis=0)
    obs = as_finite_array(y, "y", flatten=False)
    if x.ndim < 1 or x.shape[1:] != obs.shape:
        raise ValueError(f"samples must have shape (S, *y.shape) = (S, {obs.shape}). Received: {x.shape}")
    num = x.shape[0]
    if fair and num < 2:
        raise ValueError(f"The fair CRPS needs S >= 2 draws. Received: S={num}")
    first = np.mean(np.abs(x - obs), axis=0)
    weights = (2.0 * np.arange(1, num + 1) - num - 1.0).reshape((num,) + (1,) * obs.ndim)
    pair_sum = 2.0 * np.sum(weights * x, axis=0)  # sum over all ordered pairs |x_i - x_j|
    pairs = num * (num - 1) if fair else num * num
    return _reduce(first - 0.5 * pair_sum / pairs, reduce)


def crps(
    family: str,
    params: Any,
    y: Any,
    *,
    mixture: bool = False,
    num_draws: int = 1000,
    seed: int = 0,
    reduce: bool = True,
) -> float | np.ndarray:
    """CRPS of a prediction: closed form where one exists, else from draws.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        params: ``(*s, P)`` or, with ``mixture=True``, ``(T, *s, P)``.
        y: Truth, shape ``s``.
        mixture: Treat axis 0 of ``params`` as T MC samples (always uses draws).
        num_draws: Draws for the energy form (generalized normal, mixtures),
            split evenly over the T members of a mixture. Default 1000.
        seed: Stateless seed of those draws.
        reduce: Return the mean (default) or per-voxel scores.

    Returns:
        float or array of shape ``s``.
    """
    params, y_t = check_prediction(family, params, y, mixture=mixture)
    obs = y_t.numpy()
    if not mixture and family in ("normal", "laplace", "point"):
        p = fam.constrain(family, params)
        if family == "point":
            return _reduce(np.abs(obs - p["loc"].numpy()), reduce)
        closed = crps_normal if family == "normal" else crps_laplace
        return closed(p["loc"].numpy(), p["scale"].numpy(), obs, reduce=reduce)
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2. Received: num_draws={num_draws}")
    dist = fam.make_distribution(family, params)
    seed_t = tf.constant([seed, 0], tf.int32)
    if mixture:
        per_member = max(1, -(-num_draws // int(params.shape[0])))
        draws = dist.sample(per_member, seed=seed_t)  # (S, T, *s)
        draws = tf.reshape(draws, tf.concat([[-1], tf.shape(draws)[2:]], axis=0))
    else:
        draws = dist.sample(num_draws, seed=seed_t)
    return crps_samples(draws.numpy(), obs, reduce=reduce)


def interval_score(
    lower: Any, upper: Any, y: Any, alpha: float, *, reduce: bool = True
) -> float | np.ndarray:
    """Interval score of central ``(1 - alpha)`` prediction intervals (lower is better).

    Args:
        lower: Lower bounds.
        upper: Upper bounds, same shape, ``>= lower``.
        y: Truth, same shape.
        alpha: Nominal miss rate in (0, 1), e.g. 0.05 for 95 % intervals.
        reduce: Return the mean (default) or the per-value scores.

    Returns:
        float or array, in the units of y.

    Example:
        >>> interval_score([0.0], [2.0], [3.0], alpha=0.1)  # width 2 + 20 * 1
        22.0
    """
    a = check_probability(alpha, "alpha")
    lo = as_finite_array(lower, "lower", flatten=False)
    hi = as_finite_array(upper, "upper", flatten=False)
    obs = as_finite_array(y, "y", flatten=False)
    _same_shape(lower=lo, upper=hi, y=obs)
    if np.any(hi < lo):
        raise ValueError("upper must be >= lower everywhere. Received: some upper < lower")
    values = (hi - lo) + (2.0 / a) * np.maximum(lo - obs, 0.0) + (2.0 / a) * np.maximum(obs - hi, 0.0)
    return _reduce(values, reduce)


def coverage(lower: Any, upper: Any, y: Any) -> float:
    """Fraction of truths inside their interval, ``mean(lower <= y <= upper)``."""
    lo = as_finite_array(lower, "lower", flatten=False)
    hi = as_finite_array(upper, "upper", flatten=False)
    obs = as_finite_array(y, "y", flatten=False)
    _same_shape(lower=lo, upper=hi, y=obs)
    return float(np.mean((lo <= obs) & (obs <= hi)))
