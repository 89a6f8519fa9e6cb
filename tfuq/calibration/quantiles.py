"""Predictive quantiles and central intervals, for one distribution or an MC mixture.

Mathematical details:
    One distribution per voxel: ``q(p) = F^-1(p)`` through the family's
    ``tfd`` quantile (a ``"point"`` head returns its loc). For a mixture of T
    members, ``F(x) = (1/T) sum_t F_t(x)`` has no closed-form inverse; since
    ``min_t F_t^-1(p) <= q(p) <= max_t F_t^-1(p)`` brackets the root, the
    quantile is found by ``num_iter`` bisection steps inside that bracket
    (the bracket shrinks by ``2^-num_iter``). The central interval of coverage
    ``c`` is ``[q((1-c)/2), q((1+c)/2)]``.

Reference:
    Gneiting & Raftery, "Strictly proper scoring rules, prediction, and
    estimation", JASA 102(477), 2007, doi:10.1198/016214506000001437.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfuq.calibration.checks import as_tensor, check_probability
from tfuq.distributions import family as fam

__all__ = ["CENTRAL_COVERAGES", "central_interval", "central_intervals", "predictive_quantile"]

#: Coverages of the central intervals reported by default (50, 90, 95 %).
CENTRAL_COVERAGES = (0.5, 0.9, 0.95)


def _member_quantile(family: str, params: tf.Tensor, p: tf.Tensor) -> tf.Tensor:
    if family == "point":
        return fam.mean(family, params) + tf.zeros_like(p)
    return fam.make_distribution(family, params).quantile(p)


def predictive_quantile(
    family: str, params: Any, p: Any, *, mixture: bool = False, num_iter: int = 60
) -> tf.Tensor:
    """Predictive quantile ``F^-1(p)``, voxel by voxel.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        params: Unconstrained head channels, ``(*s, P)`` or, with
            ``mixture=True``, ``(T, *s, P)``.
        p: Probabilities in [0, 1], a scalar or an array broadcastable to ``s``
            (0 and 1 give -inf and +inf).
        mixture: Treat axis 0 of ``params`` as T equally weighted MC samples.
        num_iter: Bisection steps for a mixture (default 60, enough for
            float64 round-off); ignored otherwise.

    Returns:
        Tensor of shape ``broadcast(s, p.shape)`` in the dtype of ``params``.

    Raises:
        ValueError: bad channel count, ``num_iter < 1``.

    Example:
        >>> round(float(predictive_quantile("normal", [0.0, 0.5413], 0.975)), 2)  # scale ~1
        1.96
    """
    params = tf.convert_to_tensor(params)
    if not params.dtype.is_floating:
        params = tf.cast(params, tf.float32)
    size = fam.params_size(family)
    if params.shape[-1] is not None and params.shape[-1] != size:
        raise ValueError(
            f"A {family!r} head has {size} parameter channels. "
            f"Received: params with shape {tuple(params.shape)}"
        )
    p = as_tensor(p, params.dtype)
    if not mixture:
        return _member_quantile(family, params, p)
    if num_iter < 1:
        raise ValueError(f"num_iter must be >= 1. Received: num_iter={num_iter}")
    members = _member_quantile(family, params, p[tf.newaxis])
    lo = tf.reduce_min(members, axis=0)
    hi = tf.reduce_max(members, axis=0)
    dist = fam.make_distribution(family, params)
    inner = tf.logical_and(p > 0, p < 1)
    # Keep the bracket finite where p is 0 or 1; those voxels are set at the end.
    lo = tf.where(inner, lo, tf.zeros_like(lo))
    hi = tf.where(inner, hi, tf.zeros_like(hi))
    for _ in range(int(num_iter)):
        mid = 0.5 * (lo + hi)
        below = tf.reduce_mean(dist.cdf(mid[tf.newaxis]), axis=0) < p
        lo = tf.where(below, mid, lo)
        hi = tf.where(below, hi, mid)
    q = 0.5 * (lo + hi)
    inf = tf.constant(float("inf"), q.dtype)
    q = tf.where(p <= 0, -inf, q)
    return tf.where(p >= 1, inf, q)


def central_interval(
    family: str, params: Any, coverage: float, *, mixture: bool = False
) -> tuple[tf.Tensor, tf.Tensor]:
    """Central predictive interval ``[q((1-c)/2), q((1+c)/2)]``.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        params: ``(*s, P)`` or, with ``mixture=True``, ``(T, *s, P)``.
        coverage: Nominal coverage c in (0, 1), e.g. 0.95.
        mixture: Treat axis 0 of ``params`` as T MC samples.

    Returns:
        ``(lower, upper)``, each of shape ``s``.

    Raises:
        ValueError: coverage outside (0, 1).
    """
    c = check_probability(coverage, "coverage")
    lower = predictive_quantile(family, params, 0.5 * (1.0 - c), mixture=mixture)
    upper = predictive_quantile(family, params, 0.5 * (1.0 + c), mixture=mixture)
    return lower, upper


def central_intervals(
    family: str,
    params: Any,
    coverages: tuple[float, ...] = CENTRAL_COVERAGES,
    *,
    mixture: bool = False,
) -> dict[float, tuple[tf.Tensor, tf.Tensor]]:
    """Central intervals for several coverages (default 50 %, 90 %, 95 %).

    Returns:
        dict ``coverage -> (lower, upper)``.
    """
    return {c: central_interval(family, params, c, mixture=mixture) for c in coverages}
