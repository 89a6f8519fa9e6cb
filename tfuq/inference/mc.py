"""Monte Carlo window predictor: T stochastic passes per window, streamed moments.

:func:`mc_predict_volume` is the whole-volume MC prediction of any tfuq
network: the window loop is :func:`tfuq.inference.engine.blend_windows`, the
window predictor (:func:`mc_window_predictor`) runs the model T times per
window with MC sampling on (:func:`tfuq.layers.mc_sampling`: dropout layers
sample, BatchNormalization stays in inference mode) and merges the passes
one forward call at a time into the streaming decomposition of
:mod:`tfuq.inference.streaming`, so memory depends on ``batch_size`` and the
window, never on T. Each forward call holds up to ``batch_size`` network
inputs: with ``T >= batch_size`` one window is tiled ``batch_size`` times
(one independent dropout mask per copy); with fewer samples several windows
are tiled ``T`` times each (:func:`sample_plan`).

The predictor also handles what tfuq's networks differ in: MultiRes networks
take one input per level; networks whose output is a dict (deep
supervision) or a list (UP-GAN phases) are reduced to their final
distribution parameters (:func:`tfuq.model_store.trained.head_params`);
a 2D network gets its windows with the size-1 axis squeezed; for the
generalized normal the MC means of the per-pass scale alpha and shape beta
are returned too (the ``alpha`` / ``beta`` maps, blended as weighted means).

Mathematical details:
    Per window, the T passes with means ``m_t`` and variances ``v_t`` give
    ``mean = (1/T) sum_t m_t``, ``epistemic = (1/T) sum_t (m_t - mean)^2``,
    ``aleatoric = (1/T) sum_t v_t`` (eq. 13-14); the windows are blended as
    the mixture described in :mod:`tfuq.inference.engine`.

Reference:
    Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016,
    arXiv:1506.02142. Barbano, Arridge, Jin, Tanno et al., "Uncertainty
    quantification in medical image synthesis", survey chapter, eq. (13)-(14).
    Klaser et al., SASHIMI 2020 (MultiRes inputs). Upadhyay et al., MICCAI
    2021 (alpha, beta maps).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfuq.checks import check_int
from tfuq.data.windows import check_window
from tfuq.distributions import check_family, constrain
from tfuq.inference.channel_fold import fold_channel_dropout
from tfuq.inference.decomposition import TOTAL_VAR, check_param_samples
from tfuq.inference.derived import derived_quantity, derived_update
from tfuq.inference.engine import MOMENT_KEYS, blend_windows, check_predictions, check_volume
from tfuq.inference.folding import fold_batch_norm
from tfuq.inference.prefix import split_at_stochastic
from tfuq.inference.streaming import (
    MomentState,
    batch_state,
    finalize,
    init_state,
    merge_states,
    update_state,
)
from tfuq.layers import iter_layers, mc_sampling, stochastic_layers
from tfuq.networks.outputs import head_params

__all__ = [
    "ALPHA",
    "BETA",
    "mc_predict_volume",
    "mc_window_moments",
    "mc_window_predictor",
    "sample_plan",
    "seeded_generators",
]

_LOG = logging.getLogger(__name__)
#: Key of the MC-mean generalized-normal scale map (normalised units).
ALPHA = "alpha"
#: Key of the MC-mean generalized-normal shape map.
BETA = "beta"
#: The streaming update as one graph (about 2x faster than eager on 96^3 windows).
_UPDATE = tf.function(update_state, reduce_retracing=True)
_MERGE = tf.function(merge_states, reduce_retracing=True)
#: Parameter batch ``(copies, B, *window, P)`` of one forward call -> None (e.g. a derived quantity).
ParamsHook = Callable[[np.ndarray], None]


def sample_plan(mc_samples: int, batch_size: int) -> tuple[int, int]:
    """How many windows go into a group and how many passes run per forward call.

    Args:
        mc_samples: T, stochastic passes per window, ``>= 1``.
        batch_size: Network inputs per forward call, ``>= 1``.

    Returns:
        ``(windows_per_group, samples_per_call)`` with
        ``windows_per_group * samples_per_call <= batch_size``:
        ``(1, min(T, batch_size))`` when ``T >= batch_size``, else
        ``(batch_size // T, T)``.

    Example:
        >>> sample_plan(50, 4), sample_plan(2, 8), sample_plan(3, 8)
        ((1, 4), (4, 2), (2, 3))
    """
    mc_samples = check_int(mc_samples, "mc_samples", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    windows = max(1, batch_size // mc_samples)
    return windows, max(1, min(mc_samples, batch_size // windows))


def mc_window_moments(
    sample_fn: Callable[[Any], Any],
    inputs: np.ndarray | Sequence[np.ndarray],
    family: str,
    mc_samples: int,
    *,
    samples_per_call: int,
    dtype: tf.DType | str = tf.float32,
    on_params: ParamsHook | None = None,
    prepare: Callable[[list], list] | None = None,
) -> MomentState:
    """Streaming decomposition of T stochastic predictions of a batch of windows.

    Args:
        sample_fn: Stochastic callable mapping ``(R, *window, C)`` (a list of
            such arrays when ``inputs`` is a list) to the unconstrained head
            channels ``(R, *window, params_size(family))``; each row must draw
            its own randomness.
        inputs: Windows ``(B, *window, C)``, or a list of one such array per
            MultiRes level.
        family: One of :data:`tfuq.distributions.FAMILIES`.
        mc_samples: T, passes per window, ``>= 1``.
        samples_per_call: Copies of the batch per call, ``>= 1``; each call
            sees ``B * min(samples_per_call, remaining)`` rows.
        dtype: Accumulator dtype. Default float32.
        on_params: Called with every call's checked parameters, reshaped to
            ``(copies, B, *window, P)``.
        prepare: Deterministic part of the network (:mod:`tfuq.inference.prefix`):
            called once on the list of level inputs; ``sample_fn`` is then
            called as ``sample_fn(features, copies)`` with its untiled list
            of outputs (batch ``B`` first) and returns the ``copies * B``
            rows (rows ``t * B + b``), tiling or folding the copies itself;
            without ``on_params`` it is called as ``sample_fn(features,
            copies, family)`` and returns the passes' moments
            (:func:`~tfuq.inference.streaming.batch_state`, computed in its
            graph). None: ``sample_fn`` takes the tiled inputs.

    Returns:
        The :class:`~tfuq.inference.MomentState` of shape ``(B, *window)``
        after T samples; its size does not depend on T.

    Raises:
        ValueError: Bad counts, or a prediction of the wrong shape or with
            non-finite values.
    """
    family = check_family(family)
    mc_samples = check_int(mc_samples, "mc_samples", minimum=1)
    samples_per_call = check_int(samples_per_call, "samples_per_call", minimum=1)
    levels = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    batch = len(levels[0])
    spatial = tuple(levels[0].shape[1:-1])
    state = init_state((batch, *spatial), dtype)
    feeds = levels if prepare is None else list(prepare(levels))
    done = 0
    while done < mc_samples:
        copies = min(samples_per_call, mc_samples - done)
        if prepare is not None and on_params is None:
            part = sample_fn(feeds, copies, family)
            _check_part(part, batch, spatial)
            state = _MERGE(state, part)
            done += copies
            continue
        if prepare is not None:
            out = sample_fn(feeds, copies)
        else:
            tiled = [_tile(x, copies) for x in feeds]
            out = sample_fn(tiled if isinstance(inputs, (list, tuple)) else tiled[0])
        if on_params is None and isinstance(out, tf.Tensor) and out.dtype == tf.float32:
            params = _checked_tensor(out, batch, copies, spatial)  # stays a tensor: no NumPy round trip
        else:
            params = check_predictions(out, batch * copies, spatial, name="model")
            params = params.reshape(copies, batch, *params.shape[1:])
        check_param_samples(family, params, "model output")
        state = _UPDATE(family, state, params)
        if on_params is not None:
            on_params(params)
        done += copies
    return state


@tf.function(reduce_retracing=True)
def _all_finite(x: Any) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(x)])


def _check_part(part: MomentState, batch: int, spatial: tuple[int, ...]) -> None:
    """Moments of some passes: shape ``(batch, *spatial)``, finite (a NaN or inf pass shows in them)."""
    if tuple(part.mean.shape) != (batch, *spatial):
        raise ValueError(
            f"model must map a batch (B, *window, C) to (B, *window, K). Expected maps ({batch}, "
            f"{', '.join(map(str, spatial))}). Received: {tuple(part.mean.shape)}"
        )
    if not bool(_all_finite((part.mean, part.m2, part.aleatoric))):
        raise ValueError("model returned NaN or infinite values.")


def _checked_tensor(out: tf.Tensor, batch: int, copies: int, spatial: tuple[int, ...]) -> tf.Tensor:
    """``out`` ``(copies * batch, *spatial, P)`` checked like :func:`check_predictions`, reshaped."""
    if out.shape.rank != len(spatial) + 2 or tuple(out.shape[:-1]) != (batch * copies, *spatial):
        check_predictions(out, batch * copies, spatial, name="model")  # raises with the usual message
    if not bool(_all_finite(out)):
        raise ValueError("model returned NaN or infinite values.")
    return tf.reshape(out, (copies, batch, *out.shape[1:]))


def _tile(x: Any, copies: int) -> Any:
    """``copies`` copies of a batch along axis 0 (NumPy stays NumPy, tensors stay on their device)."""
    if copies == 1:
        return x
    return np.concatenate([x] * copies, axis=0) if isinstance(x, np.ndarray) else tf.concat([x] * copies, 0)


def _generators(model: keras.layers.Layer) -> list[keras.random.SeedGenerator]:
    """Seed generators owned by the layers of ``model``, in a fixed traversal order."""
    found: list[keras.random.SeedGenerator] = []
    for layer in iter_layers(model):
        found.extend(v for v in vars(layer).values() if isinstance(v, keras.random.SeedGenerator))
    return found


@contextmanager
def seeded_generators(model: keras.layers.Layer, seed: int | None) -> Iterator[None]:
    """Context manager: the model's random streams restart from ``seed``, restored on exit.

    Every ``keras.random.SeedGenerator`` owned by a layer of ``model`` (found
    in a fixed traversal order, see :func:`tfuq.layers.iter_layers`) gets
    the state ``(key, 0)`` with ``key`` drawn from
    ``numpy.random.SeedSequence([seed, index])``, so generators never share a
    stream and the same seed replays the same dropout masks in the same call
    order. The previous states are put back on exit, leaving the model as
    it was.

    Args:
        model: A Keras model or layer.
        seed: Integer seed, or None to leave the generators untouched.

    Yields:
        None.

    Example:
        >>> with seeded_generators(model, 0), mc_sampling(model):  # doctest: +SKIP
        ...     a = model(x)
    """
    if seed is None:
        yield
        return
    generators = _generators(model)
    saved = [g.state.numpy() for g in generators]
    for index, generator in enumerate(generators):
        key = int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0] >> 1)
        generator.state.assign(np.array([key, 0]).astype(saved[index].dtype))
    try:
        yield
    finally:
        for generator, value in zip(generators, saved):
            generator.state.assign(value)


def _spatial_rank(model: keras.layers.Layer) -> int:
    """Spatial rank of the model's input (3 when it cannot be told)."""
    inputs = getattr(model, "inputs", None)
    try:
        return len(inputs[0].shape) - 2 if inputs else 3
    except (TypeError, IndexError, AttributeError):
        return 3


#: Compiled passes per model, traced with MC sampling on (reused across subjects and runs).
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(
    model: keras.layers.Layer, window: tuple[int, ...], levels: int
) -> tuple[Callable[[list], list] | None, Callable[..., Any]]:
    """Compiled MC pass ``(prepare, forward)``: level inputs -> float32 head parameters ``(B, *window, P)``.

    The graph is the network with BatchNormalization folded into the convolutions before it
    (:func:`tfuq.inference.folding.fold_batch_norm`). ``prepare`` (None when it does not split,
    :func:`tfuq.inference.prefix.split_at_stochastic`)
    computes the deterministic prefix once; ``forward(features, copies)`` the stochastic rest for ``copies``
    copies of its outputs (tiled, or channel dropout folded into the next convolution,
    :mod:`tfuq.inference.channel_fold`), or without a prefix the whole model on the tiled inputs.
    Traced under :func:`tfuq.layers.mc_sampling` (the switch is read when tracing), so they are only
    called inside that context; one pair per model and input layout is kept.
    """
    cache = _FORWARDS.setdefault(model, {})
    key = (window, levels)
    if key not in cache:
        cache[key] = _make_forward(model, window, levels)
    return cache[key]


def _make_forward(
    model: keras.layers.Layer, window: tuple[int, ...], levels: int
) -> tuple[Callable[[list], list] | None, Callable[..., Any]]:
    rank = _spatial_rank(model)
    axis: int | None = None
    if rank == 2:
        ones = [i for i, w in enumerate(window) if w == 1]
        if len(ones) != 1 or levels > 1:
            raise ValueError(
                f"A 2D model needs 2D windows: exactly one window axis of size 1. Received: window={window}"
            )
        axis = ones[0] + 1
    elif rank != 3:
        raise ValueError(f"Expected a model with 2 or 3 spatial axes. Received: input rank {rank + 2}")

    def network_input(inputs: list[tf.Tensor]) -> Any:
        x: Any = list(inputs) if levels > 1 else inputs[0]
        return tf.squeeze(x, axis=axis) if axis is not None else x

    def head_output(out: Any) -> tf.Tensor:
        out = head_params(out)
        if axis is not None:
            out = tf.expand_dims(out, axis=axis)
        return tf.cast(out, tf.float32)

    graph = fold_batch_norm(model) if isinstance(model, keras.Model) else model
    split = split_at_stochastic(graph) if isinstance(graph, keras.Model) else None
    if split is None:

        @tf.function(reduce_retracing=True)
        def forward(inputs: list[tf.Tensor]) -> tf.Tensor:
            return head_output(graph(network_input(inputs), training=False))

        return None, forward
    prefix, suffix = split
    folded = fold_channel_dropout(suffix)

    # Static shapes (no reduce_retracing): the channel fold loops over the group's windows, and a
    # run has at most two group sizes (full groups and the last one) and two copy counts.
    @tf.function
    def prepare(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        features = prefix(network_input(inputs), training=False)
        return list(features) if isinstance(features, (list, tuple)) else [features]

    @tf.function
    def stochastic(features: list[tf.Tensor], copies: int, family: str | None = None) -> Any:
        if folded is not None:
            params = head_output(folded(features[0], copies))
        else:
            tiled = [_tile(x, copies) for x in features]
            params = head_output(suffix(tiled if len(tiled) > 1 else tiled[0], training=False))
        if family is None:
            return params
        params = tf.reshape(params, tf.concat([[copies, -1], tf.shape(params)[1:]], axis=0))
        return batch_state(family, params)  # the passes' moments in the same graph: no (T, ...) round trip

    return prepare, stochastic


def mc_window_predictor(
    model: keras.layers.Layer,
    family: str,
    *,
    mc_samples: int,
    samples_per_call: int,
    window: Sequence[int],
    levels: int = 1,
    derived: Sequence[str] = (),
    units: Any = None,
    draws: int = 32,
    seed: int = 0,
) -> Callable[[list[np.ndarray]], dict[str, np.ndarray]]:
    """The window predictor of MC inference (call it inside :func:`tfuq.layers.mc_sampling`).

    Args:
        model: Keras network mapping ``(B, *window, C)`` -- or, for MultiRes,
            a list of one such array per level -- to head parameters
            ``(..., params_size(family))`` (or a dict/list holding them).
        family: The head's family.
        mc_samples: T, passes per window.
        samples_per_call: Copies of a group of windows per forward call.
        window: Window size per axis (a 2D model needs one axis of 1).
        levels: Inputs per window (MultiRes levels), ``>= 1``.
        derived: Names of derived quantities
            (:data:`tfuq.inference.derived.DERIVED_QUANTITIES`) whose moments
            are returned too, by double sampling of every pass
            (:func:`tfuq.inference.derived.derived_update`).
        units: The model's target normalisation (``y * scale + offset`` gives
            the target units the derived quantities take); None: identity.
        draws: S, draws per pass for the derived quantities.
        seed: Seed of those draws; the n-th call uses ``seed + n``, so window
            groups draw independently and a run is reproducible.

    Returns:
        :data:`tfuq.inference.engine.WindowPredictor` returning ``mean``,
        ``epistemic_var``, ``aleatoric_var`` (``alpha``, ``beta`` for the
        generalized normal; ``<q>_mean``, ``<q>_epistemic_var``,
        ``<q>_aleatoric_var`` for every derived quantity q, in its own unit)
        per window.
    """
    family = check_family(family)
    prepare, forward = _forward(model, tuple(window), levels)
    quantities = {name: derived_quantity(name).fn for name in derived}
    calls = [0]

    def predict(inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        sums: dict[str, np.ndarray] = {}
        shape = (len(inputs[0]), *inputs[0].shape[1:-1])
        states = {name: init_state(shape, tf.float32) for name in quantities}
        group_seed = int(seed) + calls[0]
        calls[0] += 1

        def on_params(params: np.ndarray) -> None:
            if family == "generalized_normal":
                named = constrain(family, params)
                for key, name in ((ALPHA, "scale"), (BETA, "power")):
                    total = named[name].numpy().sum(axis=0)
                    sums[key] = total if key not in sums else sums[key] + total
            for name, fn in quantities.items():
                states[name] = derived_update(
                    states[name], family, params, fn, units, draws=draws, seed=group_seed
                )

        hook = on_params if family == "generalized_normal" or quantities else None
        state = mc_window_moments(
            forward,
            list(inputs),
            family,
            mc_samples,
            samples_per_call=samples_per_call,
            on_params=hook,
            prepare=prepare,
        )
        maps = {key: value.numpy() for key, value in finalize(state).items() if key != TOTAL_VAR}
        maps.update({key: value / mc_samples for key, value in sums.items()})
        for name, derived_state in states.items():
            moments = finalize(derived_state)
            maps.update({f"{name}_{key}": moments[key].numpy() for key in MOMENT_KEYS})
        return maps

    return predict


def mc_predict_volume(
    model: keras.layers.Layer,
    volume: Any,
    family: str,
    *,
    mc_samples: int,
    window: int | Sequence[int],
    overlap: float = 0.5,
    blending: str = "gaussian",
    border: int | Sequence[int] = 0,
    batch_size: int = 4,
    seed: int | None = None,
    factors: Sequence[int] = (),
    padding_mode: str = "minimum",
    pad_value: float | Sequence[float] | None = None,
    progress: Callable[[int], None] | None = None,
    derived: Sequence[str] = (),
    units: Any = None,
    derived_draws: int = 32,
) -> dict[str, np.ndarray]:
    """Epistemic / aleatoric maps of a whole volume by MC sampling over windows.

    Args:
        model: Keras network mapping ``(B, *window, C)`` -- or, for MultiRes,
            a list of one such array per level -- to head parameters
            ``(..., params_size(family))`` (or a dict/list holding them); a 2D
            network maps ``(B, H, W, C)`` and needs a window of size 1 along
            one axis.
        volume: Normalised inputs ``(X, Y, Z, C)``, any size (padded to the
            window and cropped back).
        family: The head's family, one of :data:`tfuq.distributions.FAMILIES`.
        mc_samples: T, stochastic passes per window, ``>= 1`` (1 for a
            deterministic model: the epistemic map is then 0).
        window: Window size, one int or three.
        overlap: Fraction of a window shared with its neighbour, ``[0, 1)``.
        blending: ``"constant"``, ``"gaussian"`` or ``"hann"``.
        border: ``[INFERENCE] border`` (see
            :func:`tfuq.data.windows.window_grid`). Default 0.
        batch_size: Network inputs per forward call (windows x passes),
            ``>= 1``: the memory budget.
        seed: Reset the model's dropout streams from this seed for the run
            (restored afterwards, :func:`seeded_generators`), so the result
            is reproducible; None continues them.
        factors: MultiRes downsampling factors, finest first; ``()`` for one
            input.
        padding_mode: How inputs are padded outside the volume:
            ``"minimum"``/``"constant"`` (``pad_value``, default the channel
            minima, as at training), ``"edge"``, ``"reflect"`` or
            ``"symmetric"``.
        pad_value: Fill of constant padding; None: channel minima.
        progress: Called with the number of windows finished after each group.
        derived: Derived quantities to propagate the uncertainty to, e.g.
            ``("mu_map_511kev",)`` (:mod:`tfuq.inference.derived`).
        units: Target normalisation of the model (the derived quantities
            take target units); None: identity.
        derived_draws: S, draws per pass for the derived quantities.

    Returns:
        dict of float32 ``(X, Y, Z)`` maps in normalised units: ``"mean"``,
        ``"epistemic_var"``, ``"aleatoric_var"``, ``"total_var"``, for
        the generalized normal ``"alpha"`` (scale) and ``"beta"`` (shape),
        and ``"<q>_mean"``, ``"<q>_epistemic_var"``, ``"<q>_aleatoric_var"``,
        ``"<q>_total_var"`` in q's unit for every derived quantity q.

    Raises:
        ValueError: Bad volume, family, counts, window, overlap, blending or
            border; a model output of the wrong shape or with non-finite
            values; a 2D model with windows that are not 2D.

    Example:
        >>> maps = mc_predict_volume(model, mr, "normal", mc_samples=20,
        ...                          window=32, seed=0)  # doctest: +SKIP
    """
    family = check_family(family)
    volume = check_volume(volume).astype(np.float32, copy=False)
    windows_per_group, samples_per_call = sample_plan(mc_samples, batch_size)
    if mc_samples > 1 and not stochastic_layers(model):
        _LOG.warning("The model has no MC-sampling layer: all %d passes are identical.", mc_samples)
    factors = tuple(int(f) for f in factors)
    with mc_sampling(model), seeded_generators(model, seed):
        predictor = mc_window_predictor(
            model,
            family,
            mc_samples=mc_samples,
            samples_per_call=samples_per_call,
            window=check_window(window),
            levels=max(1, len(factors)),
            derived=derived,
            units=units,
            draws=derived_draws,
            seed=0 if seed is None else seed,
        )
        return blend_windows(
            volume,
            predictor,
            window,
            overlap=overlap,
            blending=blending,
            border=border,
            windows_per_call=windows_per_group,
            factors=factors,
            padding_mode=padding_mode,
            pad_value=pad_value,
            progress=progress,
        )
