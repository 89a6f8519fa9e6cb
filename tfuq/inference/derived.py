"""Uncertainty of a derived quantity, streamed: the PET attenuation map (mu-map) from a synthetic CT.

In PET/MR the MR -> CT synthesis is not the end product: the pseudo-CT is
turned into linear attenuation coefficients at 511 keV (a "mu-map") that the
PET reconstruction uses for attenuation correction (survey chapter, section
2.3; Klaser et al. 2020, section 1). This module propagates the predictive
uncertainty of the synthetic CT to such a derived quantity ``f(y)`` by double
sampling, one batch of MC passes at a time, into the same
:class:`~tfuq.inference.streaming.MomentState` the whole-volume engine keeps
for the image itself, so memory does not grow with the number of passes T.

Mathematical details:
    For pass ``t`` (head parameters ``theta_t``) draw ``y_ts ~ p(y | theta_t)``,
    ``s = 1..S``, map each draw to target units, ``x_ts = y_ts * scale +
    offset`` (:mod:`tfuq.data.normalisation`), and evaluate ``f_ts = f(x_ts)``::

        fbar_t = (1/S) sum_s f_ts                       per-pass mean
        v_t    = (1/S) sum_s (f_ts - fbar_t)^2          per-pass variance

    The pairs ``(fbar_t, v_t)`` are merged exactly as
    :func:`~tfuq.inference.streaming.update_state` merges the closed-form
    member (mean, variance) pairs (Chan et al.'s parallel update), so after all
    T passes :func:`~tfuq.inference.streaming.finalize` gives::

        mean          = (1/T) sum_t fbar_t
        epistemic_var = (1/T) sum_t (fbar_t - mean)^2    Var_t E_s[f]
        aleatoric_var = (1/T) sum_t v_t                  E_t Var_s[f]
        total_var     = epistemic_var + aleatoric_var    pooled variance of all T*S values

    These are the quantities of eq. (15)-(17) of the survey chapter in the
    population form of :func:`tfuq.inference.propagate` (1/S where the
    printed equations have 1/(S-1)), computed from deviations rather than raw
    second moments so a large offset (HU) does not cancel. The epistemic
    estimate carries the double-sampling bias ``aleatoric_var / S`` (the
    noise of each ``fbar_t``); use a large S when the aleatoric part dominates.

    Random numbers: the pass with global index ``t`` (the number of passes
    already merged into the state, ``state.count``) draws its S images with
    the stateless seed ``(seed, t)``, the scheme of
    :func:`tfuq.inference.propagate`. Splitting T passes into any sequence of
    batches therefore gives the same draws, and after all T passes the result
    equals ``propagate(family, params, lambda y: fn(y * scale + offset),
    draws_per_member=S, seed=seed)`` up to floating-point rounding.

Reference:
    Barbano, Arridge, Jin, Tanno et al., "Uncertainty quantification in medical
    image synthesis", survey chapter, section 2.3 and eq. (15)-(17).
    Klaser et al., "Uncertainty-aware multi-resolution whole-body MR to CT
    synthesis", SASHIMI 2020 (PET/MR attenuation correction from synthetic CT).
    Carney, Townsend, Rappoport & Bendriem, "Method for transforming CT images
    for attenuation correction in PET/CT imaging", Med. Phys. 33(4):976-983,
    2006, doi:10.1118/1.2174132 (the HU -> mu(511 keV) conversion).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from tfuq.checks import check_int
from tfuq.distributions import family as fam
from tfuq.inference.decomposition import check_param_samples, decompose_moments
from tfuq.inference.streaming import MomentState, merge_states

__all__ = [
    "DERIVED_QUANTITIES",
    "MU511_BONE_INTERCEPT",
    "MU511_BONE_SLOPE",
    "MU511_BREAK_HU",
    "MU511_KVP",
    "MU511_SOFT_SLOPE",
    "DerivedQuantity",
    "derived_moments",
    "derived_quantity",
    "derived_update",
    "mu_map_511kev",
    "propagate",
]

#: Tube voltage (kVp) of the CT whose row of Carney et al. (2006), Table I, is used.
MU511_KVP = 120
#: Slope of the lower segment, cm^-1 per HU: mu = 9.6e-5 * (HU + 1000), i.e. mu_water(511 keV) = 0.096 cm^-1.
MU511_SOFT_SLOPE = 9.6e-5
#: Slope ``a`` of the upper (bone) segment at 120 kVp, cm^-1 per HU: mu = a * (HU + 1000) + b.
MU511_BONE_SLOPE = 5.10e-5
#: Intercept ``b`` of the upper (bone) segment at 120 kVp, cm^-1.
MU511_BONE_INTERCEPT = 4.71e-2
#: Break point at 120 kVp in HU: 47 HU, tabulated by Carney et al. as 1047 on the shifted scale HU + 1000.
MU511_BREAK_HU = 47.0


def mu_map_511kev(hu: Any) -> tf.Tensor:
    """Linear attenuation coefficient at 511 keV (cm^-1) from CT numbers in HU.

    The bilinear transformation of Carney et al. (2006) for a 120 kVp CT,
    applied elementwise, with ``x = HU + 1000`` (air 0, water 1000)::

        mu = 9.6e-5 * x                     HU <= 47   (air - water mixtures)
        mu = 5.10e-5 * x + 4.71e-2          HU >  47   (water - bone mixtures)
        mu = max(mu, 0)                     (HU < -1000 would give mu < 0)

    Coefficients: Carney et al., Table I, row 120 kVp: a = 5.10e-5 cm^-1,
    b = 4.71e-2 cm^-1, break point 1047 on the ``HU + 1000`` scale (47 HU);
    the lower segment scales by mu_water(511 keV) = 0.096 cm^-1. The table
    gives other kVp rows (80-140 kVp); only the 120 kVp row is used here. The
    break point is 47 HU, not 1047 HU: the two segments meet there
    (9.6e-5 * 1047 = 0.100512 and 5.10e-5 * 1047 + 4.71e-2 = 0.100497 cm^-1;
    the 1.5e-5 cm^-1 step is the rounding of the published coefficients),
    whereas at 1047 HU they would differ by 30%. At the break point itself the
    lower segment is used.

    Args:
        hu: CT numbers in HU, any shape; TF tensor or NumPy array. float32 and
            float64 are preserved; integer input becomes float32.

    Returns:
        mu in cm^-1, same shape and floating dtype as ``hu``.

    Example:
        >>> mu_map_511kev(tf.constant([-1000.0, 0.0, 1000.0])).numpy()  # air, water, bone
        array([0.    , 0.096 , 0.1491], dtype=float32)

    Reference:
        Carney, Townsend, Rappoport & Bendriem, "Method for transforming CT
        images for attenuation correction in PET/CT imaging", Med. Phys.
        33(4):976-983, 2006, doi:10.1118/1.2174132, Table I.
    """
    hu = tf.convert_to_tensor(hu)
    if not hu.dtype.is_floating:
        hu = tf.cast(hu, tf.float32)
    dtype = hu.dtype
    # tf.constant, not tf.cast of a Python float: float64 must not pass through float32.
    shifted = hu + tf.constant(1000.0, dtype)
    soft = tf.constant(MU511_SOFT_SLOPE, dtype) * shifted
    bone = tf.constant(MU511_BONE_SLOPE, dtype) * shifted + tf.constant(MU511_BONE_INTERCEPT, dtype)
    mu = tf.where(hu <= tf.constant(MU511_BREAK_HU, dtype), soft, bone)
    return tf.maximum(mu, tf.zeros((), dtype))


class DerivedQuantity(NamedTuple):
    """A registered derived quantity ``f`` (an entry of :data:`DERIVED_QUANTITIES`).

    Attributes:
        fn: Vectorised map: called with values of shape ``(S, ...)`` in
            ``input_unit`` it returns shape ``(S, *q)``, axis 0 being
            independent draws.
        unit: Unit of the output, e.g. ``"cm^-1"``.
        input_unit: Unit ``fn`` expects its input in, e.g. ``"HU"``.
        description: One line for logs and output metadata.
    """

    fn: Callable[[tf.Tensor], tf.Tensor]
    unit: str
    input_unit: str
    description: str


#: Name (the ``[INFERENCE] derived`` config value) -> registered derived quantity.
DERIVED_QUANTITIES: dict[str, DerivedQuantity] = {
    "mu_map_511kev": DerivedQuantity(
        fn=mu_map_511kev,
        unit="cm^-1",
        input_unit="HU",
        description=(
            "Linear attenuation coefficient at 511 keV (PET mu-map) from CT in HU, bilinear "
            "transformation of Carney et al., Med. Phys. 33:976-983, 2006, 120 kVp row"
        ),
    ),
}


def derived_quantity(name: str) -> DerivedQuantity:
    """Look up a registered derived quantity by name.

    Args:
        name: A key of :data:`DERIVED_QUANTITIES`, e.g. ``"mu_map_511kev"``.

    Returns:
        The :class:`DerivedQuantity`.

    Raises:
        ValueError: unknown name.
    """
    if name not in DERIVED_QUANTITIES:
        raise ValueError(
            f"Unknown derived quantity. Expected one of {sorted(DERIVED_QUANTITIES)}. Received: {name!r}"
        )
    return DERIVED_QUANTITIES[name]


def derived_moments(
    family: str,
    param_batch: Any,
    fn: Callable[[tf.Tensor], tf.Tensor] | str,
    units: Any = None,
    *,
    draws: int = 100,
    seed: int | tf.Tensor = 0,
    first_pass: int | tf.Tensor = 0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-pass mean and variance of ``f`` over ``draws`` samples of each predictive distribution.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES` (``"point"`` gives
            zero variances).
        param_batch: Unconstrained head channels of ``b >= 1`` passes, shape
            ``(b, ..., params_size(family))``; ``b`` may be dynamic inside
            ``tf.function``. Float dtype kept (integers become float32).
        fn: A derived quantity (see :class:`DerivedQuantity`) or the name of
            a registered one. Called with draws ``(draws, ...)`` in target
            units, it must return ``(draws, *q)``.
        units: Map from the head's (normalised) units to ``fn``'s input units,
            ``x = y * scale + offset``: a
            :class:`~tfuq.data.NormalisationParams`, any object with
            ``offset`` and ``scale`` attributes, an ``(offset, scale)`` pair,
            or None for the identity.
        draws: S, samples per pass, ``>= 1``. Memory: ``draws`` times the
            size of one pass, one pass at a time.
        seed: Integer seed (Python int or scalar int tensor).
        first_pass: Global index of the first pass of the batch; pass ``i``
            of the batch uses the stateless seed ``(seed, first_pass + i)``.

    Returns:
        ``(means, variances)``, each of shape ``(b, *q)``: the mean over the
        draws of ``f`` and its population variance, per pass.

    Raises:
        ValueError: unknown family or quantity name, wrong channel count, no
            pass, ``draws < 1``, bad ``units`` or ``seed``, or ``fn`` does not
            keep the draw axis.

    Example:
        >>> params = tf.random.normal((3, 8, 8, 2))
        >>> means, variances = derived_moments("normal", params, "mu_map_511kev", (-1024.0, 4095.0), draws=10)
        >>> means.shape
        TensorShape([3, 8, 8])
    """
    fn = _resolve_fn(fn)
    draws = check_int(draws, "draws", minimum=1)
    batch = check_param_samples(family, param_batch, name="param_batch")
    dtype = batch.dtype
    affine = _units(units, dtype)
    seed32 = _check_seed(seed)
    num_passes = tf.shape(batch)[0]
    pass_index = tf.cast(first_pass, tf.int32) + tf.range(num_passes, dtype=tf.int32)
    seeds = tf.stack([tf.fill([num_passes], seed32), pass_index], axis=1)
    traced_shape: list[tf.TensorShape] = []

    def one_pass(elems: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        params, pass_seed = elems
        fbar, var = _pass_moments(family, params, fn, affine, draws, pass_seed)
        traced_shape.append(fbar.shape)
        return fbar, var

    spec = tf.TensorSpec(None, dtype)
    # One pass at a time: S draws of one pass are the memory peak, not b * S.
    means, variances = tf.map_fn(
        one_pass, (batch, seeds), fn_output_signature=(spec, spec), parallel_iterations=1
    )
    if traced_shape:  # map_fn forgets the static shape of its outputs in a graph.
        means.set_shape(tf.TensorShape([None]).concatenate(traced_shape[0]))
        variances.set_shape(means.shape)
    return means, variances


def propagate(
    family: str,
    param_samples: Any,
    fn: Callable[[tf.Tensor], tf.Tensor] | str,
    *,
    draws_per_member: int = 100,
    seed: int = 0,
) -> dict[str, tf.Tensor]:
    """Eq. (15)-(17) on T parameter samples held in memory: the decomposition of ``f(y)``.

    :func:`derived_moments` per sample, then the law of total variance
    (:func:`tfuq.inference.decompose_moments`); the streaming path of
    ``tfuq infer`` is :func:`derived_update`. ``fn`` may reduce over voxels
    (e.g. the mean over a region), as long as it keeps the draw axis.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        param_samples: Unconstrained head channels ``(T, ..., params_size(family))``.
        fn: Derived quantity, ``(S, ...) -> (S, *q)``, or a registered name.
        draws_per_member: S, image draws per parameter sample. Default 100.
        seed: Integer seed; sample t uses the stateless seed ``(seed, t)``.

    Returns:
        dict ``mean``, ``epistemic_var``, ``aleatoric_var``, ``total_var`` of shape ``q``.

    Raises:
        ValueError: as :func:`derived_moments`.

    Example:
        >>> out = propagate("normal", tf.zeros((4, 8, 8, 2)), lambda y: tf.reduce_mean(y, axis=[1, 2]))
        >>> float(out["total_var"]) >= 0.0
        True
    """
    means, variances = derived_moments(family, param_samples, fn, draws=draws_per_member, seed=seed)
    return decompose_moments(means, variances)


def derived_update(
    state: MomentState,
    family: str,
    param_batch: Any,
    fn: Callable[[tf.Tensor], tf.Tensor] | str,
    units: Any = None,
    *,
    draws: int = 100,
    seed: int | tf.Tensor = 0,
) -> MomentState:
    """Merge a batch of MC passes into the running moments of a derived quantity ``f``.

    The double-sampling counterpart of
    :func:`~tfuq.inference.streaming.update_state`: call it once per forward
    call with the passes of that call, then
    :func:`~tfuq.inference.streaming.finalize` gives the mean, epistemic
    variance ``Var_t E_s[f]``, aleatoric variance ``E_t Var_s[f]`` and total
    variance of ``f`` in ``fn``'s output unit (survey eq. (15)-(17); see the
    module docstring). Pure function of tensors; works inside ``tf.function``
    with a dynamic number of passes (``family``, ``fn``, ``units`` and
    ``draws`` are Python values fixed at trace time; ``seed`` may be a
    tensor).

    Args:
        state: Running state from :func:`~tfuq.inference.streaming.init_state`
            with the shape ``q`` of one evaluation of ``fn`` without the draw
            axis (for an elementwise ``fn`` such as :func:`mu_map_511kev`,
            the shape of one pass without the channel axis), or from a
            previous update. Its dtype is the computation dtype.
        family: One of :data:`tfuq.distributions.FAMILIES`.
        param_batch: Unconstrained head channels of ``b >= 1`` passes, shape
            ``(b, ..., params_size(family))``; cast to the state's dtype.
        fn: Derived quantity or the name of a registered one, e.g.
            ``"mu_map_511kev"`` (see :func:`derived_moments`).
        units: ``x = y * scale + offset`` from the head's units to ``fn``'s
            input units (a :class:`~tfuq.data.NormalisationParams` or an
            ``(offset, scale)`` pair), or None for the identity.
        draws: S, samples per pass, ``>= 1``. Default 100.
        seed: Integer seed. The pass with global index ``t = state.count + i``
            uses the stateless seed ``(seed, t)``, so the same T passes give
            the same result however they are split into calls. Windows or
            window groups that start from an empty state reuse the seeds
            ``(seed, 0), (seed, 1), ...``; give each group its own seed when
            their draws must be independent.

    Returns:
        The updated :class:`~tfuq.inference.streaming.MomentState` (the input
        is not modified).

    Raises:
        ValueError: see :func:`derived_moments`; also when ``fn``'s output
            shape differs from the state's shape.

    Example:
        >>> state = init_state((8, 8))
        >>> for _ in range(5):
        ...     params = tf.random.normal((2, 8, 8, 2))  # two MC passes per call
        ...     state = derived_update(state, "normal", params, "mu_map_511kev", (-1024.0, 4095.0), draws=20)
        >>> finalize(state)["epistemic_var"].shape
        TensorShape([8, 8])
    """
    dtype = state.mean.dtype
    batch = tf.cast(check_param_samples(family, param_batch, name="param_batch"), dtype)
    means, variances = derived_moments(
        family,
        batch,
        fn,
        units,
        draws=draws,
        seed=seed,
        first_pass=tf.cast(state.count, tf.int32),
    )
    if not means.shape[1:].is_compatible_with(state.mean.shape):
        raise ValueError(
            f"fn's output (without the draw axis) must have the state's shape {tuple(state.mean.shape)}. "
            f"Received: per-pass shape {tuple(means.shape[1:])}"
        )
    return merge_states(state, _batch_state(means, variances))


def _pass_moments(
    family: str,
    params: tf.Tensor,
    fn: Callable[[tf.Tensor], tf.Tensor],
    affine: tuple[tf.Tensor, tf.Tensor] | None,
    draws: int,
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and population variance over ``draws`` samples of ``f`` for one pass ``(..., P)``."""
    samples = fam.make_distribution(family, params).sample(draws, seed=seed)
    if affine is not None:
        offset, scale = affine
        samples = samples * scale + offset
    values = tf.cast(tf.convert_to_tensor(fn(samples)), params.dtype)
    if values.shape.rank is not None and (values.shape.rank < 1 or values.shape[0] not in (None, draws)):
        raise ValueError(
            f"fn must keep the draw axis: called with shape {tuple(samples.shape)} it should "
            f"return shape ({draws}, ...). Received: shape {tuple(values.shape)}"
        )
    fbar = tf.reduce_mean(values, axis=0)
    return fbar, tf.reduce_mean(tf.square(values - fbar), axis=0)


def _batch_state(means: tf.Tensor, variances: tf.Tensor) -> MomentState:
    """State of a batch of per-pass (mean, variance) pairs ``(b, ...)``, as in ``update_state``."""
    count = tf.cast(tf.shape(means)[0], means.dtype)
    batch_mean = tf.reduce_mean(means, axis=0)
    batch_m2 = tf.reduce_sum(tf.square(means - batch_mean), axis=0)
    return MomentState(count, batch_mean, batch_m2, tf.reduce_mean(variances, axis=0))


def _resolve_fn(fn: Callable[[tf.Tensor], tf.Tensor] | str) -> Callable[[tf.Tensor], tf.Tensor]:
    if isinstance(fn, str):
        return derived_quantity(fn).fn
    if not callable(fn):
        raise ValueError(
            f"Expected fn to be a callable or one of {sorted(DERIVED_QUANTITIES)}. Received: fn={fn!r}"
        )
    return fn


def _check_seed(seed: Any) -> tf.Tensor:
    if isinstance(seed, bool):
        raise ValueError(f"Expected seed to be an int or an int tensor. Received: seed={seed!r}")
    if isinstance(seed, (int, np.integer)):
        if not -(2**31) <= int(seed) < 2**31:
            raise ValueError(f"Expected seed to fit in int32. Received: seed={seed}")
        return tf.constant(int(seed), tf.int32)
    tensor = tf.convert_to_tensor(seed)
    if not tensor.dtype.is_integer or (tensor.shape.rank is not None and tensor.shape.rank != 0):
        raise ValueError(
            f"Expected seed to be an int or a scalar int tensor. Received: seed with dtype "
            f"{tensor.dtype.name} and shape {tuple(tensor.shape)}"
        )
    return tf.cast(tensor, tf.int32)


def _units(units: Any, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor] | None:
    """``(offset, scale)`` as tensors of ``dtype``, or None for the identity."""
    if units is None:
        return None
    if hasattr(units, "offset") and hasattr(units, "scale"):
        offset, scale = units.offset, units.scale
    elif isinstance(units, (tuple, list)) and len(units) == 2:
        offset, scale = units
    else:
        raise ValueError(
            "Expected units to be None, a NormalisationParams (offset, scale attributes) or an "
            f"(offset, scale) pair. Received: units={units!r}"
        )
    if isinstance(offset, (int, float, np.number)) and not math.isfinite(float(offset)):
        raise ValueError(f"Expected a finite units offset. Received: offset={offset!r}")
    if isinstance(scale, (int, float, np.number)) and not (math.isfinite(float(scale)) and scale > 0):
        raise ValueError(f"Expected a finite units scale > 0. Received: scale={scale!r}")
    return _as_tensor(offset, dtype), _as_tensor(scale, dtype)


def _as_tensor(value: Any, dtype: tf.DType) -> tf.Tensor:
    # tf.constant for Python numbers: a float64 offset must not pass through float32.
    if isinstance(value, (int, float, np.number)):
        return tf.constant(float(value), dtype)
    return tf.cast(tf.convert_to_tensor(value), dtype)
