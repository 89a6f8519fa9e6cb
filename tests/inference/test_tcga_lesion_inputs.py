"""configs/tcga_t1t2.ini on the real TCGA-LGG cases: both subjects, the split, the lesion role
(tumour labels as a boolean map, never a network input); a slow end-to-end train/infer/evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.config import load_config
from tfuq.data import read_split
from tfuq.data.sources import resolve_sources
from tfuq.inference.subject_inputs import find_inference_subjects, load_inference_subject

REPO_ROOT = Path(__file__).resolve().parents[2]
INI = REPO_ROOT / "configs" / "tcga_t1t2.ini"
SUBJECTS = ("TCGA-DU-7294", "TCGA-FG-6692")


def _config(tcga_dir: Path, *overrides: str):
    folders = ", ".join(str(tcga_dir / s) for s in SUBJECTS)
    sections = ("T1", "T2", "BRAIN", "TUMOUR")
    return load_config(INI, [*(f"{s}.path_to_search={folders}" for s in sections), *overrides])


def test_config_finds_both_subjects_with_the_lesion(tcga_dir: Path) -> None:
    config = _config(tcga_dir)
    assert config.app.lesion == "TUMOUR" and config.input_sections == ("T1",)
    assert read_split(config.system.dataset_split_file) == {SUBJECTS[0]: "Training", SUBJECTS[1]: "Inference"}
    sources = resolve_sources(config)
    found = find_inference_subjects(config, sources)
    assert sorted(found) == list(SUBJECTS)
    for subject, files in found.items():
        assert files["T1"].name == f"{subject}_t1.nii.gz"  # not the post-contrast _t1c
        assert files["TUMOUR"].name == f"{subject}_tumor_seg.nii.gz"
        assert files["BRAIN"].name == f"{subject}_t1.nii.gz"


def test_lesion_is_loaded_as_a_boolean_map_and_not_as_an_input(tcga_dir: Path) -> None:
    config = _config(tcga_dir)
    sources = resolve_sources(config)
    subject = SUBJECTS[1]
    inputs = load_inference_subject(
        config, subject, find_inference_subjects(config, sources)[subject], sources
    )
    assert inputs.raw.shape[-1] == 1 and len(inputs.normalisation) == 1
    labels = np.asarray(nib.load(tcga_dir / subject / f"{subject}_tumor_seg.nii.gz").dataobj)
    assert inputs.lesion is not None and inputs.lesion.dtype == bool
    assert int(inputs.lesion.sum()) == int(np.count_nonzero(labels)) > 0
    # The brain mask is the skull-stripped T1 > 0 and holds almost all of the tumour.
    assert inputs.mask is not None and np.mean(inputs.mask[inputs.lesion]) > 0.99


@pytest.mark.slow
def test_tiny_tcga_pipeline_gives_finite_lesion_keys(tcga_dir: Path, tmp_path: Path) -> None:
    from tfuq.stages.calibrate import run_calibration
    from tfuq.stages.evaluate import run_evaluation
    from tfuq.stages.train import train

    config = _config(
        tcga_dir,
        f"SYSTEM.model_dir={tmp_path}",
        f"SYSTEM.dataset_split_file={INI.parent / 'tcga_t1t2_split.csv'}",
        "NETWORK.base_filters=4",
        "NETWORK.batch_size=2",
        "TRAINING.max_iter=3",
        "TRAINING.save_every_n=0",
        "TRAINING.tensorboard_every_n=0",
        "UNCERTAINTY.mc_samples=2",
        "CALIBRATION.max_voxels=10000",
    )
    train(config)
    run_calibration(config)
    summary = run_evaluation(config)  # infers the test subject first
    assert summary["subjects"] == [SUBJECTS[1]]
    for key in ("lesion_epistemic_ratio", "lesion_epistemic_auroc", "lesion_aleatoric_ratio", "lesion_mae"):
        assert math.isfinite(summary[key]), key
    assert 0.0 <= summary["lesion_epistemic_auroc"] <= 1.0
    written = json.loads(Path(summary["paths"]["summary"]).read_text())
    assert written["lesion_num_voxels"] > 0 and math.isfinite(written["nonlesion_mae"])
    assert "Lesion against the rest of the mask" in Path(summary["paths"]["html"]).read_text()
