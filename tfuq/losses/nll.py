"""Per-voxel negative log-likelihood of a distribution head, and its Keras loss.

The head outputs unconstrained parameter channels; the likelihood comes from
:func:`tfuq.distributions.make_distribution`, so a loss and the inference code
always agree on what the channels mean.

Mathematical details:
    normal (Kendall & Gal 2017; Reinhold eq. 1; Klaser eq. 2), per voxel:
    ``0.5 (y - mu)^2 / sigma^2 + log sigma + 0.5 log(2 pi)``.

    laplace: ``|y - mu| / b + log b + log 2``.

    generalized normal (UP-GAN eq. 1, scale alpha, shape beta):
    ``(|y - mu| / alpha)^beta - log beta + log alpha + lgamma(1/beta) + log 2``.
    This is ``-tfd.GeneralizedNormal(mu, alpha, beta).log_prob(y)``. The
    authors' public code multiplies ``|y - mu| / alpha`` by beta instead of
    raising it to the power beta; tfuq implements the paper's formula. The
    term ``z^beta`` with ``z = |y - mu| / alpha`` is evaluated here as
    ``exp(beta log z)`` behind a double ``where`` so that its gradient is 0,
    not NaN, at zero residual when beta < 1 (``tf.pow`` gives ``0 * inf``
    there); elsewhere it equals TFP's ``log_prob`` to round-off. Where
    ``beta log z`` exceeds half the log of the dtype's largest value (44.4 in
    float32, 354.9 in float64; e.g. alpha = 1e-5, beta = 10 and a residual of
    1), ``z^beta`` continues linearly in ``beta log z`` (value and slope
    matched) so that loss and gradient stay finite instead of overflowing.

    The voxel map is reduced by :func:`tfuq.losses.reduction.masked_mean`
    (mask, border), per sample, then over the batch.

Reference:
    Kendall & Gal, NeurIPS 2017, arXiv:1703.04977.
    Upadhyay et al., MICCAI 2021, arXiv:2106.15542 (eq. 1).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from tfuq.distributions import check_family, constrain, make_distribution, variance
from tfuq.losses.reduction import check_border, masked_mean, split_target, voxel_target

__all__ = ["NLLLoss", "nll", "nll_map"]


def _check_likelihood_family(family: str) -> str:
    check_family(family)
    if family == "point":
        raise ValueError(
            "The 'point' family has no likelihood (it is a Dirac delta). Expected a family "
            "with a scale, or use tfuq.losses.l1 / l2 (L1Loss / L2Loss) for point "
            f"predictions. Received: family={family!r}"
        )
    return family


def _generalized_normal_nll(loc: tf.Tensor, scale: tf.Tensor, power: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """UP-GAN eq. 1 with a gradient-safe ``z^beta`` (see the module docstring)."""
    z = tf.abs(y - loc) / scale
    positive = z > 0
    safe_z = tf.where(positive, z, tf.ones_like(z))
    log_z_pow = power * tf.math.log(safe_z)
    cap = tf.constant(0.5 * math.log(z.dtype.max), dtype=z.dtype)
    capped = tf.exp(tf.minimum(log_z_pow, cap))
    z_pow = tf.where(log_z_pow <= cap, capped, capped * (1.0 + log_z_pow - cap))
    z_pow = tf.where(positive, z_pow, tf.zeros_like(z))
    log2 = tf.constant(math.log(2.0), dtype=z.dtype)
    return z_pow - tf.math.log(power) + tf.math.log(scale) + tf.math.lgamma(1.0 / power) + log2


def nll_map(family: str, params: Any, y: Any) -> tf.Tensor:
    """Per-voxel negative log-likelihood ``-log p(y | params)``.

    Args:
        family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``.
        params: Unconstrained head channels ``(B, *spatial, params_size(family))``.
        y: Target ``(B, *spatial)`` or ``(B, *spatial, 1)``.

    Returns:
        tf.Tensor: ``(B, *spatial)`` in the dtype of ``params``.

    Raises:
        ValueError: unknown family, ``"point"``, or shapes that do not match.

    Example:
        >>> nll_map("normal", tf.zeros((1, 4, 4, 2)), tf.zeros((1, 4, 4))).shape
        TensorShape([1, 4, 4])
    """
    _check_likelihood_family(family)
    params = tf.convert_to_tensor(params)
    if not params.dtype.is_floating:
        params = tf.cast(params, tf.float32)
    y = tf.cast(voxel_target(y, params.shape.rank - 1), params.dtype)
    if not y.shape.is_compatible_with(params.shape[:-1]):
        raise ValueError(
            "The target must have the voxel shape of the head output. Expected shape "
            f"{tuple(params.shape[:-1])}. Received: y with shape {tuple(y.shape)}"
        )
    if family == "generalized_normal":
        p = constrain(family, params)
        return _generalized_normal_nll(p["loc"], p["scale"], p["power"], y)
    return -make_distribution(family, params).log_prob(y)


def nll(family: str, params: Any, y: Any, mask: Any = None, border: int = 0) -> tf.Tensor:
    """Mean negative log-likelihood over masked, border-cropped voxels.

    Args:
        family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``.
        params: Unconstrained head channels ``(B, *spatial, params_size(family))``.
        y: Target ``(B, *spatial)`` or ``(B, *spatial, 1)``.
        mask: Optional voxel weights of the target's shape (e.g. a body mask).
        border: Voxels cropped from every spatial side before reducing
            (NiftyNet ``loss_border``), default 0.

    Returns:
        tf.Tensor: scalar, mean over the batch of the per-sample masked means.

    Raises:
        ValueError: ``"point"`` family (use L1/L2), bad shapes or border.

    Example:
        >>> float(nll("normal", tf.zeros((2, 8, 8, 2)), tf.zeros((2, 8, 8)), border=2)) > 0
        True
    """
    return tf.reduce_mean(masked_mean(nll_map(family, params, y), mask, border))


@keras.saving.register_keras_serializable(package="tfuq")
class NLLLoss(keras.losses.Loss):
    """Keras loss: negative log-likelihood of a :class:`~tfuq.layers.DistributionHead` output.

    ``y_true`` carries the target and, optionally, a mask as channels on its
    last axis: ``(B, *spatial, 1)`` = [target] or ``(B, *spatial, 2)`` =
    [target, mask] (``(B, *spatial)`` is also accepted). ``y_pred`` is the
    head's ``(B, *spatial, params_size(family))`` unconstrained output.
    ``call`` returns one value per sample (masked mean over voxels); the
    Keras ``reduction`` then averages over the batch.

    With ``beta > 0`` it is the beta-NLL of Seitzer et al. (ICLR 2022): each
    voxel's NLL is weighted by its predicted variance to the power beta, held
    constant in the gradient (``stop_gradient(var^beta) * NLL``). Plain NLL
    (beta = 0) scales the mean's gradient by 1/var, so voxels the network
    already calls uncertain stop teaching the mean; beta = 0.5 balances that,
    beta = 1 gives the mean the gradient of the squared error.

    Args:
        family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``.
        border: Voxels cropped from every spatial side, default 0.
        beta: Variance weighting exponent in [0, 1]; default 0 (plain NLL).
        reduction: Keras reduction over the batch, default ``"sum_over_batch_size"``.
        name: Loss name, default ``"nll"``.
        dtype: Computation dtype, default Keras ``floatx``.

    Raises:
        ValueError: ``"point"`` or unknown family, a negative border, or
            beta outside [0, 1].

    Example:
        >>> model.compile(optimizer="adam", loss=NLLLoss("normal", border=4))
    """

    def __init__(
        self,
        family: str,
        border: int = 0,
        beta: float = 0.0,
        reduction: str | None = "sum_over_batch_size",
        name: str = "nll",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.family = _check_likelihood_family(family)
        self.border = check_border(border)
        if isinstance(beta, bool) or not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1]. Received: beta={beta!r}")
        self.beta = float(beta)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        """Per-sample NLL ``(B,)`` (beta-weighted when ``beta > 0``)."""
        target, mask = split_target(y_true, y_pred.shape.rank)
        values = nll_map(self.family, y_pred, target)
        if self.beta > 0.0:
            weight = tf.stop_gradient(tf.pow(variance(self.family, y_pred), self.beta))
            values = values * tf.cast(weight, values.dtype)
        return masked_mean(values, mask, self.border)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            **super().get_config(),
            "family": self.family,
            "border": self.border,
            "beta": self.beta,
            "dtype": self.dtype,
        }
