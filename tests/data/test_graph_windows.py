"""Windows cut by tf.data (graph_windows) equal sample_windows' NumPy windows at the same starts."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfuq.data.graph_windows import subject_tensors, window_cutter
from tfuq.data.training_windows import SubjectArrays, WindowGeometry, sample_starts, sample_windows


def subject(shape, channels, seed) -> SubjectArrays:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 1:-1, 1:-1] = 1
    return SubjectArrays(
        id=f"s{seed}",
        inputs=rng.normal(size=(*shape, channels)).astype(np.float32) + np.arange(channels, dtype=np.float32),
        target=rng.normal(size=(*shape, 1)).astype(np.float32),
        mask=mask[..., None],
        sampling_map=mask,
        normalisation={},
        orders=(1,) * (channels + 1),
    )


GEOMETRIES = {
    "3d, loss border, constant": WindowGeometry(
        (6, 8, 4), padding=(3, 2, 2), padding_mode="constant", loss_border=1
    ),
    "3d, minimum": WindowGeometry((5, 5, 5), padding=(4, 4, 4)),
    "2d slices, reflect": WindowGeometry((8, 6, 1), squeeze=True, padding=(2, 2, 0), padding_mode="reflect"),
    "multires 1, 2, 4, minimum": WindowGeometry((4, 4, 4), padding=(6, 6, 6), factors=(1, 2, 4)),
    "multires 1, 3, edge": WindowGeometry((4, 6, 2), padding_mode="edge", factors=(1, 3)),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_graph_windows_equal_the_numpy_windows(name) -> None:
    geometry = GEOMETRIES[name]
    # two channels with different minima, subjects of different shapes: one switch_case branch each
    subjects = [subject((11, 9, 10), 2, 0), subject((14, 7, 12), 2, 1)]
    cut = window_cutter([subject_tensors(s) for s in subjects], geometry)
    for k, arrays in enumerate(subjects):
        starts = sample_starts(arrays.shape, geometry, 6, np.random.default_rng(k), method="weighted",
                               sampling_map=arrays.sampling_map)  # fmt: skip
        expected = sample_windows(arrays, geometry, 6, np.random.default_rng(k), method="weighted")
        dataset = tf.data.Dataset.from_tensor_slices((np.full(6, k, np.int32), starts)).map(cut)
        for (x_got, y_got), (x_want, y_want) in zip(dataset, expected, strict=True):
            np.testing.assert_array_equal(y_got.numpy(), y_want)  # target crop and mask: exact
            if not geometry.factors:
                np.testing.assert_array_equal(x_got.numpy(), x_want)
                continue
            np.testing.assert_array_equal(x_got[0].numpy(), x_want[0])  # the finest level is a crop
            for got, want in zip(x_got[1:], x_want[1:], strict=True):  # block means: float32 round-off
                np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
