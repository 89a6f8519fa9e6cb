"""Streaming epistemic / aleatoric decomposition: memory independent of T.

The same quantities as :func:`tfuq.inference.decompose`, accumulated one batch
of stochastic passes at a time, so a volume can be sampled T = 50 or 500 times
while only four per-voxel maps are kept. The maths is a pure functional core
(:func:`init_state`, :func:`update_state`, :func:`finalize` on tensors, usable
inside ``tf.function`` and ``tf.while_loop``); :class:`StreamingDecomposition`
is a thin eager wrapper that holds the state.

Mathematical details:
    The state is ``(n, mean, m2, aleatoric)``: the number of samples so far,
    the running mean of member means, the running sum of squared deviations
    of member means from that mean, and the running mean of member variances.
    A batch of ``b`` samples with batch mean ``mean_b``, batch sum of squared
    deviations ``m2_b`` (two-pass) and batch mean variance ``v_b`` is merged
    with Chan et al.'s parallel update (Welford's update when ``b = 1``)::

        delta     = mean_b - mean
        n'        = n + b
        mean'     = mean + delta * b / n'
        m2'       = m2 + m2_b + delta^2 * n * b / n'
        aleatoric'= aleatoric + (v_b - aleatoric) * b / n'

    and finally ``epistemic_var = m2 / n`` (population form, as the batch
    decomposition). No sum of squares of raw values is ever formed, so a large
    common offset (CT in HU) does not cancel catastrophically.

Reference:
    Welford, "Note on a method for calculating corrected sums of squares and
    products", Technometrics 4(3), 1962, doi:10.1080/00401706.1962.10490022.
    Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for
    computing sample variances", Stanford CS report STAN-CS-79-773, 1979.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from tfuq.distributions import check_family
from tfuq.inference.decomposition import (
    ALEATORIC_VAR,
    EPISTEMIC_VAR,
    MEAN,
    TOTAL_VAR,
    member_moments,
)

__all__ = [
    "MomentState",
    "StreamingDecomposition",
    "batch_state",
    "finalize",
    "init_state",
    "merge_states",
    "update_state",
]


class MomentState(NamedTuple):
    """Running moments of T predictive samples (a ``tf.nest`` structure).

    Attributes:
        count: Scalar float tensor, number of samples merged so far.
        mean: Running mean of the member means, shape ``(...)``.
        m2: Running sum of squared deviations of the member means, ``(...)``.
        aleatoric: Running mean of the member variances, ``(...)``.
    """

    count: tf.Tensor
    mean: tf.Tensor
    m2: tf.Tensor
    aleatoric: tf.Tensor


def init_state(shape: Any, dtype: tf.DType | str = tf.float32) -> MomentState:
    """Empty running state for per-voxel maps of ``shape``.

    Args:
        shape: Shape of one sample without the channel axis, e.g. ``(D, H, W)``;
            a list, ``tf.TensorShape`` or 1-D int tensor (dynamic shapes work
            inside ``tf.function``).
        dtype: Floating dtype of the accumulators. Default float32; use float64
            for reference computations.

    Returns:
        A :class:`MomentState` with ``count = 0`` and zero maps.

    Example:
        >>> state = init_state((4, 4))
        >>> int(state.count)
        0
    """
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise ValueError(f"The accumulators must be floating point. Received: dtype={dtype.name}")
    zeros = tf.zeros(shape, dtype=dtype)
    return MomentState(tf.zeros((), dtype=dtype), zeros, zeros, zeros)


def merge_states(a: MomentState, b: MomentState) -> MomentState:
    """Combine two running states (Chan et al. parallel update).

    Args:
        a: State of one group of samples.
        b: State of another group (same map shape and dtype).

    Returns:
        The state of the union of both groups. Merging with an empty state
        returns the other one unchanged.
    """
    n = a.count + b.count
    # Empty + empty stays empty without dividing by zero.
    frac_b = tf.math.divide_no_nan(b.count, n)
    delta = b.mean - a.mean
    mean = a.mean + delta * frac_b
    m2 = a.m2 + b.m2 + tf.square(delta) * a.count * frac_b
    aleatoric = a.aleatoric + (b.aleatoric - a.aleatoric) * frac_b
    return MomentState(n, mean, m2, aleatoric)


def update_state(family: str, state: MomentState, param_batch: Any) -> MomentState:
    """Merge a batch of one or several parameter samples into ``state``.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        state: Running state from :func:`init_state` or a previous update.
        param_batch: Unconstrained head channels of ``b >= 1`` stochastic
            passes, shape ``(b, ..., params_size(family))``; cast to the
            state's dtype.

    Returns:
        The updated :class:`MomentState` (the input is not modified).

    Raises:
        ValueError: wrong channel count or an empty batch.
    """
    return merge_states(state, batch_state(family, param_batch, state.mean.dtype))


def batch_state(family: str, param_batch: Any, dtype: tf.DType | str = tf.float32) -> MomentState:
    """The running state of one batch of parameter samples on its own.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        param_batch: Unconstrained head channels of ``b >= 1`` passes,
            ``(b, ..., params_size(family))``; cast to ``dtype``.
        dtype: Accumulator dtype. Default float32.

    Returns:
        :class:`MomentState` with ``count = b`` (merge it with
        :func:`merge_states`).
    """
    batch = tf.cast(tf.convert_to_tensor(param_batch), dtype)
    means, variances = member_moments(family, batch)
    b = tf.cast(tf.shape(means)[0], dtype)
    batch_mean = tf.reduce_mean(means, axis=0)
    batch_m2 = tf.reduce_sum(tf.square(means - batch_mean), axis=0)
    return MomentState(b, batch_mean, batch_m2, tf.reduce_mean(variances, axis=0))


def finalize(state: MomentState) -> dict[str, tf.Tensor]:
    """Decomposition dictionary from a running state.

    Args:
        state: A :class:`MomentState` with ``count >= 1``.

    Returns:
        dict keyed :data:`~tfuq.inference.decomposition.MEAN`,
        ``EPISTEMIC_VAR``, ``ALEATORIC_VAR``, ``TOTAL_VAR`` (population form,
        identical to :func:`tfuq.inference.decompose` on all samples). With
        ``count == 0`` inside a graph the variances are NaN.

    Raises:
        ValueError: eagerly, when no sample was merged.
    """
    count = tf.get_static_value(state.count)
    if count is not None and float(count) == 0.0:
        raise ValueError(
            "No sample was accumulated. Expected at least one update before finalize. Received: state.count=0"
        )
    epistemic = state.m2 / state.count
    return {
        MEAN: state.mean,
        EPISTEMIC_VAR: epistemic,
        ALEATORIC_VAR: state.aleatoric,
        TOTAL_VAR: epistemic + state.aleatoric,
    }


class StreamingDecomposition:
    """Eager accumulator of the variance decomposition, one batch at a time.

    Holds only the family and a :class:`MomentState`; the maths is in
    :func:`update_state` and :func:`finalize`.

    Args:
        family: One of :data:`tfuq.distributions.FAMILIES`.
        dtype: Accumulator dtype, or None (default) to take the dtype of the
            first batch (float32 for integer input).

    Example:
        >>> acc = StreamingDecomposition("normal")
        >>> for _ in range(10):
        ...     acc.update(tf.random.normal((1, 8, 8, 2)))
        >>> acc.result()["epistemic_var"].shape
        TensorShape([8, 8])
    """

    def __init__(self, family: str, dtype: tf.DType | str | None = None) -> None:
        self.family = check_family(family)
        self.dtype = None if dtype is None else tf.as_dtype(dtype)
        if self.dtype is not None and not self.dtype.is_floating:
            raise ValueError(f"The accumulators must be floating point. Received: dtype={self.dtype.name}")
        self.state: MomentState | None = None

    @property
    def count(self) -> int:
        """Number of samples merged so far."""
        return 0 if self.state is None else int(self.state.count.numpy())

    def reset(self) -> None:
        """Forget every sample merged so far."""
        self.state = None

    def update(self, param_batch: Any) -> StreamingDecomposition:
        """Merge a batch ``(b, ..., params_size(family))`` of samples; returns self."""
        batch = tf.convert_to_tensor(param_batch)
        if self.state is None:
            dtype = self.dtype or (batch.dtype if batch.dtype.is_floating else tf.float32)
            if batch.shape.rank is None or batch.shape.rank < 2:
                raise ValueError(
                    "param_batch needs a leading sample axis and a channel axis. "
                    f"Expected shape (b, ..., P). Received: shape {tuple(batch.shape)}"
                )
            self.state = init_state(tf.shape(batch)[1:-1], dtype)
        elif tuple(batch.shape[1:-1]) != tuple(self.state.mean.shape):
            raise ValueError(
                f"Every batch must have the spatial shape of the first one, "
                f"{tuple(self.state.mean.shape)}. Received: param_batch with shape "
                f"{tuple(batch.shape)}"
            )
        self.state = update_state(self.family, self.state, batch)
        return self

    def result(self) -> dict[str, tf.Tensor]:
        """The decomposition of every sample merged so far (see :func:`finalize`)."""
        if self.state is None:
            raise ValueError(
                "No sample was accumulated. Expected at least one update() before "
                "result(). Received: no batch"
            )
        return finalize(self.state)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as a plain dict."""
        return {"family": self.family, "dtype": None if self.dtype is None else self.dtype.name}
