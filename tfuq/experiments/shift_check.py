"""``tfuq shift-check``: run a trained model on shifted scans and report whether the flag fires.

For each held-out subject of the split's Inference phase (or those named), the
first input is written clean and under each shift of
:func:`tfuq.experiments.shift.shifted_input` (``swap`` takes another contrast
of the same subject: the input's file name with its ``filename_contains``
keyword replaced, e.g. ``_t1`` -> ``_flair``); other subjects (another site)
can be added as they are. Every case gets its subject's mask section file
when the config has one and the subject has it on the input's grid, else the
mask ``clean input > 0`` (skull-stripped data, e.g. an external scan), and the
same inference as ``tfuq infer`` (model, calibration, T, QC references of
``tfuq calibrate``). The result,
``<out_dir>/shift_check.json``, lists per case the reliability scores and
flags of ``qc.json`` and the mean stds, and per score the AUROC of shifted
(and external) against clean cases (:func:`tfuq.experiments.shift.shift_auroc`).
Where the truth is known (the subject's target file; for an external scan the
file beside it named with the target's ``filename_contains`` keyword in place
of the input's, e.g. ``_t1`` -> ``_t2``) each case also gets the MAE and
Pearson correlation of its mean map inside its mask, in the units
``tfuq evaluate`` scores in (normalised with the truth's own fit when the model
normalises its target): a flag is worth its false alarms only if the flagged
scans are the ones the model gets wrong, and a shift the normalisation removes
(a global rescale of a z-scored input) leaves the prediction unchanged.

Nothing of the model_dir is changed; the cases and maps go under ``out_dir``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfuq.atomic import write_json
from tfuq.config import Config, load_config
from tfuq.errors import UserError
from tfuq.experiments.shift import shift_auroc, shifted_input

__all__ = ["run_shift_check"]

_LOG = logging.getLogger(__name__)
_SHIFTS = ("bias_field", "noise3x", "rescale")


def _save(array: np.ndarray, like: Any, path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, like.affine, like.header), path)


def _truth_files(config: Config, subjects: Sequence[str], external: Mapping[str, Path]) -> dict[str, Path]:
    """Subject or external case id -> its target file, where one is known (see the module notes)."""
    from tfuq.data.sources import resolve_sources
    from tfuq.inference.subject_inputs import find_inference_subjects

    target = config.target_section
    found = find_inference_subjects(config, resolve_sources(config))
    truths = {s: Path(found[s][target]) for s in subjects if s in found and target in found[s]}
    keyword = (config.sources[config.input_sections[0]].filename_contains or ("",))[0]
    wanted = (config.sources[target].filename_contains or ("",))[0]
    for case, path in external.items():
        path = Path(path)
        if keyword and wanted and keyword in path.name:
            other = path.with_name(path.name.replace(keyword, wanted, 1))
            if other.is_file():
                truths[case] = other
    return truths


def _case_error(config: Config, truth: Path, mean: Path, mask: Path) -> dict[str, float]:
    """MAE and Pearson of a case's mean map against the truth inside the case's mask."""
    from tfuq.data.nifti import load_volume
    from tfuq.evaluation import image_metrics as im
    from tfuq.evaluation.baselines import pearson
    from tfuq.evaluation.units import normalised_maps, normalised_target
    from tfuq.model_store.normalisation import read_target_normalisation

    source = config.sources[config.target_section]
    axcodes = source.axcodes or None
    target, prediction = load_volume(truth, axcodes=axcodes), load_volume(mean, axcodes=axcodes)
    inside = load_volume(mask, axcodes=axcodes).array > 0
    if target.array.shape != prediction.array.shape or inside.shape != target.array.shape:
        _LOG.warning("%s: not on the grid of %s; no error for this case", truth, mean)
        return {}
    y, p = target.array.astype(np.float64), prediction.array.astype(np.float64)
    params = read_target_normalisation(config.model_dir)
    if params is not None:
        y, _ = normalised_target(source, target, inside)
        p = normalised_maps({"mean": p}, params)["mean"]
    return {"mae": im.mae(y, p, inside), "pearson": pearson(y, p, inside)}


def _cases(
    config: Config, subjects: Sequence[str], swaps: Mapping[str, str], external: Mapping[str, Path]
) -> tuple[dict[str, tuple[str, Path, Any]], dict[str, Path]]:
    """Case id -> (kind, clean input file, shift or swap file); case id -> its subject's mask file."""
    from tfuq.data.sources import resolve_sources
    from tfuq.inference.subject_inputs import find_inference_subjects

    section = config.input_sections[0]
    found = find_inference_subjects(config, resolve_sources(config))
    keyword = (config.sources[section].filename_contains or ("",))[0]
    mask_section = getattr(config.app, "mask", "")
    cases: dict[str, tuple[str, Path, Any]] = {}
    masks: dict[str, Path] = {}
    for subject in subjects:
        if subject not in found:
            raise UserError(f"shift-check: no input files for subject {subject!r}")
        source = Path(found[subject][section])
        first = len(cases)
        cases[f"{subject}-clean"] = ("clean", source, None)
        for shift in _SHIFTS:
            cases[f"{subject}-{shift}"] = ("shifted", source, shift)
        for name, pattern in swaps.items():
            if not keyword or keyword not in source.name:
                raise UserError(
                    f"shift-check: [{section}] filename_contains is needed to find the {name} file"
                )
            other = source.with_name(source.name.replace(keyword, pattern, 1))
            if not other.is_file():
                raise UserError(f"shift-check: {other}: missing (the {name} given in place of [{section}])")
            cases[f"{subject}-swap_{name}"] = ("shifted", source, other)
        if mask_section and mask_section in found[subject]:
            masks.update({case: Path(found[subject][mask_section]) for case in list(cases)[first:]})
    for case, path in external.items():
        if not Path(path).is_file():
            raise UserError(f"shift-check: {path}: missing")
        cases[f"{case}-external"] = ("external", Path(path), None)
    return cases, masks


