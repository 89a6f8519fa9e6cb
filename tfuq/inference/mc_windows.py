"""Whole-volume MC prediction for any tfuq network: MultiRes levels per window, GGD maps, progress.

The same computation as :func:`tfuq.inference.mc_predict_volume` (same
window grid, same grouping of windows and passes per forward call, same
seeded dropout streams, same mixture blending over overlaps; with equal
arguments the maps agree to float round-off), extended where the job needs
more:

- MultiRes networks take one input per level: for every window the levels
  are cut from the unpadded volume around it (:func:`tfuq.data.multires.multires_windows`,
  padded by ``[NETWORK] volume_padding_mode`` as at training);
- networks whose output is a dict (deep supervision) or a list (UP-GAN
  phases) are reduced to their final distribution parameters;
- for the generalized normal the MC means of the per-pass scale alpha and
  shape beta are blended like the mean (the ``_alpha`` / ``_beta`` maps);
- ``[INFERENCE] border`` voxels are dropped from each side of every
  window's maps before blending (:meth:`tfuq.inference.windows.WindowGrid.kept`);
- a ``progress`` callback is told how many windows are done.

Mathematical details:
    As in :mod:`tfuq.inference.mc`: window ``i`` with blending weight
    ``w_i(v)`` and T passes gives mean ``m_i``, epistemic ``e_i`` and
    aleatoric ``a_i``; with ``u_i = w_i / sum_j w_j``::

        mean = sum_i u_i m_i,   epistemic = sum_i u_i e_i + sum_i u_i (m_i - mean)^2,
        aleatoric = sum_i u_i a_i,   alpha = sum_i u_i mean_t alpha_it  (same for beta)

Reference:
    Gal & Ghahramani, ICML 2016, arXiv:1506.02142. Klaser et al., SASHIMI
    2020 (MultiRes inputs). Upadhyay et al., "Uncertainty-guided progressive
    GANs for medical image translation", MICCAI 2021 (alpha, beta maps).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfuq.data.multires import multires_windows
from tfuq.distributions import check_family, constrain
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR, MEAN, TOTAL_VAR
from tfuq.inference.mc import sample_plan, seeded_generators
from tfuq.inference.sliding_window import check_predictions, check_volume
from tfuq.inference.streaming import MomentState, finalize, init_state, update_state
from tfuq.inference.trained_model import head_params
from tfuq.inference.windows import (
    WindowGrid,
    blending_weights,
    check_window,
    merge_window_moments,
    pad_volume,
    window_grid,
)
from tfuq.layers import mc_sampling, stochastic_layers

__all__ = ["ALPHA", "BETA", "count_windows", "mc_predict_windows"]

_LOG = logging.getLogger(__name__)
#: Key of the MC-mean generalized-normal scale map (normalised units).
ALPHA = "alpha"
#: Key of the MC-mean generalized-normal shape map.
BETA = "beta"
_UPDATE = tf.function(update_state, reduce_retracing=True)


def count_windows(
    shape: Sequence[int], window: int | Sequence[int], overlap: float, border: int | Sequence[int] = 0
) -> int:
    """Number of windows :func:`mc_predict_windows` runs on a volume of spatial ``shape``."""
    return window_grid(tuple(shape), check_window(window), overlap, border).num_windows


def _spatial_rank(model: keras.Model) -> int:
    inputs = getattr(model, "inputs", None)
    try:
        return len(inputs[0].shape) - 2 if inputs else 3
    except (TypeError, IndexError, AttributeError):
        return 3


#: Compiled passes per model, traced with MC sampling on (reused across subjects and runs).
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model: keras.Model, window: tuple[int, ...], levels: int) -> Callable[[list[np.ndarray]], Any]:
    """Compiled MC pass: a list of level inputs -> float32 head parameters ``(B, *window, P)``.

    Traced under :func:`tfuq.layers.mc_sampling` (the switch is read when tracing), so it is
    only called inside that context; one function per model and input layout is kept.
    """
    cache = _FORWARDS.setdefault(model, {})
    key = (window, levels)
    if key not in cache:
        cache[key] = _make_forward(model, window, levels)
    return cache[key]


def _make_forward(
    model: keras.Model, window: tuple[int, ...], levels: int
) -> Callable[[list[np.ndarray]], Any]:
    axis: int | None = None
    if _spatial_rank(model) == 2:
        ones = [i for i, w in enumerate(window) if w == 1]
        if len(ones) != 1 or levels > 1:
            raise ValueError(
                f"A 2D model needs 2D windows: exactly one window axis of size 1. Received: window={window}"
            )
        axis = ones[0] + 1

    @tf.function(reduce_retracing=True)
    def forward(inputs: list[tf.Tensor]) -> tf.Tensor:
        x: Any = list(inputs) if levels > 1 else inputs[0]
        if axis is not None:
            x = tf.squeeze(x, axis=axis)
        out = head_params(model(x, training=False))
        if axis is not None:
            out = tf.expand_dims(out, axis=axis)
        return tf.cast(out, tf.float32)

    return forward


def _window_inputs(
    values: np.ndarray,
    padded: np.ndarray,
    grid: WindowGrid,
    origins: np.ndarray,
    factors: tuple[int, ...],
    context_mode: str,
    minima: np.ndarray,
) -> list[np.ndarray]:
    """Network inputs of a group of windows: ``[windows]``, or one array per MultiRes level."""
    if not factors:
        return [np.stack([padded[grid.slices(o)] for o in origins])]
    before = np.array([lo for lo, _ in grid.padding])
    per_window = [
        multires_windows(values, o - before, grid.window, factors, mode=context_mode, cval=minima)
        for o in origins
    ]
    return [np.stack([w[k] for w in per_window]).astype(np.float32) for k in range(len(factors))]


def _group_moments(
    forward: Callable[[list[np.ndarray]], Any],
    inputs: list[np.ndarray],
    family: str,
    mc_samples: int,
    samples_per_call: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Decomposition (and GGD alpha/beta MC means) of one group of windows over T passes."""
    batch = len(inputs[0])
    spatial = tuple(inputs[0].shape[1:-1])
    state = init_state((batch, *spatial), tf.float32)
    sums: dict[str, np.ndarray] = {}
    done = 0
    while done < mc_samples:
        copies = min(samples_per_call, mc_samples - done)
        tiled = [np.concatenate([x] * copies, axis=0) if copies > 1 else x for x in inputs]
        params = check_predictions(forward(tiled), batch * copies, spatial, name="model")
        params = params.reshape(copies, batch, *params.shape[1:])
        state = _UPDATE(family, state, params)
        if family == "generalized_normal":
            named = constrain(family, params)
            for key, name in ((ALPHA, "scale"), (BETA, "power")):
                total = named[name].numpy().sum(axis=0)
                sums[key] = total if key not in sums else sums[key] + total
        done += copies
    maps = {key: value.numpy() for key, value in finalize(state).items()}
    return maps, {key: value / mc_samples for key, value in sums.items()}


