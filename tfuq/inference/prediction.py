"""Predict one subject with the trained model(s) and write its maps: the body of ``tfuq infer``.

:func:`predict_subject` runs the window loop
(:func:`tfuq.inference.engine.blend_windows`) once with a predictor that
passes every window through every member (the model and its deep-ensemble
partners, :func:`tfuq.inference.mc.mc_window_predictor`), expresses each
member's window moments in the first member's normalised units and merges
them as an equal-weight mixture. :func:`write_subject` takes the maps back to the
reference grid and the target's units, adds the generalized-normal maps and
the recalibrated 95 % interval, and writes the NIfTI files and
``<subject>_qc.json`` (:func:`tfuq.inference.write_outputs`).

Mathematical details:
    Member k's maps are in its normalised units ``y = (x - o_k) / s_k``; in
    the first member's units ``(o, s)`` they read ``m' = (m s_k + o_k - o) / s``
    and ``v' = v (s_k / s)^2``. K members of equal weight then combine by the
    law of total variance (Lakshminarayanan et al.)::

        mean = (1/K) sum_k m_k,   epistemic = (1/K) sum_k e_k + (1/K) sum_k (m_k - mean)^2,
        aleatoric = (1/K) sum_k a_k

    (the running merge of :func:`tfuq.inference.merge_states` with unit
    counts); alpha and beta are averaged.

Reference:
    Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017, arXiv:1612.01474.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfuq.calibration.isotonic import IsotonicRecalibrator
from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.calibration.qc_reference import (
    QC_FEATURE_REFERENCE_FILE,
    QC_REFERENCE_FILE,
    load_qc_reference,
    qc_score,
    slice_statistics,
)
from tfuq.calibration.sigma_scaling import SigmaScaling
from tfuq.calibration.stored import CALIBRATION_DIR
from tfuq.config import Config
from tfuq.data.geometry import resample_to_grid, same_grid
from tfuq.data.normalisation import NormalisationParams, denormalise, denormalise_std
from tfuq.data.windows import as_window, check_border
from tfuq.errors import UserError
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR, MEAN, TOTAL_VAR
from tfuq.inference.engine import WindowPredictor, blend_windows, check_volume, count_windows
from tfuq.inference.mc import ALPHA, BETA, mc_window_predictor, sample_plan, seeded_generators
from tfuq.inference.outputs import OUTPUT_MAPS, output_paths, write_outputs
from tfuq.inference.streaming import MomentState, merge_states
from tfuq.inference.subject_inputs import SubjectInputs
from tfuq.layers import mc_sampling, stochastic_layers
from tfuq.model_store.trained import TrainedModel

__all__ = [
    "INTERVAL_MAPS",
    "UNCALIBRATED_MAPS",
    "UNCALIBRATED_SUFFIX",
    "PredictionSettings",
    "check_windows",
    "derived_map_names",
    "feature_scores",
    "feature_window",
    "output_stem",
    "predict_subject",
    "prediction_settings",
    "subject_output_paths",
    "windows_per_subject",
    "write_subject",
]

_LOG = logging.getLogger(__name__)

#: Names of the recalibrated 95 % interval maps.
INTERVAL_MAPS = ("lower95", "upper95")
#: Suffix of the std maps as the MC moments give them, kept beside the recalibrated ones.
UNCALIBRATED_SUFFIX = "_uncalibrated"
#: Names of those maps.
UNCALIBRATED_MAPS = tuple(f"{name}{UNCALIBRATED_SUFFIX}" for name in OUTPUT_MAPS[1:])


@dataclasses.dataclass(frozen=True)
class PredictionSettings:
    """How a volume is predicted (from ``[INFERENCE]``, ``[UNCERTAINTY]``, ``[NETWORK]``, ``[SYSTEM]``).

    Attributes:
        family: The head's family.
        mc_samples: T, stochastic passes per window.
        window: Inference window ``(X, Y, Z)`` (Z = 1 for 2D networks).
        overlap: Window overlap fraction.
        blending: Blending mode.
        batch_size: Network inputs per forward call.
        seed: Seed of the dropout streams.
        factors: MultiRes factors, ``()`` for single-input networks.
        padding_mode: Input padding outside the volume.
        border: Voxels dropped from each side of every window's maps
            (``[INFERENCE] border``), per axis.
        derived: Derived quantities written with their uncertainty
            (``[INFERENCE] derived``).
        derived_draws: Draws per MC pass for them (``[INFERENCE] derived_draws``).
    """

    family: str
    mc_samples: int
    window: tuple[int, int, int]
    overlap: float = 0.5
    blending: str = "gaussian"
    batch_size: int = 4
    seed: int | None = 0
    factors: tuple[int, ...] = ()
    padding_mode: str = "minimum"
    border: tuple[int, ...] = (0, 0, 0)
    derived: tuple[str, ...] = ()
    derived_draws: int = 32


def prediction_settings(config: Config, *, mc_samples: int | None = None) -> PredictionSettings:
    """The :class:`PredictionSettings` of a configuration.

    The window is ``[INFERENCE] spatial_window_size``, or the input section's
    training window; a 2D window ``H, W`` becomes ``H, W, 1``. One
    ``[INFERENCE] border`` value applies to every axis of the window larger
    than 1 (see :func:`tfuq.data.windows.check_border`).

    Args:
        config: The loaded configuration.
        mc_samples: Override of ``[UNCERTAINTY] mc_samples``.

    Raises:
        UserError: a border of half the window or more.
    """
    inf = config.inference
    window = as_window(
        inf.spatial_window_size or config.sources[config.input_sections[0]].spatial_window_size
    )
    try:
        border = check_border(tuple(inf.border), window)
    except ValueError as error:  # names [INFERENCE] border
        raise UserError(str(error)) from None
    net = config.network
    return PredictionSettings(
        family=config.family,
        mc_samples=int(mc_samples or config.uncertainty.mc_samples),
        window=window,
        overlap=inf.window_overlap,
        blending=inf.blending,
        batch_size=inf.batch_size,
        seed=config.system.seed,
        factors=tuple(net.multires_factors) if net.name == "multires" else (),
        padding_mode=net.volume_padding_mode,
        border=border,
        derived=tuple(inf.derived),
        derived_draws=inf.derived_draws,
    )


def _fixed_window(model: Any) -> tuple[int, ...] | None:
    """Spatial input shape of a network built for one window size, or None when any size works."""
    inputs = getattr(model, "inputs", None) or []
    shapes = [tuple(t.shape[1:-1]) for t in inputs]
    if not shapes or any(None in shape for shape in shapes):
        return None
    return shapes[0]


def feature_window(model: Any, settings: PredictionSettings) -> tuple[int, int, int]:
    """The window the reliability features are computed on: the network's own training window.

    Bottleneck features summarise one window, so the training windows' density
    and a scan's distances must use windows of one size whatever the
    inference window (a network rebuilt for whole volumes would give one
    window per subject); a network that takes any size uses the inference window.
    """
    fixed = _fixed_window(model)
    if fixed is None:
        return settings.window
    return (*fixed, 1) if len(fixed) == 2 else tuple(fixed)  # type: ignore[return-value]


def check_windows(members: Sequence[TrainedModel], settings: PredictionSettings) -> list[TrainedModel]:
    """The members, rebuilt where needed for the inference window.

    A network saved for its training window takes another window when it is
    fully convolutional (NiftyNet's pattern: a larger window at inference,
    fewer windows and less overlap): its layers are rebuilt on an input of
    the inference window's size (:func:`keras.models.clone_model`) and given
    the same weights.

    Returns:
        One TrainedModel per member (the same object when its window fits).

    Raises:
        UserError: a member cannot take the window: several inputs
            (MultiRes levels) of another size, or layers that do not build
            at that size (e.g. a U-Net's pooling needs multiples of
            2^depth); the message names the training window.
    """
    window = settings.window
    out = []
    for member in members:
        fixed = _fixed_window(member.model)
        sizes = tuple(w for w in window if w != 1) if fixed is not None and len(fixed) == 2 else window
        if fixed is None or tuple(fixed) == sizes:
            out.append(member)
            continue
        refuse = (
            f"{member.model_dir}: the network takes windows of {', '.join(map(str, fixed))} voxels and "
            f"cannot be rebuilt for {', '.join(map(str, window))}"
        )
        hint = "; set [INFERENCE] spatial_window_size to a size it takes (or leave it empty)"
        if len(member.model.inputs) != 1:
            raise UserError(f"{refuse} (one input per resolution level){hint}")
        rebuilt = _rebuild_for_window(member.model, sizes)
        if isinstance(rebuilt, str):
            raise UserError(f"{refuse} ({rebuilt}){hint}")
        _LOG.info(
            "network rebuilt for %s windows (trained on %s)",
            "x".join(map(str, sizes)),
            "x".join(map(str, fixed)),
        )
        out.append(dataclasses.replace(member, model=rebuilt))
    return out


def _rebuild_for_window(model: Any, sizes: tuple[int, ...]) -> Any:
    """``model``'s layers and weights on an input of spatial size ``sizes``, or why not (a string)."""
    import keras

    spec = model.inputs[0]
    inputs = keras.Input(shape=(*sizes, spec.shape[-1]), dtype=spec.dtype, name=getattr(spec, "name", None))
    try:
        clone = keras.models.clone_model(model, input_tensors=inputs)
        clone.set_weights(model.get_weights())
    except (ValueError, TypeError, NotImplementedError) as err:
        return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return clone


