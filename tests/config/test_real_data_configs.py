"""The real-data configs: they load, the committed split is as documented, and (when the shared data
are present) each subject's target is normalised by its own brain statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.config import load_config
from tfuq.data import read_split

REPO = Path(__file__).resolve().parents[2]
BRATS = REPO.parent / "shared" / "data" / "brats2018"
CONFIGS = [REPO / "configs" / "brats_t1t2.ini", REPO / "applications" / "brats_t1t2.ini"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_brats_configs_load_with_per_subject_targets(path: Path) -> None:
    config = load_config(path)
    assert config.per_subject_target and config.evaluation.target_units == "normalised"
    assert config.app.lesion == "TUMOUR" and config.app.mask == "BRAIN"
    assert Path(config.system.dataset_split_file) == REPO / "configs" / "brats_t1t2_split.csv"


def test_committed_split_is_the_seeded_permutation_it_documents() -> None:
    split = read_split(REPO / "configs" / "brats_t1t2_split.csv")
    assert Counter(split.values()) == {"Training": 12, "Validation": 2, "Calibration": 2, "Inference": 2}
    ids = sorted(split)
    order = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]
    phases = ["Inference"] * 2 + ["Calibration"] * 2 + ["Validation"] * 2 + ["Training"] * 12
    assert dict(zip(order, phases)) == split
    if BRATS.is_dir():
        assert sorted(p.name for p in BRATS.iterdir() if p.is_dir()) == ids


@pytest.mark.skipif(not BRATS.is_dir(), reason="../shared/data/brats2018 is absent (real scans not shipped)")
def test_a_real_subject_target_is_z_scored_in_its_own_brain(tmp_path: Path) -> None:
    from tfuq.data.subjects import Subject
    from tfuq.data.training_windows import load_training_subject

    subject = "Brats18_CBICA_APR_1"
    config = load_config(REPO / "configs" / "brats_t1t2.ini", [f"SYSTEM.model_dir={tmp_path}"])
    files = {name: BRATS / subject / f"{subject}_{key}.nii.gz" for name, key in
             (("T1", "t1"), ("T2", "t2"), ("BRAIN", "t1"))}  # fmt: skip
    arrays = load_training_subject(config, Subject(subject, files), target_normalisation=None)
    t1 = np.asarray(nib.load(files["T1"]).dataobj, dtype=np.float64)
    t2 = np.asarray(nib.load(files["T2"]).dataobj, dtype=np.float64)
    brain = t1 > 0
    # the pipeline reorients to RAS: compare statistics, which do not depend on the orientation
    target = arrays.target[..., 0][arrays.mask[..., 0] > 0].astype(np.float64)
    assert target.size == brain.sum()
    assert target.mean() == pytest.approx(0.0, abs=1e-4) and target.std() == pytest.approx(1.0, rel=1e-4)
    expected = (t2[brain] - t2[brain].mean()) / t2[brain].std()
    np.testing.assert_allclose(np.sort(target), np.sort(expected), atol=1e-4)
