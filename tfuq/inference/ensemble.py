"""Variance decomposition across the members of a deep ensemble.

K independently trained networks give K predictive distributions; each may
itself be a mixture of T MC-dropout passes. The ensemble's predictive
distribution is the equal-weight mixture over members (and, within a member,
over its passes). Its variance splits as in
:func:`tfuq.inference.decompose`, and the epistemic part splits once more
into the disagreement between members and the MC spread inside members.

Mathematical details:
    Member k has ``T_k`` samples with means ``m_kt`` and variances ``v_kt``;
    per member ``mean_k = mean_t m_kt``, ``within_k = mean_t (m_kt - mean_k)^2``,
    ``aleatoric_k = mean_t v_kt``. With weight ``1/K`` per member::

        mean               = (1/K) sum_k mean_k
        between_member_var = (1/K) sum_k (mean_k - mean)^2
        within_member_var  = (1/K) sum_k within_k
        epistemic_var      = between_member_var + within_member_var
        aleatoric_var      = (1/K) sum_k aleatoric_k
        total_var          = epistemic_var + aleatoric_var

    With equal ``T_k`` this is exactly :func:`tfuq.inference.decompose` on the
    ``K*T`` samples pooled together; without MC samples (``T_k = 1``)
    ``within_member_var`` is 0.

Reference:
    Lakshminarayanan, Pritzel & Blundell, "Simple and scalable predictive
    uncertainty estimation using deep ensembles", NeurIPS 2017,
    arXiv:1612.01474.
    Barbano, Arridge, Jin, Tanno et al., survey chapter, eq. (13)-(14).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from tfuq.inference.decomposition import (
    ALEATORIC_VAR,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    check_param_samples,
    decompose,
)

__all__ = [
    "BETWEEN_MEMBER_VAR",
    "ENSEMBLE_KEYS",
    "WITHIN_MEMBER_VAR",
    "ensemble_decompose",
]

#: Key of the variance of the member means (disagreement between networks).
BETWEEN_MEMBER_VAR = "between_member_var"
#: Key of the mean MC variance inside members (0 without MC samples).
WITHIN_MEMBER_VAR = "within_member_var"
#: All keys of an ensemble decomposition, in a fixed order.
ENSEMBLE_KEYS = (MEAN, EPISTEMIC_VAR, ALEATORIC_VAR, TOTAL_VAR, BETWEEN_MEMBER_VAR, WITHIN_MEMBER_VAR)


def _member_decompositions(family: str, member_params: Any, mc_samples: bool) -> list[dict[str, tf.Tensor]]:
    """One decomposition per member (a member without MC axis has T = 1)."""
    if isinstance(member_params, Sequence) and not isinstance(member_params, str):
        if len(member_params) == 0:
            raise ValueError("member_params holds no member. Expected K >= 1 members.")
        members = [tf.convert_to_tensor(m) for m in member_params]
        if not mc_samples:
            members = [m[tf.newaxis] for m in members]
        shapes = {tuple(m.shape[1:]) for m in members}
        if len(shapes) != 1:
            raise ValueError(
                "All members must predict the same shape. "
                f"Received: member shapes {sorted(tuple(m.shape) for m in members)}"
            )
    else:
        tensor = tf.convert_to_tensor(member_params)
        min_rank = 3 if mc_samples else 2
        if tensor.shape.rank is not None and tensor.shape.rank < min_rank:
            layout = "(K, T, ..., P)" if mc_samples else "(K, ..., P)"
            raise ValueError(
                f"member_params has too few axes. Expected shape {layout}. "
                f"Received: shape {tuple(tensor.shape)}"
            )
        if tensor.shape[0] is None:
            raise ValueError("ensemble_decompose needs a static number of members K on axis 0.")
        if tensor.shape[0] == 0:
            raise ValueError("member_params holds no member. Expected K >= 1 members.")
        members = [tensor[k] if mc_samples else tensor[k][tf.newaxis] for k in range(tensor.shape[0])]
    return [decompose(family, check_param_samples(family, m, "member_params")) for m in members]


def ensemble_decompose(family: str, member_params: Any, *, mc_samples: bool = False) -> dict[str, tf.Tensor]:
    """Variance decomposition across K ensemble members (optionally x T MC samples).

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        member_params: Unconstrained head channels of the members, as a tensor
            ``(K, ..., P)`` (one prediction per member), a tensor
            ``(K, T, ..., P)`` with ``mc_samples=True``, or a list of K tensors
            of shape ``(T_k, ..., P)`` with ``mc_samples=True`` (members may
            have different T_k; each member weighs 1/K).
        mc_samples: Whether each member carries a leading MC sample axis.
            Default False.

    Returns:
        dict keyed ``mean``, ``epistemic_var``, ``aleatoric_var``,
        ``total_var``, :data:`BETWEEN_MEMBER_VAR`, :data:`WITHIN_MEMBER_VAR`;
        each of the shape of one prediction without the channel axis.

    Raises:
        ValueError: no member, members of different shapes, wrong channels.

    Example:
        >>> out = ensemble_decompose("normal", tf.random.normal((5, 8, 8, 2)))
        >>> float(tf.reduce_max(out["within_member_var"]))
        0.0

    Reference:
        Lakshminarayanan et al. 2017, arXiv:1612.01474.
    """
    parts = _member_decompositions(family, member_params, mc_samples)
    means = tf.stack([p[MEAN] for p in parts])
    grand = tf.reduce_mean(means, axis=0)
    between = tf.reduce_mean(tf.square(means - grand), axis=0)
    within = tf.reduce_mean(tf.stack([p[EPISTEMIC_VAR] for p in parts]), axis=0)
    aleatoric = tf.reduce_mean(tf.stack([p[ALEATORIC_VAR] for p in parts]), axis=0)
    epistemic = between + within
    return {
        MEAN: grand,
        EPISTEMIC_VAR: epistemic,
        ALEATORIC_VAR: aleatoric,
        TOTAL_VAR: epistemic + aleatoric,
        BETWEEN_MEMBER_VAR: between,
        WITHIN_MEMBER_VAR: within,
    }