def _in_units(maps: Mapping[str, np.ndarray], own: NormalisationParams, to: NormalisationParams) -> dict:
    """Member maps from its normalised units to another normalisation's (derived maps: unchanged)."""
    if own == to:
        return dict(maps)
    ratio = own.scale / to.scale
    out = dict(maps)
    out[MEAN] = (maps[MEAN] * own.scale + own.offset - to.offset) / to.scale
    for key in (EPISTEMIC_VAR, ALEATORIC_VAR, TOTAL_VAR):
        if key in maps:
            out[key] = maps[key] * ratio**2
    if ALPHA in maps:
        out[ALPHA], out[BETA] = maps[ALPHA] * ratio, maps[BETA]
    return out


def _ensemble_predictor(
    members: Sequence[TrainedModel], settings: PredictionSettings, samples_per_call: int
) -> WindowPredictor:
    """Window predictor of the equal-weight mixture of the members' MC predictions."""
    reference = members[0].target_normalisation
    predictors = [
        (
            mc_window_predictor(
                member.model,
                settings.family,
                mc_samples=settings.mc_samples,
                samples_per_call=samples_per_call,
                window=settings.window,
                levels=max(1, len(settings.factors)),
                derived=settings.derived,
                units=member.target_normalisation,
                draws=settings.derived_draws,
                seed=0 if settings.seed is None else settings.seed,
            ),
            member.target_normalisation,
        )
        for member in members
    ]
    prefixes = ["", *(f"{name}_" for name in settings.derived)]  # derived moments: target units already

    def predict(inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        merged: dict[str, MomentState] = {}
        extras: dict[str, np.ndarray] = {}
        for predictor, units in predictors:
            maps = _in_units(predictor(inputs), units, reference)
            for p in prefixes:
                moments = (maps[p + MEAN], maps[p + EPISTEMIC_VAR], maps[p + ALEATORIC_VAR])
                state = MomentState(np.ones_like(moments[0]), *moments)
                if p in merged:
                    state = MomentState(*(np.asarray(v) for v in merge_states(merged[p], state)))
                merged[p] = state
            for key in (ALPHA, BETA):
                if key in maps:
                    extras[key] = extras.get(key, 0.0) + maps[key] / len(predictors)
        out = dict(extras)
        for p, state in merged.items():
            out[p + MEAN] = state.mean
            out[p + EPISTEMIC_VAR] = state.m2 / state.count
            out[p + ALEATORIC_VAR] = state.aleatoric
        return out

    return predict


def predict_subject(
    members: Sequence[TrainedModel],
    inputs: np.ndarray,
    settings: PredictionSettings,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """MC maps of one normalised input volume, merged over the ensemble members.

    One pass of the window loop (:func:`tfuq.inference.engine.blend_windows`):
    every group of windows goes through every member (T MC passes each), the
    members' window moments are merged as an equal-weight mixture in the
    first member's units, and the mixture is blended over the windows. As all
    members share the window grid and its weights, this is the same mixture
    as blending each member's volume first.

    Args:
        members: The trained model first, then ensemble members.
        inputs: Normalised inputs ``(X, Y, Z, C)`` on the model grid.
        settings: How to predict.
        progress: Called with the number of windows finished (counted once
            per member, as :func:`windows_per_subject`).

    Returns:
        float32 maps ``(X, Y, Z)`` in the first member's normalised units:
        ``mean``, ``epistemic_var``, ``aleatoric_var``, ``total_var`` (and
        ``alpha``, ``beta`` for the generalized normal).

    Raises:
        ValueError: no member, or a model output of the wrong shape.
    """
    if not members:
        raise ValueError("Expected at least one trained model. Received: members=[]")
    windows_per_group, samples_per_call = sample_plan(settings.mc_samples, settings.batch_size)
    with contextlib.ExitStack() as stack:
        for member in members:
            if settings.mc_samples > 1 and not stochastic_layers(member.model):
                _LOG.warning(
                    "The model has no MC-sampling layer: all %d passes are identical.", settings.mc_samples
                )
            stack.enter_context(mc_sampling(member.model))
            stack.enter_context(seeded_generators(member.model, settings.seed))
        maps = blend_windows(
            check_volume(inputs).astype(np.float32, copy=False),
            _ensemble_predictor(members, settings, samples_per_call),
            settings.window,
            overlap=settings.overlap,
            blending=settings.blending,
            border=settings.border,
            windows_per_call=windows_per_group,
            factors=settings.factors,
            padding_mode=settings.padding_mode,
            progress=None if progress is None else (lambda n: progress(n * len(members))),
        )
    return {key: value.astype(np.float32, copy=False) for key, value in maps.items()}


def windows_per_subject(shape: Sequence[int], settings: PredictionSettings, members: int) -> int:
    """Windows :func:`predict_subject` runs for a volume (for a progress bar)."""
    return members * count_windows(shape, settings.window, settings.overlap, settings.border)


def output_stem(config: Config, subject: str) -> str:
    """File name stem of a subject's outputs: the id plus ``[INFERENCE] output_postfix``."""
    return f"{subject}{config.inference.output_postfix}"


def derived_map_names(quantity: str, *, calibrated: bool) -> tuple[str, ...]:
    """The maps written for a derived quantity: its mean and std maps (and the raw total std)."""
    names = (f"{quantity}_mean", *(f"{quantity}_{std}" for std in OUTPUT_MAPS[1:]))
    return (*names, f"{quantity}_{OUTPUT_MAPS[-1]}{UNCALIBRATED_SUFFIX}") if calibrated else names


def subject_output_paths(config: Config, subject: str, *, family: str, calibrated: bool) -> dict[str, Path]:
    """Every file :func:`write_subject` writes for ``subject`` (map name or ``"qc"`` -> path)."""
    names = list(OUTPUT_MAPS)
    if family == "generalized_normal":
        names += [ALPHA, BETA]
    if calibrated:
        names += [*INTERVAL_MAPS, *UNCALIBRATED_MAPS]
    for quantity in config.inference.derived:
        names += derived_map_names(quantity, calibrated=calibrated)
    return output_paths(config.inference.save_seg_dir, output_stem(config, subject), tuple(names))


def _to_reference(
    subject: SubjectInputs, maps: Mapping[str, np.ndarray], order: int
) -> dict[str, np.ndarray]:
    """Maps from the model grid back to the reference (input) grid when they differ."""
    if same_grid(subject.grid, subject.reference):
        return dict(maps)
    ref = subject.reference
    out = {}
    for key, value in maps.items():
        volume = resample_to_grid(
            subject.grid.with_array(value), ref.affine, ref.shape, order=order, cval=0.0
        )
        out[key] = volume.array
    for key in out:
        if key.endswith(("_var", ALPHA)):  # spreads (also of derived quantities) stay >= 0
            out[key] = np.maximum(out[key], 0.0)
    return out


def _derived_maps(
    quantities: Sequence[str],
    back: Mapping[str, np.ndarray],
    decomposition: Mapping[str, np.ndarray],
    *,
    recalibrated: bool,
) -> dict[str, np.ndarray]:
    """Mean and std maps of the derived quantities, in their own units.

    Recalibrated like the image: every std of quantity q is multiplied by the voxel's ratio of
    the recalibrated to the raw total std of the image, ``k = s_cal / s_raw`` (1 where
    ``s_raw = 0``). For a linear q this is exactly the recalibrated distribution pushed through
    q; for the piecewise-linear mu-map it holds on each segment (delta method). The raw total
    std is kept as ``<q>_total_std_uncalibrated``.
    """
    out: dict[str, np.ndarray] = {}
    if not quantities:
        return out
    factor = np.ones_like(back[TOTAL_VAR], dtype=np.float64)
    if recalibrated:
        raw = np.sqrt(np.maximum(back[TOTAL_VAR], 0.0))
        calibrated = np.sqrt(np.maximum(decomposition[TOTAL_VAR], 0.0))
        np.divide(calibrated, raw, out=factor, where=raw > 0)
    for q in quantities:
        out[f"{q}_mean"] = back[f"{q}_{MEAN}"].astype(np.float32)
        for name, var in zip(OUTPUT_MAPS[1:], (EPISTEMIC_VAR, ALEATORIC_VAR, TOTAL_VAR)):
            std = np.sqrt(np.maximum(back[f"{q}_{var}"], 0.0))
            out[f"{q}_{name}"] = (std * factor).astype(np.float32)
            if recalibrated and var == TOTAL_VAR:
                out[f"{q}_{name}{UNCALIBRATED_SUFFIX}"] = std.astype(np.float32)
    return out


def write_subject(
    config: Config,
    subject: SubjectInputs,
    maps: Mapping[str, np.ndarray],
    params: NormalisationParams,
    *,
    recalibrator: IsotonicRecalibrator | SigmaScaling | None = None,
    overwrite: bool = False,
    extra_scores: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write a subject's maps (target units, reference grid) and ``<subject>_qc.json``, as one set.

    Every file goes through a staging folder and is moved into place when all
    are written (:func:`tfuq.inference.write_outputs`), so a kill leaves the
    subject's whole set or nothing of it.

    Args:
        config: The loaded configuration (output folder, postfix, flag threshold).
        subject: The subject's inputs (reference grid, mask).
        maps: :func:`predict_subject` output, normalised units of ``params``.
        params: The target normalisation of those units.
        recalibrator: Fitted recalibration; adds ``_lower95`` / ``_upper95``.
        overwrite: Replace existing files.
        extra_scores: Further reliability scores (name -> :func:`~tfuq.calibration.qc_reference.qc_score`
            dict), e.g. :func:`feature_scores`; the total-std score is added here when
            ``tfuq calibrate`` stored its reference. ``[UNCERTAINTY] reliability`` says
            which flag the subject (``qc["reliability"]``).

    Returns:
        The QC summary written (``flagged``, std statistics, ``paths``).

    Raises:
        UserError: an output exists and ``overwrite`` is False, or the output
            folder is a file or not writable.
    """
    order = config.inference.output_interp_order
    back = _to_reference(subject, maps, order)
    mask = subject.mask
    if mask is not None and not same_grid(subject.grid, subject.reference):
        ref = subject.reference
        mask = resample_to_grid(
            subject.grid.with_array(mask.astype(np.float32)), ref.affine, ref.shape, order=0
        )
        mask = mask.array > 0.5
    extra: dict[str, np.ndarray] = {}
    if ALPHA in back:
        extra[ALPHA] = denormalise_std(back[ALPHA], params)
        extra[BETA] = back[BETA]
    decomposition = {key: back[key] for key in (MEAN, EPISTEMIC_VAR, ALEATORIC_VAR, TOTAL_VAR)}
    if recalibrator is not None:
        # the std maps the SavedModel serves (one formula for both); the raw ones kept by name
        epistemic, aleatoric = (np.maximum(back[k], 0.0) for k in (EPISTEMIC_VAR, ALEATORIC_VAR))
        moments = MomentRecalibration.from_recalibrator(recalibrator).apply(back[MEAN], epistemic, aleatoric)
        for name, var in zip(OUTPUT_MAPS[1:], (EPISTEMIC_VAR, ALEATORIC_VAR, TOTAL_VAR)):
            extra[f"{name}{UNCALIBRATED_SUFFIX}"] = denormalise_std(
                np.sqrt(np.maximum(back[var], 0.0)), params
            )
            decomposition[var] = np.square(moments[name])
        for name in INTERVAL_MAPS:
            extra[name] = denormalise(moments[name], params).astype(np.float32)
    extra.update(
        _derived_maps(config.inference.derived, back, decomposition, recalibrated=recalibrator is not None)
    )
    scores = dict(extra_scores or {})
    reference = load_qc_reference(Path(config.model_dir) / CALIBRATION_DIR / QC_REFERENCE_FILE)
    if reference is not None:
        # the statistic the reference was fitted on: recalibrated total std, normalised units
        total = np.sqrt(np.maximum(decomposition[TOTAL_VAR], 0.0))
        inside = mask if mask is not None and mask.any() else None
        scores["total_std"] = qc_score(slice_statistics(total, inside), reference)
    written: dict[str, Any] = {}

    def finish(qc: dict[str, Any]) -> dict[str, Any]:
        mode = config.uncertainty.reliability
        if scores and mode != "off":
            deciding = [name for name in scores if mode in ("either", name)]
            if not deciding and mode == "feature_distance":
                deciding = [name for name in scores if name == "total_std"]  # no feature reference
            flagged = any(scores[name]["flagged"] for name in deciding)
            qc["reliability"] = {"mode": mode, "deciding": deciding, "flagged": flagged, "scores": scores}
            qc["flagged"] = bool(qc["flagged"] or flagged)
        qc["family"] = config.family
        qc["mc_samples"] = config.uncertainty.mc_samples
        qc["recalibration"] = type(recalibrator).__name__ if recalibrator is not None else None
        written.update(qc)
        return qc

    paths = write_outputs(
        config.inference.save_seg_dir,
        output_stem(config, subject.id),
        decomposition,
        subject.reference,
        params,
        extra_maps=extra,
        mask=mask if mask is not None and mask.any() else None,
        threshold=config.uncertainty.flag_threshold,
        overwrite=overwrite,
        finish_qc=finish,
    )
    return {**written, "paths": {name: str(path) for name, path in paths.items()}}


def feature_scores(config: Config, model: Any, window: Sequence[int], subject: SubjectInputs) -> dict:
    """``{"feature_distance": qc_score}`` against the stored feature reference, or ``{}`` without one.

    Computed when ``[UNCERTAINTY] reliability`` uses it (``feature_distance`` or ``either``) and
    ``tfuq calibrate`` stored a feature density and its reference; single-input networks only.
    """
    from tfuq.inference.features import FEATURE_DENSITY_FILE, FeatureDensity, mahalanobis, window_features

    if config.uncertainty.reliability not in ("feature_distance", "either") or len(model.inputs) != 1:
        return {}
    folder = Path(config.model_dir) / CALIBRATION_DIR
    density = FeatureDensity.load(folder / FEATURE_DENSITY_FILE)
    reference = load_qc_reference(folder / QC_FEATURE_REFERENCE_FILE)
    if density is None or reference is None:
        return {}
    distances = mahalanobis(window_features(model, subject.normalised(), window, subject.mask), density)
    return {"feature_distance": qc_score(distances, reference)}
