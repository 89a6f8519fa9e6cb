"""``tfuq evaluate CONFIG``: metrics, plots and the HTML report of the inferred subjects.

The steps of :func:`run_evaluation`:

1. the subjects ``tfuq infer`` writes (``[INFERENCE] dataset_to_infer``,
   default Inference) that have a target file;
2. their maps from ``[INFERENCE] save_seg_dir``; subjects whose maps are
   missing are inferred first (:func:`tfuq.stages.infer.run_inference`,
   logged), so ``tfuq evaluate`` works straight after ``tfuq train``
   (existing maps are used as they are: re-run infer with ``overwrite`` after
   retraining);
3. per subject, inside the mask section and over the whole image,
   :func:`tfuq.evaluation.evaluate_subject` on the moment-matched normal of
   the maps (mean, total std) -- the distribution ``tfuq calibrate`` fitted
   its recalibration on -- before and after the recalibration of
   ``[CALIBRATION] method`` (isotonic: the map applied to the PIT values;
   sigma scaling: ``N(mean, epistemic^2 + s^2 aleatoric^2)``, whose scores
   replace the ``*_recalibrated`` columns); with a ``[REGRESSION] lesion``
   section (read nearest neighbour, non-zero = lesion) the subjects that have
   its file also get the lesion-against-rest-of-mask keys
   (:func:`tfuq.evaluation.lesion.lesion_metrics`); with ``[EVALUATION]
   target_units = normalised`` all of it in normalised units: the maps
   mapped back with the stored target normalisation and the truth
   normalised with its section's method fitted on the subject
   (:mod:`tfuq.evaluation.units`; the recalibrators are unit-free, see
   there); with a ``[REGRESSION] noise_std`` section (the phantom's true
   noise std) also ``aleatoric_vs_noise_spearman`` (and ``_ratio`` in the
   target's units), the model's aleatoric std against the truth;
4. into ``[EVALUATION] save_csv_dir`` (refused before any work when it is a
   file or not writable; logged when outside model_dir): ``metrics.csv``, ``summary.json``,
   the calibration, RMSE-versus-retained and error-histogram plots, one
   montage per subject and ``report.html`` (:func:`tfuq.evaluation.write_report`)
   with the slice viewer of every subject (:mod:`tfuq.evaluation.viewer`);
   existing outputs are refused unless ``[EVALUATION] overwrite = true``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tfuq.atomic import check_output_folder
from tfuq.calibration.sigma_scaling import SigmaScaling
from tfuq.calibration.stored import load_calibration
from tfuq.config import Config
from tfuq.config.paths import note_outside_model_dir
from tfuq.data.geometry import resample_to_grid, same_grid
from tfuq.data.nifti import Volume, load_volume
from tfuq.data.normalisation import NormalisationParams
from tfuq.data.sources import resolve_sources
from tfuq.errors import UserError
from tfuq.evaluation.baselines import baseline_metrics, pearson
from tfuq.evaluation.checks import resolve_mask
from tfuq.evaluation.predictive_metrics import gaussian_params, predictive_scores
from tfuq.evaluation.report import REPORT_FILES, write_report, write_subject_montage
from tfuq.evaluation.subject_metrics import (
    WHOLE_IMAGE_SUFFIX,
    MetricSettings,
    SubjectCurves,
    evaluate_subject,
)
from tfuq.evaluation.units import NORMALISED, normalised_maps, normalised_target
from tfuq.evaluation.validation import aleatoric_vs_noise
from tfuq.evaluation.viewer import DEFAULT_MAX_VOXELS, viewer_budget, viewer_payload
from tfuq.inference.decomposition import MEAN
from tfuq.inference.outputs import ALEATORIC_STD, EPISTEMIC_STD, OUTPUT_MAPS, TOTAL_STD, output_paths

__all__ = ["evaluate", "evaluation_units", "run_evaluation", "sigma_scaled_scores"]

_LOG = logging.getLogger(__name__)


def evaluate(config: Config) -> dict[str, Any]:
    """The ``tfuq evaluate`` stage: see :func:`run_evaluation` (returns its summary)."""
    return run_evaluation(config)


def evaluation_units(config: Config) -> str:
    """The units label of the metrics and plots.

    ``"normalised"`` with ``[EVALUATION] target_units = normalised``; else
    ``[EVALUATION] units``, or ``"HU"`` when the target section is named like CT.
    """
    if config.evaluation.target_units == NORMALISED:
        return NORMALISED
    if config.evaluation.units:
        return config.evaluation.units
    return "HU" if "CT" in config.target_section.upper() else ""


def sigma_scaled_scores(
    scaling: SigmaScaling,
    mean: np.ndarray,
    target: np.ndarray,
    epistemic_std: np.ndarray,
    aleatoric_std: np.ndarray,
    selector: np.ndarray,
    *,
    num_bins: int = 100,
) -> tuple[dict[str, float], np.ndarray]:
    """Scores of ``N(mean, epistemic^2 + s^2 aleatoric^2)`` on the selected voxels.

    Returns:
        ``(scores, observed)``: :func:`~tfuq.evaluation.predictive_scores`
        names (``nll``, ``calibration_rms_error``, ...) and the observed
        proportions of its calibration curve.
    """
    factor = float(scaling.scale_factor or 1.0)
    std = np.sqrt(np.square(epistemic_std[selector]) + (factor * aleatoric_std[selector]) ** 2)
    scores, curves = predictive_scores(
        "normal", gaussian_params(mean[selector], std), target[selector], num_bins=num_bins
    )
    return {k: v for k, v in scores.items() if not k.endswith("_recalibrated")}, curves["observed"]


def _on_grid(volume: Volume, reference: Volume, order: int) -> np.ndarray:
    if same_grid(volume, reference):
        return volume.array.reshape(reference.shape)
    return resample_to_grid(volume, reference.affine, reference.shape, order=order).array.reshape(
        reference.shape
    )


def _evaluation_subjects(config: Config, sources: Mapping[str, Any]) -> dict[str, dict[str, Path]]:
    from tfuq.stages.infer import inference_subjects

    chosen = {i: f for i, f in inference_subjects(config, sources).items() if config.target_section in f}
    if not chosen:
        raise UserError(
            f"[{config.target_section}] no target file for the subjects to evaluate "
            f"({config.inference.dataset_to_infer or 'Inference'}); evaluation needs the truth"
        )
    return chosen


def _missing(config: Config, subjects: Mapping[str, Any]) -> list[str]:
    from tfuq.inference.prediction import output_stem

    folder = config.inference.save_seg_dir
    return [
        s
        for s in subjects
        if not all(p.exists() for k, p in output_paths(folder, output_stem(config, s)).items() if k != "qc")
    ]


def _load_maps(config: Config, subject: str, axcodes: tuple[str, ...]) -> dict[str, Volume]:
    """The mean and the std maps before recalibration (the scores apply the recalibrator themselves).

    ``tfuq infer`` writes recalibrated std maps under the standard names and keeps the MC
    moments' own as ``<name>_uncalibrated`` when a calibration is stored; those are read.
    """
    from tfuq.inference.prediction import UNCALIBRATED_SUFFIX, output_stem

    raw = tuple(f"{name}{UNCALIBRATED_SUFFIX}" for name in OUTPUT_MAPS)
    paths = output_paths(config.inference.save_seg_dir, output_stem(config, subject), (*OUTPUT_MAPS, *raw))
    return {
        name: load_volume(paths[f"{name}{UNCALIBRATED_SUFFIX}"], axcodes=axcodes or None)
        if paths[f"{name}{UNCALIBRATED_SUFFIX}"].exists()
        else load_volume(paths[name], axcodes=axcodes or None)
        for name in OUTPUT_MAPS
    }


def _model_normalisation(config: Config) -> NormalisationParams | None:
    """The stored target normalisation when scoring in normalised units (None in native units)."""
    if config.evaluation.target_units != NORMALISED:
        return None
    from tfuq.model_store import NORMALISATION_FILE, read_target_normalisation

    params = read_target_normalisation(config.model_dir)
    if params is None:
        raise UserError(
            f"{Path(config.model_dir) / NORMALISATION_FILE}: missing; [EVALUATION] target_units = "
            "normalised needs the target normalisation stored by tfuq train"
        )
    return params


def _evaluate_one(
    config: Config,
    subject: str,
    files: Mapping[str, Path],
    sources: Mapping[str, Any],
    recalibrator: Any,
    units: str,
    model_params: NormalisationParams | None = None,
    viewer_voxels: int = DEFAULT_MAX_VOXELS,
) -> tuple[dict[str, Any], SubjectCurves, Path, dict[str, Any]]:
    first = config.input_sections[0]
    maps = _load_maps(config, subject, sources[first].axcodes)
    ref = maps[MEAN]
    section = config.target_section
    target_volume = load_volume(files[section], axcodes=sources[section].axcodes or None)
    target = _on_grid(target_volume, ref, 1)
    mask_name = getattr(config.app, "mask", "")
    mask = None
    if mask_name and mask_name in files:
        mask = _on_grid(load_volume(files[mask_name], axcodes=sources[mask_name].axcodes or None), ref, 0) > 0
        mask = mask if mask.any() else None
    lesion_name = getattr(config.app, "lesion", "")
    lesion = labels = None
    if lesion_name and lesion_name in files:
        volume = load_volume(files[lesion_name], axcodes=sources[lesion_name].axcodes or None)
        labels = _on_grid(volume, ref, 0)
        lesion = labels != 0
    elif lesion_name:
        _LOG.warning(
            "%s: [%s] matches no file of this subject; no tumour/lesion metrics", subject, lesion_name
        )
    excluded = 0
    zero = (mask if mask is not None else np.ones(ref.shape, bool)) & (target == 0)
    if zero.sum() > 0.01 * (mask.sum() if mask is not None else zero.size):
        # a truth that is 0 over more than 1 % of the region is missing data (e.g. a cropped or
        # unregistered scan), not tissue: scored, it would count as error; exact 0 is rare otherwise
        excluded = int(zero.sum())
        _LOG.warning(
            "%s: the target is 0 in %.1f %% of the %s; those %d voxels are left out of the metrics",
            target_volume.name,
            100.0 * excluded / (mask.sum() if mask is not None else zero.size),
            "mask" if mask is not None else "image",
            excluded,
        )
        mask = ~zero if mask is None else mask & ~zero
    arrays = {name: v.array.reshape(ref.shape).astype(np.float64) for name, v in maps.items()}
    if model_params is not None:
        arrays = normalised_maps(arrays, model_params, mean_key=MEAN)
        on_grid = dataclasses.replace(ref.with_array(target), path=target_volume.path)
        target, params = normalised_target(sources[section], on_grid, mask)
        _LOG.info(
            "%s: truth normalised with its own %s (offset %.6g, scale %.6g), the maps with the model's "
            "(offset %.6g, scale %.6g)",
            subject,
            params.method,
            params.offset,
            params.scale,
            model_params.offset,
            model_params.scale,
        )
    num_bins = config.calibration.num_bins
    row, curves = evaluate_subject(
        arrays[MEAN],
        target,
        arrays[EPISTEMIC_STD],
        arrays[ALEATORIC_STD],
        arrays[TOTAL_STD],
        mask,
        lesion=lesion,
        subject=subject,
        recalibrator=None if isinstance(recalibrator, SigmaScaling) else recalibrator,
        settings=MetricSettings(num_bins=num_bins, seed=config.system.seed),
        return_curves=True,
    )
    if isinstance(recalibrator, SigmaScaling):
        regions = {"": mask if mask is not None else np.ones(ref.shape, bool), WHOLE_IMAGE_SUFFIX: None}
        for suffix, selector in regions.items():
            selector = np.ones(ref.shape, bool) if selector is None else selector
            scores, observed = sigma_scaled_scores(
                recalibrator,
                arrays[MEAN],
                target,
                arrays[EPISTEMIC_STD],
                arrays[ALEATORIC_STD],
                selector,
                num_bins=num_bins,
            )
            row.update({f"{k}_recalibrated{suffix}": v for k, v in scores.items()})
            if not suffix:
                calibration = {**curves.calibration, "observed_recalibrated": observed}
                curves = dataclasses.replace(curves, calibration=calibration)
    source_input = load_volume(files[first], axcodes=sources[first].axcodes or None)
    input_image = _on_grid(source_input, ref, 1)
    row.update(_baselines(arrays[MEAN], target, input_image, mask, labels, excluded))
    noise_name = getattr(config.app, "noise_std", "")
    if noise_name and noise_name in files:  # the phantom's true noise std: the aleatoric map's oracle
        noise = _on_grid(load_volume(files[noise_name], axcodes=sources[noise_name].axcodes or None), ref, 1)
        versus = aleatoric_vs_noise(arrays[ALEATORIC_STD], np.maximum(noise, 0.0), mask)
        row["aleatoric_vs_noise_spearman"] = versus["spearman"]
        if model_params is None:  # same units as the true noise std
            row["aleatoric_vs_noise_ratio"] = versus["ratio"]
    panels = {  # the same six panels in the montage PNG and the report's slice viewer
        "input_image": input_image,
        "target": target,
        "mean": arrays[MEAN],
        "epistemic_std": arrays[EPISTEMIC_STD],
        "aleatoric_std": arrays[ALEATORIC_STD],
        "units": units,
        "affine": ref.affine,
    }
    montage = write_subject_montage(
        config.evaluation.save_csv_dir, subject, **panels, overwrite=config.evaluation.overwrite
    )
    viewer = viewer_payload(subject, **panels, file_affine=ref.original_affine, max_voxels=viewer_voxels)
    return row, curves, montage, viewer


def _baselines(
    mean: np.ndarray,
    target: np.ndarray,
    input_image: np.ndarray,
    mask: np.ndarray | None,
    labels: np.ndarray | None,
    excluded: int,
) -> dict[str, float]:
    """Pearson, the trivial baselines, MAE over the constant's, MAE per lesion label, excluded voxels."""
    out = {"pearson": pearson(target, mean, mask), **baseline_metrics(target, input_image, mask)}
    inside = resolve_mask(mask, target.shape)
    error = np.abs(target - mean)
    out["mae_over_constant"] = float(error[inside].mean()) / max(out["baseline_constant_mae"], 1e-12)
    if labels is not None:
        for value in np.unique(labels[inside & (labels != 0)]):
            out[f"mae_label_{int(value)}"] = float(error[inside & (labels == value)].mean())
    out["excluded_zero_target_voxels"] = excluded
    return out


