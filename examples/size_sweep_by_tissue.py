"""Where a size-sweep model's epistemic std rises, tissue by tissue (a diagnostic for issue #6).

Reads the size-sweep models that ``tfuq validate-uq`` kept (run it with
``--set EVALUATION.size_sweep_keep=true``; their records are in
``validate_uq.json``), predicts the first held-out phantom subject with each (its members as one
ensemble),
as validate-uq scored it (same T, window and seeded dropout streams), and
prints the mean epistemic and aleatoric std (target units) per phantom tissue
inside the body.

Usage:
    .venv/bin/tfuq validate-uq configs/demo_mr2ct.ini --set EVALUATION.size_sweep_keep=true
    .venv/bin/python examples/size_sweep_by_tissue.py configs/demo_mr2ct.ini \\
        --set EVALUATION.size_sweep_keep=true

    Further ``--set SECTION.key=value`` arguments must repeat validate-uq's.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from tfuq.config import load_config
from tfuq.data.sources import resolve_sources
from tfuq.experiments.validate_uq import held_out_subjects
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR
from tfuq.inference.prediction import predict_subject, prediction_settings
from tfuq.model_store.trained import load_trained_model


def main(argv: list[str]) -> int:
    """Print the per-tissue table of every kept size-sweep model; returns the exit code."""
    path = Path(argv[0]) if argv else Path("configs/demo_mr2ct.ini")
    overrides = [v for k, v in itertools.pairwise(argv[1:]) if k == "--set"]
    config = load_config(path, overrides)
    summary = json.loads((Path(config.evaluation.save_csv_dir) / "validate_uq.json").read_text())
    records = [r for r in summary["size_sweep"].get("models", []) if r["members"][0]["model_dir"]]
    if not records:
        print("no kept size-sweep models: run tfuq validate-uq with --set EVALUATION.size_sweep_keep=true")
        return 2
    sources = resolve_sources(config)
    subject = held_out_subjects(config, sources)[0]
    settings = prediction_settings(config, mc_samples=config.evaluation.uq_mc_samples or None)
    folder = Path(sources[config.target_section].path_to_search[0])
    labels = np.asarray(nib.load(folder / f"{subject.id}_labels.nii.gz").dataobj).astype(int)
    names = {v: k for k, v in json.loads((folder / "phantom.json").read_text())["labels"].items()}
    region = subject.mask if subject.mask is not None else np.ones(subject.shape, bool)
    for record in records:
        members = [load_trained_model(m["model_dir"]) for m in record["members"]]
        maps = predict_subject(members, subject.normalised(), settings)
        scale = members[0].target_normalisation.scale
        epi = np.sqrt(np.maximum(maps[EPISTEMIC_VAR], 0.0)) * scale
        ale = np.sqrt(np.maximum(maps[ALEATORIC_VAR], 0.0)) * scale
        scored = record["mean_epistemic_std"][subject.id]
        stops = [m["final_step"] for m in record["members"]]
        print(f"repeat {record['repeat']}, {record['size']} subject(s) {record['subjects']}, stopped at "
              f"{stops}: {subject.id} epistemic mean {epi[region].mean():.1f} "
              f"(validate-uq {scored:.1f}), median {np.median(epi[region]):.1f}")  # fmt: skip
        for label in np.unique(labels[region]):
            inside = region & (labels == label)
            print(f"  {names.get(int(label), label):16s} {inside.sum():7d} voxels  epistemic "
                  f"{epi[inside].mean():7.1f}  aleatoric {ale[inside].mean():7.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
