"""Propagate predictive uncertainty to a derived quantity f(y) by double sampling.

A clinician rarely needs the per-voxel variance itself but the uncertainty of
something computed from the synthetic image: the mean HU in an organ, a dose,
a volume. For each of T parameter samples (MC passes), S images are drawn
from that member's predictive distribution, f is applied to every draw, and
the variance of f is split into an epistemic and an aleatoric part.

Mathematical details:
    With ``f_ts = f(y_ts)``, ``y_ts ~ p_t`` (``t = 1..T``, ``s = 1..S``)::

        fbar_t        = (1/S) sum_s f_ts
        mean          = (1/T) sum_t fbar_t
        epistemic_var = (1/T) sum_t (fbar_t - mean)^2       Var_t E_s[f]
        aleatoric_var = (1/T) sum_t (1/S) sum_s (f_ts - fbar_t)^2   E_t Var_s[f]
        total_var     = epistemic_var + aleatoric_var

    All sums use the population form, so ``total_var`` equals the variance of
    the ``T*S`` values of f pooled together (law of total variance). The
    epistemic estimate carries a small upward bias ``aleatoric_var / S``
    from the noise of each ``fbar_t``: double sampling is noisier than the
    closed form for ``f(y) = y`` (:func:`tfuq.inference.decompose`), so use a
    large S when the aleatoric part dominates.

Reference:
    Barbano, Arridge, Jin, Tanno et al., "Uncertainty quantification in medical
    image synthesis", survey chapter, eq. (15)-(17).
    Tanno et al., "Uncertainty modelling in deep learning for safer
    neuroimage enhancement", NeuroImage 2021, arXiv:1907.13418.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfuq.distributions import family as fam
from tfuq.inference.decomposition import (
    ALEATORIC_VAR,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    check_param_samples,
)

__all__ = ["propagate", "region_mean"]


def region_mean(mask: Any) -> Callable[[tf.Tensor], tf.Tensor]:
    """A derived quantity: the mean of y over the voxels where ``mask`` is true.

    Args:
        mask: Boolean (or 0/1) array of the spatial shape of one sample, with
            at least one true voxel.

    Returns:
        ``fn(y) -> (N,)`` for draws ``y`` of shape ``(N, *mask.shape)``.

    Raises:
        ValueError: the mask selects no voxel.

    Example:
        >>> fn = region_mean([[True, False], [True, False]])
        >>> fn(tf.constant([[[1.0, 9.0], [3.0, 9.0]]])).numpy()
        array([2.], dtype=float32)
    """
    mask_t = tf.cast(tf.convert_to_tensor(mask), tf.bool)
    count = int(tf.reduce_sum(tf.cast(mask_t, tf.int64)))
    if count == 0:
        raise ValueError("The region mask selects no voxel. Expected at least one true voxel.")

    def fn(y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.boolean_mask(y, mask_t, axis=1), axis=1)

    return fn


def propagate(
    family: str,
    param_samples: Any,
    fn: Callable[[tf.Tensor], tf.Tensor],
    *,
    draws_per_member: int = 100,
    seed: int = 0,
) -> dict[str, tf.Tensor]:
    """Epistemic / aleatoric split of the variance of a derived quantity f(y).

    Args:
        family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``
            (a ``"point"`` head has no aleatoric part; it is accepted and gives
            ``aleatoric_var == 0``).
        param_samples: Unconstrained head channels of T passes, shape
            ``(T, *spatial, params_size(family))`` with a static T.
        fn: Vectorised derived quantity: called with draws of shape
            ``(S, *spatial)`` it returns shape ``(S, *q)`` (``q`` may be empty),
            treating axis 0 as independent draws. Example: :func:`region_mean`.
        draws_per_member: S, image draws per parameter sample. Default 100.
        seed: Integer seed; member t is sampled with the stateless seed
            ``(seed, t)``, so the result is reproducible.

    Returns:
        dict keyed :data:`~tfuq.inference.decomposition.MEAN`,
        ``EPISTEMIC_VAR``, ``ALEATORIC_VAR``, ``TOTAL_VAR``, each of shape
        ``q``.

    Raises:
        ValueError: bad shapes, ``draws_per_member < 1``, or ``fn`` does not
            keep the draw axis.

    Example:
        >>> params = tf.random.normal((10, 8, 8, 2))
        >>> out = propagate("normal", params, region_mean(tf.ones((8, 8))), seed=1)
        >>> out["total_var"].shape
        TensorShape([])

    Reference:
        Survey chapter (Barbano et al.), eq. (15)-(17).
    """
    if isinstance(draws_per_member, bool) or int(draws_per_member) != draws_per_member:
        raise ValueError(f"draws_per_member must be an int. Received: {draws_per_member!r}")
    if draws_per_member < 1:
        raise ValueError(f"draws_per_member must be >= 1. Received: draws_per_member={draws_per_member}")
    samples = check_param_samples(family, param_samples)
    num_members = samples.shape[0]
    if num_members is None:
        raise ValueError("propagate needs a static number of samples T on axis 0.")
    member_means = []
    member_vars = []
    for t in range(num_members):
        member = fam.make_distribution(family, samples[t])
        draws = member.sample(int(draws_per_member), seed=tf.constant([seed, t], tf.int32))
        values = tf.cast(tf.convert_to_tensor(fn(draws)), samples.dtype)
        if values.shape.rank is None or values.shape.rank < 1 or values.shape[0] != draws_per_member:
            raise ValueError(
                f"fn must keep the draw axis: called with shape {tuple(draws.shape)} it should "
                f"return shape ({draws_per_member}, ...). Received: shape {tuple(values.shape)}"
            )
        fbar = tf.reduce_mean(values, axis=0)
        member_means.append(fbar)
        member_vars.append(tf.reduce_mean(tf.square(values - fbar), axis=0))
    fbars = tf.stack(member_means)
    grand = tf.reduce_mean(fbars, axis=0)
    epistemic = tf.reduce_mean(tf.square(fbars - grand), axis=0)
    aleatoric = tf.reduce_mean(tf.stack(member_vars), axis=0)
    return {
        MEAN: grand,
        EPISTEMIC_VAR: epistemic,
        ALEATORIC_VAR: aleatoric,
        TOTAL_VAR: epistemic + aleatoric,
    }
