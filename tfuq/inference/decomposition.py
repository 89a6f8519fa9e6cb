"""Split predictive variance into epistemic and aleatoric parts (law of total variance).

Given T samples of a head's parameters for the same input (MC dropout passes,
posterior draws), the predictive distribution is the equal-weight mixture
``(1/T) sum_t p_t(y)``. Its variance splits exactly into the spread of the
member means (epistemic, model uncertainty) and the mean of the member
variances (aleatoric, data noise).

Mathematical details:
    With member means ``m_t`` and member variances ``v_t`` (closed form per
    family, :func:`tfuq.distributions.variance`)::

        mean          = (1/T) sum_t m_t
        epistemic_var = (1/T) sum_t (m_t - mean)^2      (population form)
        aleatoric_var = (1/T) sum_t v_t
        total_var     = epistemic_var + aleatoric_var

    ``total_var`` is exactly the variance of the mixture. The epistemic term is
    computed in two passes (deviations from the mean), never as
    ``E[m^2] - E[m]^2``, so it stays accurate on large offsets such as CT
    values in HU.

Reference:
    Barbano, Arridge, Jin, Tanno et al., "Uncertainty quantification in medical
    image synthesis", survey chapter, eq. (13)-(14).
    Kendall & Gal, "What uncertainties do we need in Bayesian deep learning for
    computer vision?", NeurIPS 2017, arXiv:1703.04977.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfuq.distributions import family as fam

__all__ = [
    "ALEATORIC_VAR",
    "DECOMPOSITION_KEYS",
    "EPISTEMIC_VAR",
    "MEAN",
    "TOTAL_VAR",
    "check_param_samples",
    "decompose",
    "decompose_moments",
    "member_moments",
]

#: Key of the predictive mean (mean of the member means).
MEAN = "mean"
#: Key of the epistemic variance (variance of the member means).
EPISTEMIC_VAR = "epistemic_var"
#: Key of the aleatoric variance (mean of the member variances).
ALEATORIC_VAR = "aleatoric_var"
#: Key of the total predictive variance (epistemic + aleatoric).
TOTAL_VAR = "total_var"
#: All keys of a decomposition dictionary, in a fixed order.
DECOMPOSITION_KEYS = (MEAN, EPISTEMIC_VAR, ALEATORIC_VAR, TOTAL_VAR)


def check_param_samples(family: str, param_samples: Any, name: str = "param_samples") -> tf.Tensor:
    """Convert to a float tensor and check its shape ``(T, ..., params_size(family))``.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        param_samples: Tensor or array of unconstrained head channels.
        name: Argument name used in error messages.

    Returns:
        A floating tensor (integer input becomes float32).

    Raises:
        ValueError: fewer than two axes, ``T == 0`` or a wrong channel count.
    """
    tensor = tf.convert_to_tensor(param_samples)
    if not tensor.dtype.is_floating:
        tensor = tf.cast(tensor, tf.float32)
    size = fam.params_size(family)
    shape = tensor.shape
    if shape.rank is not None and shape.rank < 2:
        raise ValueError(
            f"{name} needs a leading sample axis and a trailing channel axis. "
            f"Expected shape (T, ..., {size}). Received: {name} with shape {tuple(shape)}"
        )
    if shape.rank is not None and shape[0] == 0:
        raise ValueError(
            f"{name} holds no samples. Expected T >= 1 along axis 0. "
            f"Received: {name} with shape {tuple(shape)}"
        )
    if shape.rank is not None and shape[-1] is not None and shape[-1] != size:
        raise ValueError(
            f"A {family!r} head has {size} parameter channels. "
            f"Expected {name} with shape (T, ..., {size}). Received: shape {tuple(shape)}"
        )
    return tensor


def member_moments(family: str, param_samples: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and variance of every member of a sample of predictive distributions.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        param_samples: Unconstrained head channels, shape ``(T, ..., P)`` with
            ``P = params_size(family)``; TF tensor or NumPy array.

    Returns:
        ``(means, variances)``, each of shape ``(T, ...)``, in the input's float
        dtype (float32 for integer input).

    Raises:
        ValueError: unknown family, missing axes, T == 0 or wrong channel count.
    """
    tensor = check_param_samples(family, param_samples)
    return fam.mean(family, tensor), fam.variance(family, tensor)


def decompose_moments(means: Any, variances: Any) -> dict[str, tf.Tensor]:
    """Law-of-total-variance split from member means and variances.

    Args:
        means: Member means, shape ``(T, ...)``.
        variances: Member variances, same shape as ``means``.

    Returns:
        dict with :data:`MEAN`, :data:`EPISTEMIC_VAR`, :data:`ALEATORIC_VAR`,
        :data:`TOTAL_VAR`, each of shape ``means.shape[1:]``.

    Raises:
        ValueError: shapes differ, or there is no sample axis.

    Example:
        >>> out = decompose_moments([[1.0], [3.0]], [[0.5], [1.5]])
        >>> float(out["epistemic_var"][0]), float(out["aleatoric_var"][0])
        (1.0, 1.0)
    """
    means = tf.convert_to_tensor(means)
    if not means.dtype.is_floating:
        means = tf.cast(means, tf.float32)
    variances = tf.cast(tf.convert_to_tensor(variances), means.dtype)
    if means.shape.rank is not None and means.shape.rank < 1:
        raise ValueError(
            f"means needs a leading sample axis. Expected shape (T, ...). "
            f"Received: means with shape {tuple(means.shape)}"
        )
    if not means.shape.is_compatible_with(variances.shape):
        raise ValueError(
            "means and variances must have the same shape (T, ...). "
            f"Received: means {tuple(means.shape)}, variances {tuple(variances.shape)}"
        )
    mu = tf.reduce_mean(means, axis=0)
    epistemic = tf.reduce_mean(tf.square(means - mu), axis=0)
    aleatoric = tf.reduce_mean(variances, axis=0)
    return {
        MEAN: mu,
        EPISTEMIC_VAR: epistemic,
        ALEATORIC_VAR: aleatoric,
        TOTAL_VAR: epistemic + aleatoric,
    }


def decompose(family: str, param_samples: Any) -> dict[str, tf.Tensor]:
    """Epistemic / aleatoric variance decomposition of T predictive samples.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        param_samples: Unconstrained head channels of T stochastic passes,
            shape ``(T, ..., params_size(family))``; TF tensor or NumPy array.
            float64 input gives float64 output.

    Returns:
        dict of tensors keyed :data:`MEAN`, :data:`EPISTEMIC_VAR`,
        :data:`ALEATORIC_VAR`, :data:`TOTAL_VAR`, each of shape
        ``param_samples.shape[1:-1]`` (one sample without the channel axis).
        For the ``"point"`` family the aleatoric part is zero.

    Raises:
        ValueError: unknown family, wrong channel count, or no samples.

    Example:
        >>> samples = tf.random.normal((20, 8, 8, 2))  # T=20 normal heads
        >>> out = decompose("normal", samples)
        >>> out["total_var"].shape
        TensorShape([8, 8])

    Reference:
        Survey chapter (Barbano et al.), eq. (13)-(14).
    """
    means, variances = member_moments(family, param_samples)
    return decompose_moments(means, variances)
