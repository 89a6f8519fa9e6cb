"""The distribution families a tfuq head can predict, as a table of data.

A head outputs *unconstrained* parameter channels on its last axis; this
module turns them into constrained parameters and a
``tfp.distributions.Distribution``. ``tfp.layers`` do not work inside Keras 3
functional models, so distributions are built from tensors here, in losses and
in inference, never inside the model.

Channel layout on the last axis (``params_size(family)`` channels):

========================  ==========================================
family                    channels
========================  ==========================================
``"normal"``              loc, raw scale
``"laplace"``             loc, raw scale
``"generalized_normal"``  loc, raw scale (alpha), raw power (beta)
``"point"``               loc (no uncertainty: L1/L2 baselines)
========================  ==========================================

Mathematical details:
    scale = softplus(raw_scale) + SCALE_EPS. The generalized-normal shape is
    bounded on both sides, beta = BETA_MIN + (BETA_MAX - BETA_MIN) *
    sigmoid(raw_beta + BETA_SHIFT), with BETA_SHIFT chosen so that raw_beta = 0
    gives beta = 2 (a Gaussian) at initialisation; this keeps Gamma(1/beta)
    and Gamma(3/beta) finite in float32 and the NLL free of division by zero.
    Variance: normal scale^2; laplace 2 scale^2; generalized normal
    alpha^2 Gamma(3/beta) / Gamma(1/beta) (evaluated in log space); point 0.

Reference:
    Upadhyay et al., "Uncertainty-guided progressive GANs for medical image
    translation", MICCAI 2021, arXiv:2106.15542 (generalized Gaussian heads).
    Kendall & Gal, "What uncertainties do we need in Bayesian deep learning
    for computer vision?", NeurIPS 2017, arXiv:1703.04977 (Gaussian heads).
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "BETA_MAX",
    "BETA_MIN",
    "FAMILIES",
    "SCALE_EPS",
    "check_family",
    "constrain",
    "make_distribution",
    "mean",
    "params_size",
    "stddev",
    "unconstrain",
    "variance",
]

tfd = tfp.distributions

#: Family name -> names of its parameter channels, in order (the table).
FAMILIES: dict[str, tuple[str, ...]] = {
    "normal": ("loc", "scale"),
    "laplace": ("loc", "scale"),
    "generalized_normal": ("loc", "scale", "power"),
    "point": ("loc",),
}
#: Added to softplus(raw_scale) so a scale is never zero.
SCALE_EPS = 1e-5
#: Bounds of the generalized-normal shape parameter beta.
BETA_MIN = 0.1
BETA_MAX = 10.0
#: Shift so that raw_beta = 0 maps to beta = 2.
BETA_SHIFT = math.log((2.0 - BETA_MIN) / (BETA_MAX - 2.0))


def check_family(family: str) -> str:
    """Return ``family`` if known, else raise ``ValueError`` naming the valid ones."""
    if family not in FAMILIES:
        raise ValueError(
            f"Unknown distribution family. Expected one of {sorted(FAMILIES)}. Received: family={family!r}"
        )
    return family


def params_size(family: str) -> int:
    """Number of parameter channels a head of ``family`` outputs.

    Args:
        family: One of :data:`FAMILIES`.

    Returns:
        int: 2 for normal and laplace, 3 for generalized_normal, 1 for point.

    Example:
        >>> params_size("generalized_normal")
        3
    """
    return len(FAMILIES[check_family(family)])


def constrain(family: str, params: Any) -> dict[str, tf.Tensor]:
    """Map unconstrained head channels to named, constrained parameters.

    Args:
        family: One of :data:`FAMILIES`.
        params: Tensor of shape ``(..., params_size(family))``.

    Returns:
        dict: ``{"loc": (...), "scale": (...), "power": (...)}`` as the family
        has them, each of shape ``params.shape[:-1]``.

    Raises:
        ValueError: unknown family or wrong number of channels.
    """
    names = FAMILIES[check_family(family)]
    params = tf.convert_to_tensor(params)
    if not params.dtype.is_floating:
        params = tf.cast(params, tf.float32)
    channels = params.shape[-1]
    if channels is not None and channels != len(names):
        raise ValueError(
            f"A {family!r} head has {len(names)} parameter channels {names}. "
            f"Received: params with shape {tuple(params.shape)}"
        )
    out: dict[str, tf.Tensor] = {"loc": params[..., 0]}
    if "scale" in names:
        out["scale"] = tf.nn.softplus(params[..., 1]) + tf.constant(SCALE_EPS, params.dtype)
    if "power" in names:
        # tf.constant, not tf.cast: a Python float cast to float64 would pass through float32.
        lo = tf.constant(BETA_MIN, params.dtype)
        hi = tf.constant(BETA_MAX, params.dtype)
        shift = tf.constant(BETA_SHIFT, params.dtype)
        out["power"] = lo + (hi - lo) * tf.sigmoid(params[..., 2] + shift)
    return out


def unconstrain(family: str, loc: Any, scale: Any = None, power: Any = None) -> tf.Tensor:
    """Inverse of :func:`constrain`: head channels that give these parameters.

    Args:
        family: One of :data:`FAMILIES`.
        loc: Location, any shape.
        scale: Scale (alpha for the generalized normal), > SCALE_EPS; needed
            by every family but ``"point"``.
        power: Shape beta in (BETA_MIN, BETA_MAX); generalized normal only.

    Returns:
        Tensor ``(*loc.shape, params_size(family))`` of unconstrained channels.

    Example:
        >>> raw = unconstrain("normal", [0.0, 1.0], [0.5, 2.0])
        >>> constrain("normal", raw)["scale"]  # [0.5, 2.0]
    """
    names = FAMILIES[check_family(family)]
    loc = tf.convert_to_tensor(loc)
    if not loc.dtype.is_floating:
        loc = tf.cast(loc, tf.float32)
    channels = [loc]
    if "scale" in names:
        if scale is None:
            raise ValueError(f"A {family!r} distribution needs a scale. Received: scale=None")
        s = tf.convert_to_tensor(scale, loc.dtype) - tf.constant(SCALE_EPS, loc.dtype)
        channels.append(s + tf.math.log(-tf.math.expm1(-s)))  # softplus^-1, stable for large s
    if "power" in names:
        if power is None:
            raise ValueError(f"A {family!r} distribution needs a power (beta). Received: power=None")
        lo = tf.constant(BETA_MIN, loc.dtype)
        hi = tf.constant(BETA_MAX, loc.dtype)
        u = (tf.convert_to_tensor(power, loc.dtype) - lo) / (hi - lo)
        channels.append(tf.math.log(u) - tf.math.log1p(-u) - tf.constant(BETA_SHIFT, loc.dtype))
    return tf.stack(channels, axis=-1)


def make_distribution(family: str, params: Any) -> tfd.Distribution:
    """Build the per-voxel predictive distribution from head channels.

    Args:
        family: One of :data:`FAMILIES`.
        params: Tensor ``(..., params_size(family))`` of unconstrained channels.

    Returns:
        A scalar-event ``tfd.Distribution`` with batch shape ``params.shape[:-1]``:
        ``tfd.Normal``, ``tfd.Laplace``, ``tfd.GeneralizedNormal`` (scale = alpha,
        power = beta) or ``tfd.Deterministic`` for ``"point"``.

    Example:
        >>> d = make_distribution("normal", tf.zeros((2, 8, 8, 2)))
        >>> d.batch_shape
        TensorShape([2, 8, 8])
    """
    p = constrain(family, params)
    if family == "normal":
        return tfd.Normal(loc=p["loc"], scale=p["scale"])
    if family == "laplace":
        return tfd.Laplace(loc=p["loc"], scale=p["scale"])
    if family == "generalized_normal":
        return tfd.GeneralizedNormal(loc=p["loc"], scale=p["scale"], power=p["power"])
    return tfd.Deterministic(loc=p["loc"])


def mean(family: str, params: Any) -> tf.Tensor:
    """Predictive mean (all families are symmetric: the loc channel), shape ``params.shape[:-1]``."""
    return constrain(family, params)["loc"]


def variance(family: str, params: Any) -> tf.Tensor:
    """Closed-form predictive variance per voxel, shape ``params.shape[:-1]``.

    Mathematical details:
        normal: scale^2; laplace: 2 scale^2; generalized normal:
        alpha^2 Gamma(3/beta)/Gamma(1/beta), computed as
        exp(2 log alpha + lgamma(3/beta) - lgamma(1/beta)); point: 0.
    """
    p = constrain(family, params)
    if family == "normal":
        return tf.square(p["scale"])
    if family == "laplace":
        return 2.0 * tf.square(p["scale"])
    if family == "generalized_normal":
        beta = p["power"]
        return tf.exp(2.0 * tf.math.log(p["scale"]) + tf.math.lgamma(3.0 / beta) - tf.math.lgamma(1.0 / beta))
    return tf.zeros_like(p["loc"])


def stddev(family: str, params: Any) -> tf.Tensor:
    """Predictive standard deviation, ``sqrt(variance(family, params))``."""
    return tf.sqrt(variance(family, params))
