"""Diagnostic for issue #6: where a size-sweep model's epistemic std rises, tissue by tissue.

Trains the demo's size-sweep models exactly as ``tfuq validate-uq`` does (same
nested subsets, seed, stopping rule and best-validation weights; needs the
trained demo model's split, i.e. run ``make demo`` or ``tfuq train`` first) and
prints the mean epistemic and aleatoric std (target units) per phantom tissue
of the first held-out subject. Research aid, not part of the package API: it
uses validate-uq's internals.

Usage:
    .venv/bin/python examples/size_sweep_by_tissue.py [CONFIG] [SIZE ...]

    CONFIG defaults to configs/demo_mr2ct.ini, SIZE to 2 4 (sizes of the
    config's ``[EVALUATION] size_sweep``). Models go to
    ``<model_dir>/size_sweep_by_tissue/n<SIZE>`` (refused if it exists).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from tfuq.config import load_config
from tfuq.config.sections import INFERENCE, TRAINING, VALIDATION
from tfuq.data.sources import resolve_sources
from tfuq.data.split import read_split, write_split
from tfuq.evaluation import validate_uq as uq
from tfuq.evaluation.validation import nested_subsets
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR
from tfuq.inference.predict_subject import predict_subject
from tfuq.inference.trained_model import load_trained_model
from tfuq.training.job import run_training


def main(argv: list[str]) -> int:
    """Train the requested sweep sizes and print the per-tissue table; returns the exit code."""
    path = Path(argv[0]) if argv and not argv[0].isdigit() else Path("configs/demo_mr2ct.ini")
    wanted = [int(a) for a in argv if a.isdigit()] or [2, 4]
    config = load_config(path)
    sources = resolve_sources(config)
    subject = uq._held_out(config, sources)[0]
    settings = uq.prediction_settings(config, mc_samples=config.evaluation.uq_mc_samples or None)
    split = read_split(config.system.dataset_split_file)
    train_ids = sorted(i for i, p in split.items() if p == TRAINING)
    held = {subject.id: INFERENCE} | {i: VALIDATION for i, p in split.items() if p == VALIDATION}
    folder = Path(sources[config.target_section].path_to_search[0])
    labels = np.asarray(nib.load(folder / f"{subject.id}_labels.nii.gz").dataobj).astype(int)
    names = {v: k for k, v in json.loads((folder / "phantom.json").read_text())["labels"].items()}
    region = uq._region(subject)
    sizes = list(config.evaluation.size_sweep)
    for subset in nested_subsets(train_ids, sizes, seed=config.system.seed):
        if len(subset) not in wanted:
            continue
        out = Path(config.model_dir) / "size_sweep_by_tissue" / f"n{len(subset)}"
        out.mkdir(parents=True)
        write_split(out / "dataset_split.csv", {**{i: TRAINING for i in subset}, **held})
        prior = len(train_ids) / len(subset)
        run_training(uq.size_sweep_config(config, out, seed=config.system.seed, prior_scale=prior))
        member = load_trained_model(out, best=True)
        maps = predict_subject([member], subject.normalised(), settings)
        scale = member.target_normalisation.scale
        epi = uq._std(maps, EPISTEMIC_VAR, scale)
        ale = uq._std(maps, ALEATORIC_VAR, scale)
        print(f"{len(subset)} subject(s) {subset}: epistemic mean {epi[region].mean():.1f}, "
              f"median {np.median(epi[region]):.1f}")  # fmt: skip
        for label in np.unique(labels[region]):
            inside = region & (labels == label)
            print(f"  {names.get(int(label), label):16s} {inside.sum():7d} voxels  epistemic "
                  f"{epi[inside].mean():7.1f}  aleatoric {ale[inside].mean():7.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
