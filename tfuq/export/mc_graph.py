"""Monte Carlo uncertainty maps computed inside a TensorFlow graph (what a SavedModel runs).

Pure TensorFlow functions, traced into the exported signatures: T stochastic
passes of the model in a ``tf.while_loop`` merged one at a time into the
streaming decomposition of :mod:`tfuq.inference.streaming` (memory
independent of T), then recalibration (:mod:`tfuq.calibration.moment_recalibration`) and
the return to the target's units. Nothing here imports Keras; the model is
reached through a ``forward()`` callable traced with MC sampling on.

Mathematical details:
    After T passes with member means ``mu_t`` and variances ``v_t``
    (:func:`tfuq.distributions.variance` of each pass)::

        mean = mean_t mu_t,  epistemic_var = Var_t mu_t (population),
        aleatoric_var = mean_t v_t

    then (see :mod:`tfuq.calibration.moment_recalibration`) ``aleatoric_var *= s^2``,
    stds ``= k sqrt(var)``, and in target units (normalisation
    ``y = (x - offset) / scale``): ``mean * scale + offset``, ``std * scale``.
    The generalized normal also gets the MC means of its per-pass alpha
    (times s and scale) and beta.

Reference:
    Barbano et al., survey chapter on UQ in medical image synthesis,
    eq. (13)-(14); Kendall & Gal 2017, arXiv:1703.04977.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.distributions import check_family, constrain
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR, MEAN
from tfuq.inference.outputs import ALEATORIC_STD, EPISTEMIC_STD, TOTAL_STD
from tfuq.inference.streaming import MomentState, finalize, init_state, update_state

__all__ = [
    "ALPHA",
    "BETA",
    "LOWER",
    "UPPER",
    "Units",
    "mc_maps",
    "param_maps",
]

#: Output keys of the recalibrated central-interval bounds.
LOWER = "lower95"
UPPER = "upper95"
#: Output keys of the generalized normal's MC-mean scale and shape.
ALPHA = "alpha"
BETA = "beta"

#: ``(offset, scale)`` of the target's normalisation, or None for normalised units.
Units = tuple[float, float] | None


def _location(value: tf.Tensor, units: Units) -> tf.Tensor:
    """A value (mean, bound) in target units: ``value * scale + offset``."""
    if units is None:
        return value
    return value * tf.constant(float(units[1]), tf.float32) + tf.constant(float(units[0]), tf.float32)


def _spread(value: tf.Tensor, units: Units) -> tf.Tensor:
    """A std or scale parameter in target units: ``value * scale``."""
    return value if units is None else value * tf.constant(float(units[1]), tf.float32)


def mc_maps(
    forward: Callable[[], tf.Tensor],
    family: str,
    mc_samples: tf.Tensor | int,
    spatial_shape: tf.Tensor,
    *,
    recalibration: MomentRecalibration | None = None,
    units: Units = None,
) -> dict[str, tf.Tensor]:
    """Mean and uncertainty maps from T stochastic passes, for use inside a graph.

    Args:
        forward: Zero-argument callable returning the head parameters
            ``(B, *spatial, P)`` of one stochastic pass (traced once, inside
            the loop body; it must draw fresh randomness on every call).
        family: The head's family (:data:`tfuq.distributions.FAMILIES`).
        mc_samples: T, a Python int or an int32 scalar tensor ``>= 1``.
        spatial_shape: 1-D int tensor ``(B, *spatial)`` of the maps.
        recalibration: Constants of the recalibration; None = none.
        units: ``(offset, scale)`` of the target normalisation; None keeps
            normalised units.

    Returns:
        dict of float32 ``(B, *spatial)`` tensors: ``mean``,
        ``epistemic_std``, ``aleatoric_std``, ``total_std``; ``lower95`` and
        ``upper95`` when recalibrated; ``alpha`` and ``beta`` for the
        generalized normal.
    """
    family = check_family(family)
    recalibration = recalibration or MomentRecalibration()
    t = tf.convert_to_tensor(mc_samples, tf.int32)
    check = tf.debugging.assert_greater_equal(t, 1, message="mc_samples must be >= 1")
    with tf.control_dependencies([check]):
        t = tf.identity(t)
    ggd = family == "generalized_normal"
    zeros = tf.zeros(spatial_shape, tf.float32)
    extras0 = (zeros, zeros) if ggd else ()

    def body(i: tf.Tensor, state: MomentState, extras: tuple) -> tuple:
        params = forward()
        state = update_state(family, state, params[tf.newaxis])
        if ggd:
            p = constrain(family, params)
            extras = (extras[0] + p["scale"], extras[1] + p["power"])
        return i + 1, state, extras

    _, state, extras = tf.while_loop(
        lambda i, state, extras: i < t,
        body,
        (tf.constant(0), init_state(spatial_shape, tf.float32), extras0),
        parallel_iterations=1,  # passes advance the dropout seed variables in turn
    )
    moments = finalize(state)
    mean = moments[MEAN]
    epistemic = tf.maximum(moments[EPISTEMIC_VAR], 0.0)
    aleatoric = tf.maximum(moments[ALEATORIC_VAR], 0.0)
    recalibrated = recalibration.apply(mean, epistemic, aleatoric)
    out = {MEAN: _location(mean, units)}
    for key in (EPISTEMIC_STD, ALEATORIC_STD, TOTAL_STD):
        out[key] = _spread(recalibrated[key], units)
    if recalibration.has_interval:
        out[LOWER] = _location(recalibrated[LOWER], units)
        out[UPPER] = _location(recalibrated[UPPER], units)
    if ggd:
        count = tf.cast(t, tf.float32)
        out[ALPHA] = _spread(extras[0] / count * recalibration.aleatoric_scale, units)
        out[BETA] = extras[1] / count
    return out


def param_maps(params: tf.Tensor, family: str, *, units: Units = None) -> dict[str, tf.Tensor]:
    """Head parameters of one deterministic pass, raw and constrained.

    Args:
        params: ``(B, *spatial, P)`` unconstrained head channels.
        family: The head's family.
        units: ``(offset, scale)`` of the target normalisation, or None.

    Returns:
        dict: ``params`` (raw channels, normalised units, as the loss sees
        them) and the constrained ``loc`` (target units), ``scale`` (target
        units, not recalibrated) and ``power`` (beta, unitless) as the family
        has them, each ``(B, *spatial)`` float32.
    """
    named = constrain(check_family(family), params)
    out = {"params": params, "loc": _location(named["loc"], units)}
    if "scale" in named:
        out["scale"] = _spread(named["scale"], units)
    if "power" in named:
        out["power"] = named["power"]
    return out