def mc_predict_windows(
    model: keras.Model,
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
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Epistemic / aleatoric maps of a whole volume by MC sampling over windows.

    Args:
        model: Keras network mapping ``(B, *window, C)`` -- or, for MultiRes,
            a list of one such array per level -- to head parameters
            ``(..., params_size(family))`` (or a dict/list holding them).
        volume: Normalised inputs ``(X, Y, Z, C)``, any size.
        family: The head's family.
        mc_samples: T, stochastic passes per window, ``>= 1``.
        window: Window size (one int or three; a 2D model needs one axis of 1).
        overlap: Fraction of a window shared with its neighbour, ``[0, 1)``.
        blending: ``"constant"``, ``"gaussian"`` or ``"hann"``.
        border: ``[INFERENCE] border``: voxels of each window's maps dropped
            on each side before blending (one int or one per axis; see
            :func:`tfuq.inference.windows.window_grid`). Default 0.
        batch_size: Network inputs per forward call (windows x passes).
        seed: Reset the model's dropout streams from this seed for the run
            (restored afterwards); None continues them.
        factors: MultiRes downsampling factors, finest first; ``()`` for one
            input.
        padding_mode: How inputs are padded outside the volume:
            ``"minimum"``/``"constant"`` (channel minima, as at training),
            ``"edge"``, ``"reflect"`` or ``"symmetric"``.
        progress: Called with the number of windows finished after each group.

    Returns:
        dict of float32 ``(X, Y, Z)`` maps in normalised units: ``"mean"``,
        ``"epistemic_var"``, ``"aleatoric_var"``, ``"total_var"``, and for
        the generalized normal ``"alpha"`` (scale) and ``"beta"`` (shape).

    Raises:
        ValueError: bad volume, window, counts, or a model output of the
            wrong shape or with non-finite values.

    Example:
        >>> maps = mc_predict_windows(model, mr, "normal", mc_samples=20,
        ...                           window=32, seed=0)  # doctest: +SKIP
    """
    family = check_family(family)
    values = check_volume(volume).astype(np.float32, copy=False)
    factors = tuple(int(f) for f in factors)
    grid = window_grid(values.shape[:3], check_window(window), overlap, border)
    weights = blending_weights(grid.window, blending).astype(np.float32)
    windows_per_group, samples_per_call = sample_plan(mc_samples, batch_size)
    if mc_samples > 1 and not stochastic_layers(model):
        _LOG.warning("The model has no MC-sampling layer: all %d passes are identical.", mc_samples)
    constant = padding_mode in ("minimum", "constant")
    padded = pad_volume(values, grid, pad_mode="constant" if constant else padding_mode)
    minima = values.reshape(-1, values.shape[-1]).min(axis=0)
    acc = MomentState(*(np.zeros(grid.padded_shape, np.float32) for _ in range(4)))
    extras: dict[str, np.ndarray] = {}
    origins_all = grid.origins
    with mc_sampling(model), seeded_generators(model, seed):
        forward = _forward(model, grid.window, max(1, len(factors)))
        for first in range(0, len(origins_all), windows_per_group):
            origins = origins_all[first : first + windows_per_group]
            inputs = _window_inputs(values, padded, grid, origins, factors, padding_mode, minima)
            maps, means = _group_moments(forward, inputs, family, mc_samples, samples_per_call)
            for k, origin in enumerate(origins):
                index, local = merge_window_moments(
                    acc, grid, origin, weights, maps[MEAN][k], maps[EPISTEMIC_VAR][k], maps[ALEATORIC_VAR][k]
                )
                for key, value in means.items():
                    blended = extras.setdefault(key, np.zeros(grid.padded_shape, np.float32))
                    blended[index] += weights[local] * value[k][local]
            if progress is not None:
                progress(len(origins))
    count = grid.crop(acc.count)
    epistemic = grid.crop(acc.m2) / count
    aleatoric = np.ascontiguousarray(grid.crop(acc.aleatoric))
    out = {
        MEAN: np.ascontiguousarray(grid.crop(acc.mean)),
        EPISTEMIC_VAR: epistemic,
        ALEATORIC_VAR: aleatoric,
        TOTAL_VAR: epistemic + aleatoric,
    }
    out.update({key: grid.crop(value) / count for key, value in extras.items()})
    return out
