"""Probability integral transform (PIT): the predictive cdf at the truth.

If the predictive distributions are calibrated, the PIT values
``p_i = F_i(y_i)`` of a calibration set are uniform on [0, 1]; every
calibration metric (:mod:`tfuq.calibration.metrics`) and recalibrator
(:mod:`tfuq.calibration.isotonic`) starts from them.

Mathematical details:
    One distribution per voxel: ``p = F(y)`` with the family's cdf
    (``tfd.Normal``, ``tfd.Laplace``, ``tfd.GeneralizedNormal``). For T MC
    samples the predictive distribution is the mixture, whose cdf is the mean
    of the member cdfs: ``p = (1/T) sum_t F_t(y)``. A ``"point"`` head gives
    0 or 1 (a step cdf).

Reference:
    Gneiting, Balabdaoui & Raftery, "Probabilistic forecasts, calibration and
    sharpness", JRSS-B 69(2), 2007, doi:10.1111/j.1467-9868.2007.00587.x.
    Kuleshov, Fenner & Ermon, "Accurate uncertainties for deep learning using
    calibrated regression", ICML 2018, arXiv:1807.00263.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfuq.calibration.checks import as_tensor
from tfuq.distributions import family as fam

__all__ = ["check_prediction", "mixture_pit_values", "pit_values", "predictive_cdf"]


def check_prediction(
    family: str, params: Any, y: Any, *, mixture: bool = False
) -> tuple[tf.Tensor, tf.Tensor]:
    """Convert ``params`` and ``y`` to tensors and check their shapes agree.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        params: Head channels ``(*s, P)``, or ``(T, *s, P)`` with ``mixture``.
        y: Values of shape ``s``.
        mixture: Whether ``params`` has a leading MC sample axis.

    Returns:
        ``(params, y)`` as tensors of the same floating dtype.

    Raises:
        ValueError: wrong channel count, no sample, or ``y`` of another shape.
    """
    params = tf.convert_to_tensor(params)
    if not params.dtype.is_floating:
        params = tf.cast(params, tf.float32)
    y = as_tensor(y, params.dtype)
    size = fam.params_size(family)
    lead = 1 if mixture else 0
    expected = params.shape[lead:-1]
    if params.shape.rank is not None and params.shape.rank < 1 + lead:
        layout = "(T, ..., P)" if mixture else "(..., P)"
        raise ValueError(f"params has too few axes. Expected {layout}. Received: {tuple(params.shape)}")
    if params.shape[-1] is not None and params.shape[-1] != size:
        raise ValueError(
            f"A {family!r} head has {size} parameter channels. "
            f"Received: params with shape {tuple(params.shape)}"
        )
    if mixture and params.shape[0] == 0:
        raise ValueError("params holds no MC sample. Expected T >= 1 along axis 0.")
    if not y.shape.is_compatible_with(expected):
        layout = "params.shape[1:-1]" if mixture else "params.shape[:-1]"
        raise ValueError(
            f"y must have the shape {layout} = {tuple(expected)}. Received: y with shape {tuple(y.shape)}"
        )
    return params, y


def predictive_cdf(family: str, params: Any, y: Any, *, mixture: bool = False) -> tf.Tensor:
    """Predictive cdf at ``y``, voxel by voxel.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        params: Unconstrained head channels, shape ``(*s, P)``, or ``(T, *s, P)``
            with ``mixture=True``.
        y: Values, shape ``s``.
        mixture: Treat axis 0 of ``params`` as T equally weighted MC samples.

    Returns:
        Tensor of shape ``s`` with values in [0, 1].

    Raises:
        ValueError: shapes do not match or the channel count is wrong.
    """
    params, y = check_prediction(family, params, y, mixture=mixture)
    dist = fam.make_distribution(family, params)
    if mixture:
        return tf.reduce_mean(dist.cdf(y[tf.newaxis]), axis=0)
    return dist.cdf(y)


def pit_values(
    family: str, params: Any, y: Any, *, mixture: bool = False, mask: Any | None = None
) -> tf.Tensor:
    """PIT values ``F(y)`` of a prediction, optionally only inside a mask.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        params: Unconstrained head channels, ``(*s, P)`` or, with
            ``mixture=True``, ``(T, *s, P)``.
        y: Ground truth, shape ``s``.
        mixture: Treat axis 0 of ``params`` as T MC samples (mixture cdf).
        mask: Optional boolean array of shape ``s``; when given, the result is
            the flat vector of PIT values where the mask is true.

    Returns:
        Tensor of shape ``s``, or ``(n,)`` with a mask.

    Raises:
        ValueError: shapes do not match.

    Example:
        >>> pit_values("normal", [[0.0, 0.5413]], [0.0]).numpy()
        array([0.5], dtype=float32)
    """
    pit = predictive_cdf(family, params, y, mixture=mixture)
    if mask is None:
        return pit
    mask_t = tf.cast(tf.convert_to_tensor(mask), tf.bool)
    if not mask_t.shape.is_compatible_with(pit.shape):
        raise ValueError(
            f"mask must have the shape of y, {tuple(pit.shape)}. Received: mask with shape "
            f"{tuple(mask_t.shape)}"
        )
    return tf.boolean_mask(pit, mask_t)


def mixture_pit_values(family: str, params: Any, y: Any, *, mask: Any | None = None) -> tf.Tensor:
    """PIT values of the MC mixture: ``pit_values(..., mixture=True)``."""
    return pit_values(family, params, y, mixture=True, mask=mask)
