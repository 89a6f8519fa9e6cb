"""tfuq.training.inputs: the validation data is validation_max_iter batches of fixed windows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf

from tfuq.config import Config
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
