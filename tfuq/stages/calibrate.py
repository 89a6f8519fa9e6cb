"""``tfuq calibrate CONFIG``: fit the recalibrations on the calibration split and store them with the model.

The steps of :func:`run_calibration`:

0. a config that contradicts the stored model (network, head, input
   geometry and normalisation of ``<model_dir>/training_config.ini``) is
   refused in one line (:func:`tfuq.model_store.contract.check_matches_model`);
1. the held-out subjects with a target: the split's Calibration subjects,
   else its Validation ones, or the phase ``[CALIBRATION] dataset`` names;
   none is a one-line error. Training subjects only when named there
   (Zhao et al. calibrated in-sample): a logged warning and ``"in_sample":
   true`` in the stored summary, which the report shows;
2. for each, the prediction ``tfuq infer`` makes (same model(s), window, T,
   seed; :func:`tfuq.inference.prediction.predict_subject`), kept in
   memory, and the truth, both in the model's normalised units (the
   subject's own target normalisation with ``target_normalisation =
   per_subject``);
3. the voxels inside the mask section (every voxel without one), pooled over
   subjects and subsampled at random (seeded) to ``[CALIBRATION] max_voxels``;
4. PIT values of the moment-matched normal ``N(mean, epistemic + aleatoric)``
   (why and at what cost: :mod:`tfuq.calibration.moment_matched`); both
   recalibrators are fitted: the isotonic map (Kuleshov et al.) and sigma
   scaling of the aleatoric part (objective ``[CALIBRATION] sigma_objective``);
5. the reliability reference (:mod:`tfuq.calibration.qc_reference`): the
   slice means of the recalibrated total std of the same subjects, the slice
   threshold and flag score ``tfuq infer`` puts in every ``qc.json``, and the
   feature-distance reference (bottleneck features of the Training windows,
   distances of every held-out subject: Calibration and Validation), each
   reference subject scored against the others' threshold;
6. ``<model_dir>/calibration/{isotonic,sigma_scaling,qc_reference}.json`` and
   ``summary.json`` (errors on the calibration set before and after each),
   replacing an earlier calibration. ``[CALIBRATION] method`` chooses the one
   infer, evaluate and export apply.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfuq.atomic import write_json
from tfuq.calibration.fitting import (
    CALIBRATION_KEYS,
    calibration_scores,
    cross_validated_errors,
    fit_recalibrators,
    pool_calibration_set,
)
from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.calibration.qc_reference import (
    QC_FEATURE_REFERENCE_FILE,
    QC_REFERENCE_FILE,
    QCReference,
    fit_qc_reference,
    slice_statistics,
)
from tfuq.calibration.sigma_scaling import SigmaScaling
from tfuq.calibration.stored import CALIBRATION_DIR, SUMMARY_FILE, calibration_path
from tfuq.config import Config
from tfuq.config.sections import CALIBRATION, TRAINING, VALIDATION
from tfuq.data.loading import fit_array_normalisation
from tfuq.data.normalisation import NormalisationParams, normalise
from tfuq.data.sources import resolve_sources
from tfuq.data.split import read_split
from tfuq.errors import UserError
from tfuq.model_store.lock import model_dir_lock

__all__ = [
    "calibrate",
    "run_calibration",
]

_LOG = logging.getLogger(__name__)
#: Training windows the feature density is fitted on (about; every k-th window of each subject).
_FEATURE_WINDOWS = 600


def calibrate(config: Config) -> None:
    """The ``tfuq calibrate`` stage: see :func:`run_calibration`."""
    run_calibration(config)


#: ``[CALIBRATION] dataset`` value: the Calibration and Validation subjects pooled.
HELD_OUT = "held_out"


def _calibration_subjects(config: Config, sources: Mapping[str, Any]) -> tuple[str, dict[str, dict]]:
    """The phase and subjects to fit on: never Training unless ``[CALIBRATION] dataset`` says so."""
    from tfuq.inference.subject_inputs import find_inference_subjects

    split_file = Path(config.system.dataset_split_file)
    if not split_file.exists():
        raise UserError(f"no dataset split file {split_file}; run tfuq train first")
    split = read_split(split_file)
    found = {
        i: files
        for i, files in find_inference_subjects(config, sources).items()
        if config.target_section in files
    }

    def in_phase(phase: str) -> dict[str, dict]:
        return {i: f for i, f in found.items() if split.get(i) == phase}

    phase = config.calibration.dataset
    if not phase:
        phase = CALIBRATION if in_phase(CALIBRATION) else VALIDATION
    chosen = {**in_phase(CALIBRATION), **in_phase(VALIDATION)} if phase == HELD_OUT else in_phase(phase)
    if not chosen:
        raise UserError(
            f"{split_file}: no {phase} subject with a target file to calibrate on; list held-out subjects "
            f"as Calibration (or Validation) in the split file, or set [CALIBRATION] dataset"
        )
    if phase == TRAINING:
        _LOG.warning(
            "[CALIBRATION] dataset = Training: calibrating in-sample on the training subjects; the "
            "recalibration will be optimistic on new subjects"
        )
    return phase, chosen


def _more_held_out(config: Config, sources: Mapping[str, Any], phase: str, chosen: Iterable[str]) -> dict:
    """The other held-out subjects (Calibration and Validation, never Training nor Inference) with inputs.

    The feature-distance reference needs only their inputs (one deterministic
    pass per window), so it is fitted on every held-out subject: with two
    calibration subjects the between-subject spread of the distances is too
    poorly known to set a flag score (BraTS: one held-out subject scored 0.58
    against the other's threshold).
    """
    from tfuq.inference.subject_inputs import find_inference_subjects

    if phase == TRAINING:
        return {}
    split = read_split(Path(config.system.dataset_split_file))
    found = find_inference_subjects(config, sources)
    skip = set(chosen)
    return {
        i: files for i, files in found.items() if split.get(i) in (CALIBRATION, VALIDATION) and i not in skip
    }


def _target_params(config: Config, subject: Any, stored: NormalisationParams) -> NormalisationParams:
    """The map of a subject's truth into the model's units: its own with a per-subject target."""
    if not config.per_subject_target:
        return stored
    source = config.sources[config.target_section]
    return fit_array_normalisation(source, subject.target, subject.mask, name=f"subject {subject.id}")


def _feature_reference(
    config: Config, model: Any, window: Sequence[int], held: Mapping[str, tuple], in_sample: bool
) -> QCReference | None:
    """Fit the training windows' feature density and the held-out subjects' distance reference.

    Skipped (None, logged) for multi-input networks; the Training windows are subsampled to about
    :data:`_FEATURE_WINDOWS` in all.
    """
    from tfuq.data.split import subjects_in_phase
    from tfuq.inference.features import (
        FEATURE_DENSITY_FILE,
        bottleneck_layer,
        fit_feature_density,
        mahalanobis,
        window_features,
    )
    from tfuq.inference.subject_inputs import find_inference_subjects, load_inference_subject

    try:
        bottleneck_layer(model)
    except ValueError:
        usable = False
    else:
        usable = len(model.inputs) == 1
    if not usable:
        _LOG.info("feature-distance reliability skipped: %s has several inputs or no feature map", model.name)
        return None
    sources = resolve_sources(config)
    found = find_inference_subjects(config, sources)
    split = read_split(Path(config.system.dataset_split_file))
    training = [i for i in subjects_in_phase(split, TRAINING) if i in found]
    if not training:
        _LOG.warning("feature-distance reliability skipped: no Training subject found")
        return None
    feats = []
    for subject_id in training:
        subject = load_inference_subject(config, subject_id, found[subject_id], sources)
        all_windows = window_features(model, subject.normalised(), window, subject.mask, stride=1)
        step = max(1, round(len(training) * len(all_windows) / _FEATURE_WINDOWS))
        feats.append(all_windows[::step])
    density = fit_feature_density(np.concatenate(feats))
    density.save(config.model_dir / CALIBRATION_DIR / FEATURE_DENSITY_FILE)
    distances = {
        subject_id: mahalanobis(window_features(model, volume, window, mask), density)
        for subject_id, (volume, mask) in held.items()
    }
    reference = fit_qc_reference(distances, statistic="feature_distance", in_sample=in_sample)
    reference.save(config.model_dir / CALIBRATION_DIR / QC_FEATURE_REFERENCE_FILE)
    _LOG.info(
        "feature density of %d Training windows (%d features); held-out distance scores %s",
        density.num_windows,
        density.mean.size,
        ", ".join(f"{s} {v:.3f}" for s, v in reference.subjects.items()),
    )
    return reference


def _qc_reference(
    held: Mapping[str, tuple[np.ndarray, ...]], recalibrator: Any, method: str, *, in_sample: bool
) -> QCReference:
    """The reliability reference: slice means of the recalibrated total std of the subjects fitted on."""
    rule = MomentRecalibration.from_recalibrator(recalibrator)
    statistics = {}
    for subject_id, (mean, epistemic, aleatoric, inside) in held.items():
        total = rule.apply(mean, np.maximum(epistemic, 0.0), np.maximum(aleatoric, 0.0))["total_std"]
        statistics[subject_id] = slice_statistics(total, inside)
    name = f"total_std ({method}, normalised units)" if recalibrator is not None else "total_std"
    return fit_qc_reference(statistics, statistic=name, in_sample=in_sample)


def _sigma_note(summary: Mapping[str, Any], sigma: SigmaScaling | None) -> str:
    if sigma is None:
        return ""
    error = summary["sigma_scaling"]["calibration_rms_error"]
    return f", {error:.4f} sigma scaling (s = {sigma.scale_factor:.4g})"


def run_calibration(config: Config) -> dict[str, Any]:
    """:func:`_run_calibration` holding the model_dir's writer lock (:mod:`tfuq.model_store.lock`).

    Raises:
        UserError: another tfuq process is writing to the model_dir, or see :func:`_run_calibration`.
    """
    if not Path(config.model_dir).is_dir():  # the one-line "no trained model" comes from the body
        return _run_calibration(config)
    with model_dir_lock(config.model_dir, command=f"tfuq calibrate {config.path}"):
        return _run_calibration(config)


def _run_calibration(config: Config) -> dict[str, Any]:
    """Fit and store both recalibrations (see the module notes).

    Returns:
        The summary written to ``<model_dir>/calibration/summary.json``.

    Raises:
        UserError: a config that contradicts the stored model
            (:func:`tfuq.model_store.contract.check_matches_model`), no
            trained model, no split file, no subject with a target.
    """
    import click

    from tfuq.inference.prediction import (
        check_windows,
        feature_window,
        predict_subject,
        prediction_settings,
        windows_per_subject,
    )
    from tfuq.inference.subject_inputs import load_inference_subject
    from tfuq.model_store.contract import check_matches_model
    from tfuq.model_store.trained import load_members

    check_matches_model(config, "tfuq calibrate")
    members = load_members(config)
    params = members[0].target_normalisation
    settings = prediction_settings(config)
    saved = members[0].model  # as trained: the reliability features use its own window
    members = check_windows(members, settings)
    sources = resolve_sources(config)
    phase, chosen = _calibration_subjects(config, sources)
    cal = config.calibration
    parts = []
    held: dict[str, tuple[np.ndarray, ...]] = {}
    inputs: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for subject_id, files in chosen.items():
        subject = load_inference_subject(config, subject_id, files, sources, need_target=True)
        total = windows_per_subject(subject.shape, settings, len(members))
        with click.progressbar(length=total, label=f"calibrate {subject_id}", file=sys.stderr) as bar:
            maps = predict_subject(members, subject.normalised(), settings, progress=bar.update)
        inside = (
            subject.mask if subject.mask is not None and subject.mask.any() else np.ones(subject.shape, bool)
        )
        target = normalise(subject.target, _target_params(config, subject, params))
        values = (maps["mean"], maps["epistemic_var"], maps["aleatoric_var"], target)
        parts.append({key: v[inside] for key, v in zip(CALIBRATION_KEYS, values)})
        held[subject_id] = (maps["mean"], maps["epistemic_var"], maps["aleatoric_var"], inside)
        inputs[subject_id] = (subject.normalised(), subject.mask)
    for subject_id, files in _more_held_out(config, sources, phase, chosen).items():
        subject = load_inference_subject(config, subject_id, files, sources)
        inputs[subject_id] = (subject.normalised(), subject.mask)
    data = pool_calibration_set(parts, cal.max_voxels, config.system.seed)
    isotonic, sigma = fit_recalibrators(data, objective=cal.sigma_objective, num_bins=cal.num_bins)
    summary: dict[str, Any] = {
        "dataset": phase,
        "in_sample": phase == TRAINING,
        "subjects": sorted(chosen),
        "num_voxels": int(sum(p["mean"].size for p in parts)),
        "num_fitted": int(data["mean"].size),
        "pit": "moment-matched normal N(mean, epistemic_var + aleatoric_var)",
        "method": cal.method,
        "before": calibration_scores(data, None, num_bins=cal.num_bins),
        "isotonic": calibration_scores(data, isotonic, num_bins=cal.num_bins),
    }
    isotonic.save(calibration_path(config.model_dir, "isotonic"), overwrite=True)
    if sigma is not None:
        summary["sigma_scaling"] = {
            "scale_factor": sigma.scale_factor,
            **calibration_scores(data, sigma, num_bins=cal.num_bins),
        }
        sigma.save(calibration_path(config.model_dir, "sigma_scaling"), overwrite=True)
    else:
        _LOG.warning("no aleatoric variance (family %s): sigma scaling not fitted", config.family)
    summary["cross_validation"] = cross_validated_errors(
        parts, cal.sigma_objective, cal.num_bins, config.system.seed
    )
    method = cal.method
    if method == "auto":
        errors = summary["cross_validation"]["mean"]
        method = min(errors, key=errors.get) if errors else "isotonic"
        _LOG.info(
            "[CALIBRATION] method = auto: %s (leave-one-subject-out RMS calibration error %s)",
            method,
            ", ".join(f"{k} {v:.4f}" for k, v in errors.items()),
        )
    summary["chosen_method"] = method
    chosen_recalibrator = {"isotonic": isotonic, "sigma_scaling": sigma}.get(method)
    reference = _qc_reference(held, chosen_recalibrator, method, in_sample=phase == TRAINING)
    reference.save(config.model_dir / CALIBRATION_DIR / QC_REFERENCE_FILE)
    summary["qc_reference"] = reference.to_dict()
    features = _feature_reference(config, saved, feature_window(saved, settings), inputs, phase == TRAINING)
    if features is not None:
        summary["qc_reference_features"] = features.to_dict()
    for ref in (reference, features):
        if ref is not None and ref.flag_score >= 1.0:
            _LOG.warning(
                "reliability (%s): the %d held-out subjects differ from each other as much as a shifted "
                "scan would (flag score %.2f >= 1), so this flag cannot fire; calibrate on more subjects",
                ref.statistic,
                len(ref.subjects),
                ref.flag_score,
            )
        if ref is not None and ref.flagged_reference_subjects:
            _LOG.warning(
                "reliability (%s): held-out subject(s) %s score above the flag score %.3g (%s): a scan "
                "unlike the other held-out ones; look at it",
                ref.statistic,
                ", ".join(ref.flagged_reference_subjects),
                ref.flag_score,
                ", ".join(f"{s} {ref.subjects[s]:.3f}" for s in ref.flagged_reference_subjects),
            )
    write_json(config.model_dir / CALIBRATION_DIR / SUMMARY_FILE, summary, overwrite=True)
    _LOG.info(
        "calibrated on %d %s subject(s), %d voxels: RMS calibration error %.4f before, %.4f isotonic%s",
        len(chosen),
        phase,
        summary["num_fitted"],
        summary["before"]["calibration_rms_error"],
        summary["isotonic"]["calibration_rms_error"],
        _sigma_note(summary, sigma),
    )
    return summary
