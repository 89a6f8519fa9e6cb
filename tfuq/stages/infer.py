"""``tfuq infer CONFIG``: mean and uncertainty maps of every subject to infer.

The steps of :func:`run_inference`:

0. checks that write nothing: the output folder ``[INFERENCE] save_seg_dir``
   can be written (not a file, not under a file, writable; a folder outside
   model_dir, given as an absolute path, is logged), and the config does not
   contradict the model (:func:`tfuq.model_store.contract.check_matches_model`:
   network, head, input geometry and normalisation as in
   ``<model_dir>/training_config.ini``);
1. the trained model of ``model_dir`` (a one-line error when there is none:
   run tfuq train first) and the members of ``[UNCERTAINTY] ensemble``
   (:mod:`tfuq.model_store.trained`);
2. the recalibration chosen by ``[CALIBRATION] method`` when ``tfuq
   calibrate`` stored it (:mod:`tfuq.calibration.stored`);
3. the subjects of ``[INFERENCE] dataset_to_infer`` (default ``Inference``;
   every subject when there is no split file or with ``all``);
4. what a killed run left in the output folder is cleaned up
   (:func:`tfuq.atomic.recover_interrupted`: its unfinished sets and temp
   files removed, a set it was moving into place completed); then outputs
   that already exist are refused before any work, unless
   ``[INFERENCE] overwrite = true``;
5. per subject, with a progress bar over its windows: inputs read and
   normalised as at training (:mod:`tfuq.inference.subject_inputs`), T MC
   passes per window (:mod:`tfuq.inference.mc`, through :mod:`tfuq.inference.engine`), the ensemble merge
   and the files (:mod:`tfuq.inference.prediction`):
   ``<subject>_{mean,epistemic_std,aleatoric_std,total_std}.nii.gz`` in the
   target's units on the input's grid (+ ``_alpha``, ``_beta`` for the
   generalized normal), recalibrated when ``tfuq calibrate`` stored a
   recalibration (:mod:`tfuq.calibration.moment_recalibration`, the same
   maps the exported SavedModel serves), the model's raw std maps as
   ``*_std_uncalibrated``, ``_lower95`` / ``_upper95``, and
   ``<subject>_qc.json`` with the reliability scores and the ``flagged``
   decision. A subject's files are written as one set (a staging folder in
   the output folder, moved into place when all are written), so a kill
   leaves all of them or none.

``files`` replaces step 3's search with given files
(``tfuq infer MODEL_DIR --image SECTION=FILE``, :mod:`tfuq.inference.scans`).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tfuq.atomic import check_output_folder, recover_interrupted
from tfuq.calibration.stored import load_calibration
from tfuq.config import Config
from tfuq.config.paths import note_outside_model_dir
from tfuq.config.sections import INFERENCE
from tfuq.data.sources import resolve_sources
from tfuq.data.split import read_split
from tfuq.errors import UserError
from tfuq.inference.prediction import (
    check_windows,
    feature_scores,
    feature_window,
    predict_subject,
    prediction_settings,
    subject_output_paths,
    windows_per_subject,
    write_subject,
)
from tfuq.inference.subject_inputs import find_inference_subjects, load_inference_subject
from tfuq.model_store.contract import check_matches_model
from tfuq.model_store.trained import load_members

__all__ = ["InferenceResult", "infer", "inference_subjects", "open_output_folder", "run_inference"]

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class InferenceResult:
    """What an inference wrote.

    Attributes:
        out_dir: ``[INFERENCE] save_seg_dir``.
        qc: Subject id -> its QC summary (with ``"paths"`` of every file).
    """

    out_dir: Path
    qc: dict[str, dict[str, Any]]


def infer(config: Config) -> None:
    """The ``tfuq infer`` stage: see :func:`run_inference`."""
    run_inference(config)


def inference_subjects(
    config: Config, sources: Mapping[str, Any], phase: str | None = None
) -> dict[str, dict[str, Path]]:
    """Subjects of ``phase`` (default ``[INFERENCE] dataset_to_infer`` or ``Inference``) with their files.

    Every subject with input files is used when ``phase`` is ``"all"`` or
    when the split file does not exist.

    Raises:
        UserError: no subject with input files in that phase.
    """
    found = find_inference_subjects(config, sources)
    phase = phase or config.inference.dataset_to_infer or INFERENCE
    split_file = Path(config.system.dataset_split_file)
    if phase == "all":
        return found
    if not split_file.exists():
        _LOG.info("no dataset split file %s: using all %d subjects", split_file, len(found))
        return found
    split = read_split(split_file)
    chosen = {i: files for i, files in found.items() if split.get(i) == phase}
    if not chosen:
        raise UserError(
            f"{split_file}: no {phase} subject with input files; "
            "set [INFERENCE] dataset_to_infer (e.g. all) or check the split"
        )
    return chosen


def open_output_folder(config: Config) -> Path:
    """``[INFERENCE] save_seg_dir``, checked before anything is written, with a killed run's debris gone.

    Refuses a folder that is a file, lies under a file or is not writable;
    logs a folder outside model_dir; removes the unfinished sets and temp
    files an interrupted run left there and completes a set it was moving in
    (:func:`tfuq.atomic.recover_interrupted`).

    Raises:
        UserError: the folder cannot be written.
    """
    out_dir = check_output_folder(config.inference.save_seg_dir, "[INFERENCE] save_seg_dir")
    note_outside_model_dir(out_dir, config.model_dir)
    recover_interrupted(out_dir)
    return out_dir


def _check_free(paths: Iterable[Path]) -> None:
    existing = [p for p in paths if p.exists()]
    if existing:
        raise UserError(
            f"{existing[0]}: already exists ({len(existing)} output file(s)); refusing to overwrite: "
            "pass --overwrite (or set [INFERENCE] overwrite = true), or write elsewhere (--output-dir)"
        )


def _shard(config: Config, chosen: dict[str, Any]) -> dict[str, Any]:
    """This process's share of the subjects: ``[INFERENCE] num_shards`` / ``shard_index``.

    Every subject's maps depend only on the subject and the seed (the dropout streams restart per
    subject), so N processes with indices 0..N-1 into one folder write the files one process writes.
    """
    count, index = config.inference.num_shards, config.inference.shard_index
    if index >= count:
        raise UserError(
            f"{config.path}: [INFERENCE] shard_index = {index}: expected 0 .. num_shards - 1 = {count - 1}"
        )
    if count == 1:
        return chosen
    ids = sorted(chosen)
    mine = {i: chosen[i] for k, i in enumerate(ids) if k % count == index}
    _LOG.info("shard %d of %d: %d of %d subject(s)", index + 1, count, len(mine), len(ids))
    return mine


def run_inference(
    config: Config,
    *,
    subjects: Iterable[str] | None = None,
    overwrite: bool | None = None,
    files: Mapping[str, Mapping[str, Path]] | None = None,
) -> InferenceResult:
    """Predict and write the maps of the subjects to infer (see the module notes).

    Args:
        config: The loaded configuration.
        subjects: Restrict to these subject ids (default: the whole phase).
        overwrite: Override ``[INFERENCE] overwrite``.
        files: Subject id -> section name -> file, instead of searching the
            config's folders and split (``tfuq infer MODEL --image``).

    Returns:
        InferenceResult.

    Raises:
        UserError: an output folder that cannot be written, a config that
            contradicts the stored model, no trained model, no subject,
            existing outputs, bad data.
    """
    import click

    check_output_folder(config.inference.save_seg_dir, "[INFERENCE] save_seg_dir")
    check_matches_model(config, "tfuq infer")
    members = load_members(config)
    recalibrator = load_calibration(config.model_dir, config.calibration.method)
    settings = prediction_settings(config)
    saved = members[0].model  # as trained: the reliability features use its own window
    members = check_windows(members, settings)
    overwrite = config.inference.overwrite if overwrite is None else overwrite
    if files is None:
        sources = resolve_sources(config)
        chosen = inference_subjects(config, sources)
    else:
        sources, chosen = dict(config.sources), {i: dict(f) for i, f in files.items()}
    if subjects is not None:
        wanted = set(subjects)
        chosen = {i: files for i, files in chosen.items() if i in wanted}
    chosen = _shard(config, chosen)
    planned = [  # also checks that every id can be a file name, before anything is written
        subject_output_paths(config, subject, family=config.family, calibrated=recalibrator is not None)
        for subject in chosen
    ]
    out_dir = open_output_folder(config)
    if not overwrite:
        for paths in planned:
            _check_free(paths.values())
    _LOG.info(
        "inferring %d subject(s) with T = %d, window %s, into %s%s",
        len(chosen),
        settings.mc_samples,
        "x".join(map(str, settings.window)),
        out_dir,
        f" ({type(recalibrator).__name__} intervals)" if recalibrator is not None else "",
    )
    result = InferenceResult(out_dir, {})
    params = members[0].target_normalisation
    for subject_id, subject_files in chosen.items():
        subject = load_inference_subject(config, subject_id, subject_files, sources)
        total = windows_per_subject(subject.shape, settings, len(members))
        with click.progressbar(length=total, label=f"infer {subject_id}", file=sys.stderr) as bar:
            maps = predict_subject(members, subject.normalised(), settings, progress=bar.update)
        extra = feature_scores(config, saved, feature_window(saved, settings), subject)
        qc = write_subject(
            config, subject, maps, params, recalibrator=recalibrator, overwrite=overwrite, extra_scores=extra
        )
        result.qc[subject_id] = qc
        reliability = qc.get("reliability", {}).get("scores", {})
        _LOG.info(
            "%s: mean total std %.4g in the mask%s%s",
            subject_id,
            qc["total_std"]["mean"],
            "".join(
                f", {name} score {v['score']:.3f} (flag above {v['threshold']:.3f})"
                for name, v in reliability.items()
            ),
            " -- FLAGGED as unreliable" if qc["flagged"] else "",
        )
    return result
