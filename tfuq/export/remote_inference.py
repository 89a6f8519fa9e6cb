"""Whole-volume inference through a served model: tile, send, blend, write the maps of ``tfuq infer``.

The volume goes through the same window loop as local inference
(:func:`tfuq.inference.engine.blend_windows`: same padding, window origins,
MultiRes levels and blending weights); its window predictor sends each batch
of windows to the server (:class:`~tfuq.export.client.ServingClient`),
whose ``serving_default`` answers mean and std maps per window (MC inside the
SavedModel), and the windows are blended into whole-volume maps; with
``[INFERENCE] border`` only each window's kept centre is blended
(:meth:`tfuq.data.windows.WindowGrid.kept`), as in local inference.

Mathematical details:
    Overlapping windows are blended as the mixture of their predictive
    distributions, by the engine, exactly as local inference
    (normalised weights ``u_i``)::

        mean          = sum_i u_i m_i
        epistemic_var = sum_i u_i e_i + sum_i u_i (m_i - mean)^2
        aleatoric_var = sum_i u_i a_i,    total_std = sqrt(epistemic_var + aleatoric_var)

    merged window by window with Chan et al.'s update
    (:func:`tfuq.inference.merge_states`, weight as count, float64). A
    recalibrated SavedModel returns ``bound = mean + c * total_std`` with
    constants c fixed at export; they are read back from the outputs and the
    interval is rebuilt from the blended mean and total std, as ``tfuq infer``
    builds it from its blended moments (blending the windows' bounds would
    give another interval where windows disagree). ``alpha`` and ``beta`` are
    blended as weighted means. With an isotonic map the served stds carry its
    factor k already, so the spread between windows' means enters unscaled
    here and scaled by k locally: equal without overlap or where windows
    agree (a SavedModel output carrying k would make them equal everywhere).
    Because the units map is affine, blending served target-unit maps equals
    blending normalised maps and converting afterwards.

Reference:
    Chan, Golub & LeVeque 1979 (pairwise variance updates); TF Serving REST
    API, https://www.tensorflow.org/tfx/serving/api_rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfuq.checks import check_int
from tfuq.config import Config, InputSource
from tfuq.data.normalisation import NormalisationParams
from tfuq.data.windows import check_window
from tfuq.errors import UserError
from tfuq.export.archive import SERVING_DEFAULT, input_names
from tfuq.export.client import ServingClient
from tfuq.export.mc_graph import LOWER, UPPER
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR, MEAN, TOTAL_VAR
from tfuq.inference.engine import blend_windows, check_volume
from tfuq.inference.outputs import ALEATORIC_STD, EPISTEMIC_STD, TOTAL_STD, write_outputs

__all__ = ["serve_subject", "serve_volume"]

_MOMENT_KEYS = (MEAN, EPISTEMIC_STD, ALEATORIC_STD)
#: Served maps that are locations (may be negative), not spreads.
_LOCATIONS = (MEAN, LOWER, UPPER)
_INTERVAL_KEYS = (LOWER, UPPER)


def _check_outputs(
    outputs: Mapping[str, np.ndarray], batch: int, window: tuple[int, ...], squeeze: int | None
):
    missing = [k for k in _MOMENT_KEYS if k not in outputs]
    if missing:
        raise UserError(f"serving answer lacks {missing}; is this a tfuq SavedModel's serving_default?")
    checked = {}
    for key, value in outputs.items():
        array = np.asarray(value, dtype=np.float64)
        if squeeze is not None:
            array = np.expand_dims(array, axis=squeeze)
        if array.shape != (batch, *window):
            raise UserError(
                f"serving answer {key!r} has shape {array.shape}; expected {(batch, *window)} for "
                f"{batch} window(s) of {window}"
            )
        if not np.all(np.isfinite(array)):
            raise UserError(f"serving answer {key!r} holds NaN or infinite values")
        checked[key] = array
    return checked


def _interval_constants(outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """The constants c of ``bound = mean + c * total_std`` the SavedModel applies (fixed at export).

    Read back at the voxel of largest total std of a batch (none yet when every std is 0), so the
    served interval is rebuilt from the blended mean and std, as ``tfuq infer`` builds its own.
    """
    std = outputs[TOTAL_STD]
    at = np.unravel_index(int(np.argmax(std)), std.shape)
    if not std[at] > 0:
        return {}
    return {key: float((outputs[key][at] - outputs[MEAN][at]) / std[at]) for key in _INTERVAL_KEYS}


def serve_volume(
    client: ServingClient,
    volume: Any,
    window: int | Sequence[int],
    *,
    overlap: float = 0.5,
    blending: str = "gaussian",
    border: int | Sequence[int] = 0,
    batch_size: int = 4,
    spatial_rank: int = 3,
    factors: Sequence[int] | None = None,
    signature: str = SERVING_DEFAULT,
    padding_mode: str = "minimum",
) -> dict[str, np.ndarray]:
    """Mean and uncertainty maps of a whole volume from a served model.

    Args:
        client: Client of a model exported by :func:`tfuq.export.export_saved_model`.
        volume: ``(X, Y, Z, C)`` input, normalised as at training.
        window: The model's window, one int or three (a 2D model: one axis 1).
        overlap: Fraction of a window shared with its neighbour, [0, 1).
        blending: ``"constant"``, ``"gaussian"`` or ``"hann"``.
        border: ``[INFERENCE] border``: voxels of each window's maps dropped
            on each side before blending, one int or one per axis (see
            :func:`tfuq.data.windows.window_grid`). Default 0.
        batch_size: Windows per request, ``>= 1``.
        spatial_rank: 2 for a 2D model (the size-1 window axis is dropped in
            requests), else 3.
        factors: MultiRes downsampling factors (inputs ``windows_x<f>`` are
            built per window, see :func:`tfuq.data.windows.multires_windows`);
            None for single-input models.
        signature: Signature to call. Default ``serving_default``.
        padding_mode: How inputs are padded outside the volume, as
            ``[NETWORK] volume_padding_mode``: ``"minimum"``/``"constant"``
            (channel minima), ``"edge"``, ``"reflect"`` or ``"symmetric"``.

    Returns:
        dict of float32 ``(X, Y, Z)`` maps: ``mean``, ``epistemic_std``,
        ``aleatoric_std``, ``total_std`` (in the units the server answers,
        blended as mixtures) and any other output (``lower95``, ``upper95``,
        ``alpha``, ``beta``) blended as a weighted mean.

    Raises:
        ValueError: bad volume, window, overlap, blending, border or batch size.
        UserError: a server error or an answer of the wrong shape.
    """
    sizes = check_window(window)
    squeeze = None
    if spatial_rank == 2:
        ones = [i for i, w in enumerate(sizes) if w == 1]
        if len(ones) != 1:
            raise ValueError(f"A 2D model needs exactly one window axis of size 1. Received: window={sizes}")
        squeeze = ones[0] + 1
    elif spatial_rank != 3:
        raise ValueError(f"Expected spatial_rank 2 or 3. Received: spatial_rank={spatial_rank!r}")
    check_int(batch_size, "batch_size", minimum=1)
    names = input_names(factors)
    interval: dict[str, float] = {}

    def predict(inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        request = {name: x for name, x in zip(names, inputs)}
        if squeeze is not None:
            request[names[0]] = np.squeeze(request[names[0]], axis=squeeze)
        outputs = _check_outputs(client.predict(request, signature), len(inputs[0]), sizes, squeeze)
        if _INTERVAL_KEYS[0] in outputs and not interval:
            interval.update(_interval_constants(outputs))
        maps = {
            key: value
            for key, value in outputs.items()
            if key not in (*_MOMENT_KEYS, TOTAL_STD, *_INTERVAL_KEYS)
        }
        maps.update(
            {
                MEAN: outputs[MEAN],
                EPISTEMIC_VAR: outputs[EPISTEMIC_STD] ** 2,
                ALEATORIC_VAR: outputs[ALEATORIC_STD] ** 2,
            }
        )
        return maps

    blended = blend_windows(
        check_volume(volume).astype(np.float32, copy=False),
        predict,
        sizes,
        overlap=overlap,
        blending=blending,
        border=border,
        windows_per_call=batch_size,
        factors=tuple(factors or ()),
        padding_mode=padding_mode,
        dtype=np.float64,
    )
    maps = {
        MEAN: blended.pop(MEAN),
        EPISTEMIC_STD: np.sqrt(blended.pop(EPISTEMIC_VAR)),
        ALEATORIC_STD: np.sqrt(blended.pop(ALEATORIC_VAR)),
        TOTAL_STD: np.sqrt(blended.pop(TOTAL_VAR)),
        **dict(sorted(blended.items())),
    }
    for key, c in interval.items():
        maps[key] = maps[MEAN] + c * maps[TOTAL_STD]
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in maps.items()}


def serve_subject(
    client: ServingClient,
    config: Config,
    subject: str,
    files: Mapping[str, Path],
    *,
    units: NormalisationParams | None = None,
    sources: Mapping[str, InputSource] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Infer one subject through a served model and write the files of ``tfuq infer``.

    The inputs are read and normalised exactly as ``tfuq infer`` does
    (:func:`tfuq.inference.subject_inputs.load_inference_subject`), the
    volume is served by :func:`serve_volume` with the window, overlap,
    blending, ``[INFERENCE] border``, batch size, MultiRes factors and
    padding of ``tfuq infer`` (:func:`tfuq.inference.prediction_settings`), and the maps
    are written on the first input's grid by :func:`tfuq.inference.write_outputs`
    into ``[INFERENCE] save_seg_dir``: ``<subject>_mean``,
    ``_epistemic_std``, ``_aleatoric_std``, ``_total_std`` (as served, i.e.
    recalibrated when the export was), ``_lower95``/``_upper95`` from a
    recalibrated export, ``_alpha``/``_beta`` for the generalized normal, and
    ``<subject>_qc.json`` (with ``"served": true``).

    Args:
        client: Client of the model exported from this configuration.
        config: The loaded configuration.
        subject: Subject id.
        files: Section name -> file (from
            :func:`tfuq.inference.subject_inputs.find_inference_subjects`).
        units: The target normalisation the SavedModel answers in (its
            ``assets.extra/normalisation.json``); None: normalised units.
        sources: Resolved input sources; default ``config.sources``.
        overwrite: Replace existing outputs.

    Returns:
        dict map name (and ``"qc"``) -> path written.

    Raises:
        UserError: unreadable inputs, a border of half the window or more, a
            server error, existing outputs.
    """
    from tfuq.data.geometry import resample_to_grid, same_grid
    from tfuq.inference.prediction import output_stem, prediction_settings
    from tfuq.inference.subject_inputs import load_inference_subject
    from tfuq.networks.factory import input_geometry

    settings = prediction_settings(config)  # the window, border, ... of tfuq infer
    inputs = load_inference_subject(config, subject, files, sources or config.sources)
    maps = serve_volume(
        client,
        inputs.normalised(),
        settings.window,
        overlap=settings.overlap,
        blending=settings.blending,
        border=settings.border,
        batch_size=settings.batch_size,
        spatial_rank=2 if input_geometry(config).mode == "2d" else 3,
        factors=settings.factors or None,
        padding_mode=settings.padding_mode,
    )
    mask = inputs.mask
    if not same_grid(inputs.grid, inputs.reference):  # back to the input's grid, as tfuq infer does
        ref, order = inputs.reference, config.inference.output_interp_order
        for key, value in list(maps.items()):
            back = resample_to_grid(inputs.grid.with_array(value), ref.affine, ref.shape, order=order).array
            maps[key] = back if key in _LOCATIONS else np.maximum(back, 0.0)  # spreads stay >= 0
        if mask is not None:
            grid_mask = inputs.grid.with_array(mask.astype(np.float32))
            mask = resample_to_grid(grid_mask, ref.affine, ref.shape, order=0).array > 0.5
    params = units or NormalisationParams("none", 0.0, 1.0)
    s = params.scale
    epistemic, aleatoric = (maps[EPISTEMIC_STD] / s) ** 2, (maps[ALEATORIC_STD] / s) ** 2
    decomposition = {
        MEAN: (maps[MEAN] - params.offset) / s,
        EPISTEMIC_VAR: epistemic,
        ALEATORIC_VAR: aleatoric,
        TOTAL_VAR: epistemic + aleatoric,
    }
    extras = {k: v for k, v in maps.items() if k not in (MEAN, EPISTEMIC_STD, ALEATORIC_STD, TOTAL_STD)}
    paths = write_outputs(
        config.inference.save_seg_dir,
        output_stem(config, subject),
        decomposition,
        inputs.reference,
        params,
        extra_maps=extras,
        mask=mask if mask is not None and mask.any() else None,
        threshold=config.uncertainty.flag_threshold,
        overwrite=overwrite,
        finish_qc=lambda qc: {**qc, "family": config.family, "served": True, "serving_url": client.url},
    )
    return paths