def _calibration_record(config: Config) -> dict[str, Any] | None:
    """Where the stored recalibration was fitted (dataset, subjects, in_sample), or None."""
    import json

    from tfuq.calibration.stored import CALIBRATION_DIR, SUMMARY_FILE

    path = Path(config.model_dir) / CALIBRATION_DIR / SUMMARY_FILE
    if config.calibration.method == "none" or not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    record = {key: stored.get(key) for key in ("dataset", "subjects", "in_sample")}
    if record["in_sample"] is None:  # written before in_sample was recorded
        record["in_sample"] = record["dataset"] == "Training"
    if record["in_sample"]:
        _LOG.warning("the recalibration was fitted on Training subjects (in-sample): scores are optimistic")
    return {"method": stored.get("chosen_method", config.calibration.method), **record}


def run_evaluation(config: Config) -> dict[str, Any]:
    """Evaluate the inferred subjects and write the report (see the module notes).

    Returns:
        The summary (as in ``summary.json``) with ``"paths"`` of the files written.

    Raises:
        UserError: an output folder that is a file or not writable, no
            subject with a target, no trained model for missing
            maps, existing outputs without ``[EVALUATION] overwrite``, or no
            ``normalisation.json`` in ``model_dir`` with ``target_units =
            normalised``.
    """
    import json

    from tfuq.stages.infer import run_inference

    out_dir = check_output_folder(config.evaluation.save_csv_dir, "[EVALUATION] save_csv_dir")
    note_outside_model_dir(out_dir, config.model_dir)
    sources = resolve_sources(config)
    chosen = _evaluation_subjects(config, sources)
    if not config.evaluation.overwrite:
        existing = [out_dir / name for name in REPORT_FILES.values() if (out_dir / name).exists()]
        if existing:
            raise UserError(
                f"{existing[0]}: already exists; refusing to overwrite: set [EVALUATION] overwrite = true "
                "or use another save_csv_dir"
            )
    missing = _missing(config, chosen)
    if missing:
        _LOG.info("no inference maps for %s: running tfuq infer on them first", ", ".join(missing))
        run_inference(config, subjects=missing)
    recalibrator = load_calibration(config.model_dir, config.calibration.method)
    units = evaluation_units(config)
    model_params = _model_normalisation(config)
    rows, curves, montages, viewers = [], [], {}, []
    for subject, files in chosen.items():
        row, curve, montage, viewer = _evaluate_one(
            config, subject, files, sources, recalibrator, units, model_params, viewer_budget(len(chosen))
        )
        viewers.append(viewer)
        rows.append(row)
        curves.append(curve)
        montages[subject] = montage
        _LOG.info(
            "%s: MAE %.4g%s, coverage_90 %.3f, calibration RMS error %.4f (recalibrated %s)",
            subject,
            row["mae"],
            f" {units}" if units else "",
            row["coverage_90"],
            row["calibration_rms_error"],
            "n/a"
            if math.isnan(row["calibration_rms_error_recalibrated"])
            else f"{row['calibration_rms_error_recalibrated']:.4f}",
        )
    paths = write_report(
        out_dir,
        rows,
        curves,
        montages=montages,
        viewers=viewers,
        units=units,
        title=f"tfuq evaluation: {config.path.name}",
        overwrite=config.evaluation.overwrite,
        evaluations=config.evaluation.evaluations,
        extra={"target_units": config.evaluation.target_units, "calibration": _calibration_record(config)},
    )
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    return {**summary, "paths": {name: str(p) for name, p in {**paths, **montages}.items()}}
