"""tfuq.training.inputs: validation batches of fixed windows; nothing written before the data pass."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from tfuq.config import Config
from tfuq.data import ensure_phantom, make_split, read_split, subjects_in_phase
from tfuq.errors import UserError
from tfuq.model_store.layout import NORMALISATION_FILE
from tfuq.training.inputs import prepare_inputs


def _batches(dataset: object) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset]


@pytest.mark.parametrize("max_iter", [1, 3])
def test_validation_has_validation_max_iter_batches_of_the_same_windows(
    tiny_config: Callable[..., Config], max_iter: int
) -> None:
    config = tiny_config(
        "TRAINING.validation_every_n=1",
        f"TRAINING.validation_max_iter={max_iter}",
        "TRAINING.exclude_fraction_for_validation=0.34",
    )
    inputs = prepare_inputs(config, tf.distribute.get_strategy())
    assert inputs.validating and len(inputs.valid_ids) == 1
    first, second = _batches(inputs.valid_data), _batches(inputs.valid_data)
    # one Validation subject with sample_per_volume = 1 gave a single window before
    assert [x.shape[0] for x, _ in first] == [2] * max_iter
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    windows = [x[b] for x, _ in first for b in range(2)]
    assert len({w.tobytes() for w in windows}) == len(windows)  # distinct windows, not one repeated


def test_the_split_and_normalisation_are_written_only_once_every_subject_read_passed(
    tiny_config: Callable[..., Config], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(ensure_phantom(tiny_config()), data)
    settings = [f"{name}.path_to_search={data}" for name in ("MR", "CT", "BODY")]
    config = tiny_config(*settings, "CT.intensity_normalisation=percentile")  # a fitted target normalisation
    split_file, record = Path(config.system.dataset_split_file), config.model_dir / NORMALISATION_FILE
    last = subjects_in_phase(make_split(["phantom000", "phantom001", "phantom002"], validation_fraction=0.0,
                                        inference_fraction=0.0, seed=0), "Training")[-1]  # fmt: skip
    good = data / f"{last}_mr.nii.gz"
    image = nib.load(good)
    bad = np.asarray(image.dataobj, np.float32).copy()
    bad[0, 0, 0] = np.nan
    original = good.read_bytes()
    nib.save(nib.Nifti1Image(bad, image.affine), good)  # read by the pipeline, after the target fit
    with pytest.raises(UserError, match=rf"{last}_mr\.nii\.gz: contains 1 NaN voxels"):
        prepare_inputs(config, tf.distribute.get_strategy())
    assert not split_file.exists() and not record.exists()
    good.write_bytes(original)
    inputs = prepare_inputs(config, tf.distribute.get_strategy())
    assert read_split(split_file) == {i: "Training" for i in inputs.train_ids}
    assert json.loads(record.read_text())["target"]["method"] == "percentile"