def run_shift_check(
    config_path: Path,
    out_dir: Path,
    *,
    overrides: Sequence[str] = (),
    subjects: Sequence[str] = (),
    swaps: Mapping[str, str] | None = None,
    external: Mapping[str, Path] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the shifted cases, infer them, and summarise the reliability scores (see the module notes).

    Args:
        config_path: The model's INI.
        out_dir: New or empty folder for the cases, maps and ``shift_check.json``.
        overrides: ``SECTION.key=value`` applied to the config.
        subjects: Subjects to shift; default the split's Inference subjects.
        swaps: Contrast name -> file keyword replacing the input's (e.g. ``{"flair": "_flair"}``).
        external: Case id -> input file of a subject from elsewhere (e.g. another site).
        seed: Noise seed.

    Returns:
        The summary written to ``shift_check.json``.

    Raises:
        UserError: a non-empty ``out_dir``, missing files or subjects.
    """
    import nibabel as nib

    from tfuq.data.split import INFERENCE, read_split, subjects_in_phase
    from tfuq.stages.infer import run_inference

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir}: not empty; shift-check writes into a new or empty folder")
    config = load_config(config_path, overrides)
    if not subjects:
        subjects = subjects_in_phase(read_split(Path(config.system.dataset_split_file)), INFERENCE)
    cases, masks = _cases(config, subjects, swaps or {}, external or {})
    inputs = out_dir / "cases"
    inputs.mkdir(parents=True)
    section, mask = config.input_sections[0], getattr(config.app, "mask", "")
    for case, (_, source, shift) in cases.items():
        image = nib.load(source)
        clean = np.asarray(image.dataobj, dtype=np.float32)
        brain = clean > 0
        if case in masks:
            own = np.asarray(nib.load(masks[case]).dataobj) > 0
            brain = own if own.shape == clean.shape else brain
        if isinstance(shift, Path):
            values = shifted_input(clean, "swap", brain, other=np.asarray(nib.load(shift).dataobj))
        elif shift:
            values = shifted_input(clean, shift, brain, seed=seed)
        else:
            values = clean
        _save(values.astype(np.float32), image, inputs / f"{case}_input.nii.gz")
        _save(brain.astype(np.uint8), image, inputs / f"{case}_brainmask.nii.gz")
    sets = [
        f"{section}.path_to_search={inputs}",
        f"{section}.filename_contains=_input",
        f"{section}.filename_not_contains=",
        f"{section}.csv_file=",
        f"SYSTEM.dataset_split_file={out_dir / 'no_split.csv'}",
        "INFERENCE.dataset_to_infer=all",
        f"INFERENCE.save_seg_dir={out_dir / 'maps'}",
    ]
    if mask:
        sets += [
            f"{mask}.path_to_search={inputs}",
            f"{mask}.filename_contains=_brainmask",
            f"{mask}.filename_not_contains=",
            f"{mask}.csv_file=",
        ]
    result = run_inference(load_config(config_path, [*overrides, *sets]), overwrite=False)
    truths = _truth_files(config, subjects, external or {})
    rows = {}
    for case, (kind, _, _) in cases.items():
        qc = result.qc[case]
        scores = qc.get("reliability", {}).get("scores", {})
        rows[case] = {
            "kind": kind,
            "flagged": qc["flagged"],
            "mean_total_std": qc["total_std"]["mean"],
            "mean_epistemic_std": qc["epistemic_std"]["mean"],
            **{f"{name}_score": v["score"] for name, v in scores.items()},
            **{f"{name}_flagged": v["flagged"] for name, v in scores.items()},
        }
        truth = truths.get(case.rsplit("-", 1)[0])
        mean = out_dir / "maps" / f"{case}{config.inference.output_postfix}_mean.nii.gz"
        if truth is not None and mean.is_file():
            rows[case].update(_case_error(config, truth, mean, inputs / f"{case}_brainmask.nii.gz"))
    summary: dict[str, Any] = {"config": str(config_path), "cases": rows, "auroc": {}}
    keys = sorted({k for r in rows.values() for k in r if k.endswith("_score")} | {"mean_epistemic_std"})
    for key in keys:
        clean = [r[key] for r in rows.values() if r["kind"] == "clean" and key in r]
        other = [r[key] for r in rows.values() if r["kind"] != "clean" and key in r]
        summary["auroc"][key] = shift_auroc(clean, other) if clean and other else math.nan
    for kind in ("clean", "shifted", "external"):
        summary[f"{kind}_flagged"] = sum(bool(r["flagged"]) for r in rows.values() if r["kind"] == kind)
    write_json(out_dir / "shift_check.json", summary)
    for case, row in rows.items():
        scores = ", ".join(
            f"{k} {v:.3f}" for k, v in row.items() if k.endswith("_score") or k in ("mae", "pearson")
        )
        _LOG.info("%s (%s): %s%s", case, row["kind"], scores, " -- FLAGGED" if row["flagged"] else "")
    _LOG.info("AUROC shifted/external vs clean: %s", json.dumps(summary["auroc"]))
    return summary
