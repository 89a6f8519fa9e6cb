"""tf.data pipelines on a synthetic NIfTI folder and a tiny phantom: shapes, pairing, seeds, shards."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.config import ConfigError, load_config
from tfuq.data import pipeline
from tfuq.data.pipeline import make_training_dataset, make_validation_dataset
from tfuq.data.windows import multires_windows
from tfuq.errors import UserError

tf = pytest.importorskip("tensorflow")

SHAPE = (16, 16, 16)
IDS = ["s0", "s1", "s2", "s3"]


def code_volume(subject: int) -> np.ndarray:
    """Distinct values x + 16 y + 256 z + 4096 s: a window tells its subject and origin."""
    g = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    return g[0] + 16 * g[1] + 256 * g[2] + 4096 * subject


def box_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:12, 3:13, 5:11] = 1
    return mask


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    for s in range(len(IDS)):
        x = code_volume(s)
        nib.save(nib.Nifti1Image(x, np.eye(4)), folder / f"s{s}_mr.nii.gz")
        nib.save(nib.Nifti1Image(2 * x + 1, np.eye(4)), folder / f"s{s}_ct.nii.gz")
        nib.save(nib.Nifti1Image(box_mask(), np.eye(4)), folder / f"s{s}_mask.nii.gz")
    path = tmp_path / "app.ini"
    path.write_text(
        "[SYSTEM]\nseed = 3\n"
        "[MR]\npath_to_search = d\nfilename_contains = _mr\nspatial_window_size = 8, 8, 8\ninterp_order = 1\n"
        "[CT]\npath_to_search = d\nfilename_contains = _ct\ninterp_order = 1\n"
        "[BODY]\npath_to_search = d\nfilename_contains = _mask\ninterp_order = 0\n"
        "[NETWORK]\nbatch_size = 2\nqueue_length = 3\n"
        "[TRAINING]\nsample_per_volume = 2\n"
        "[REGRESSION]\nimage = MR\noutput = CT\nmask = BODY\n"
    )
    return path


def batches(dataset, n):
    return [tuple(tf.nest.map_structure(lambda t: t.numpy(), b)) for b in dataset.take(n)]


def origin(window: np.ndarray) -> tuple[int, tuple[int, int, int]]:
    code = int(window[(0,) * window.ndim])
    rest = code % 4096
    return code // 4096, (rest % 16, (rest // 16) % 16, rest // 256)


def test_elements_are_paired_windows_with_the_mask_channel(ini: Path) -> None:
    config = load_config(ini)
    dataset = make_training_dataset(config, IDS)
    spec_x, spec_y = dataset.element_spec
    assert spec_x.shape == (2, 8, 8, 8, 1) and spec_y.shape == (2, 8, 8, 8, 2)
    assert spec_x.dtype == tf.float32 and spec_y.dtype == tf.float32
    seen = set()
    for x, y in batches(dataset, 8):
        for b in range(2):
            subject, (i, j, k) = origin(x[b, ..., 0])
            seen.add(subject)
            expected = code_volume(subject)[i : i + 8, j : j + 8, k : k + 8]
            np.testing.assert_array_equal(x[b, ..., 0], expected)
            np.testing.assert_array_equal(y[b, ..., 0], 2 * expected + 1)
            np.testing.assert_array_equal(y[b, ..., 1], box_mask()[i : i + 8, j : j + 8, k : k + 8])
    assert seen == {0, 1, 2, 3}


def test_same_seed_same_stream_and_cache_does_not_change_it(ini: Path) -> None:
    config = load_config(ini)
    a = batches(make_training_dataset(config, IDS), 6)
    b = batches(make_training_dataset(config, IDS, cache=False), 6)
    c = batches(make_training_dataset(config, IDS, seed=4), 6)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    dataset = make_training_dataset(config, IDS)
    first, second = batches(dataset, 6), batches(dataset, 6)
    for (x1, _), (x0, _) in zip(first, a):
        np.testing.assert_array_equal(x1, x0)
    assert not all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(first, second))  # fresh windows
    fixed = make_training_dataset(config, IDS, fixed_stream=True)
    for _ in range(2):  # every iteration starts the same stream again
        for (x1, _), (x0, _) in zip(batches(fixed, 6), a):
            np.testing.assert_array_equal(x1, x0)
    loose = make_training_dataset(config, IDS, cache=False, deterministic=False)
    assert not loose.options().deterministic
    subjects = set()
    for x, y in batches(loose, 8):  # any loading order: still paired windows of every subject
        np.testing.assert_array_equal(y[..., 0], 2 * x[..., 0] + 1)
        subjects |= {origin(x[k, ..., 0])[0] for k in range(2)}
    assert subjects == {0, 1, 2, 3}


def test_weighted_sampling_centres_in_the_mask_and_2d_slices(ini: Path) -> None:
    config = load_config(ini, ["NETWORK.window_sampling=weighted", "MR.spatial_window_size=8, 8, 1"])
    dataset = make_training_dataset(config, IDS)
    assert dataset.element_spec[0].shape == (2, 8, 8, 1)
    for x, y in batches(dataset, 10):
        for b in range(2):
            _, (i, j, k) = origin(x[b, ..., 0])
            assert box_mask()[i + 4, j + 4, k] == 1  # centre = start + window // 2
            np.testing.assert_array_equal(y[b, ..., 0], 2 * x[b, ..., 0] + 1)


def test_multires_inputs_are_a_tuple_of_levels(ini: Path) -> None:
    config = load_config(ini, ["NETWORK.name=multires", "MR.spatial_window_size=4, 4, 4"])
    dataset = make_training_dataset(config, IDS[:2])
    inputs_spec, target_spec = dataset.element_spec
    assert isinstance(inputs_spec, tuple) and [s.shape for s in inputs_spec] == [(2, 4, 4, 4, 1)] * 3
    assert target_spec.shape == (2, 4, 4, 4, 2)
    for x, y in batches(dataset, 3):
        np.testing.assert_array_equal(y[..., 0], 2 * x[0][..., 0] + 1)
        for b in range(2):
            subject, start = origin(x[0][b, ..., 0])  # the finest level is the target's window
            expected = multires_windows(code_volume(subject), start, 4, mode="minimum")
            for level, want in zip(x, expected):
                np.testing.assert_allclose(level[b, ..., 0], want, rtol=1e-6)


def test_validation_is_finite_repeatable_and_keeps_the_last_batch(ini: Path) -> None:
    config = load_config(ini, ["TRAINING.sample_per_volume=3"])
    dataset = make_validation_dataset(config, IDS[:3])
    assert dataset.element_spec[0].shape.as_list() == [None, 8, 8, 8, 1]
    first, second = list(dataset.as_numpy_iterator()), list(dataset.as_numpy_iterator())
    assert [x.shape[0] for x, _ in first] == [2, 2, 2, 2, 1]  # 9 windows
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    subjects = [origin(x[b, ..., 0])[0] for x, _ in first for b in range(len(x))]
    assert subjects == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # subject order, no shuffling
    shards = [list(make_validation_dataset(config, IDS[:3], num_shards=2, shard_index=k)) for k in (0, 1)]
    windows = [x[b] for x, _ in first for b in range(len(x))]
    dealt = [[x[b] for x, _ in shard for b in range(len(x))] for shard in shards]
    for k in (0, 1):
        for got, want in zip(dealt[k], windows[k::2]):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["unet", "multires"])
def test_validation_in_memory_equals_generator_and_graph_cut(ini: Path, name: str, monkeypatch) -> None:
    # Oracle: without the subject cache, windows come from the NumPy generator path (held in memory,
    # or a generator when forced by a zero memory budget); with it (the default) starts are drawn in
    # Python and the windows cut by tf.data. All give the same windows in the same batches, and
    # neither the in-memory nor the graph dataset runs Python when iterated.
    overrides = [f"NETWORK.name={name}", "TRAINING.sample_per_volume=3"]
    if name == "multires":
        overrides.append("MR.spatial_window_size=4, 4, 4")
    config = load_config(ini, overrides)
    graph = make_validation_dataset(config, IDS[:3])
    in_memory = make_validation_dataset(config, IDS[:3], cache=False)
    monkeypatch.setattr(pipeline, "_IN_MEMORY_BYTES", 0)
    generated = make_validation_dataset(config, IDS[:3], cache=False)
    assert graph.element_spec == in_memory.element_spec == generated.element_spec
    ours, memory, theirs = batches(graph, 10), batches(in_memory, 10), batches(generated, 10)
    assert len(ours) == len(memory) == len(theirs) == 5
    for a, b, c in zip(ours, memory, theirs):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
        tf.nest.map_structure(np.testing.assert_array_equal, a, c)
    assert _root(graph) == _root(in_memory) == "_TensorSliceDataset"
    assert _root(generated) != "_TensorSliceDataset"


def _root(dataset) -> str:
    """Class name of the dataset a tf.data chain starts from (private attributes: a test's view)."""
    while hasattr(dataset, "_input_dataset"):
        dataset = dataset._input_dataset
    return type(dataset).__name__


def test_validation_num_windows_visits_the_subjects_again_with_fresh_fixed_windows(ini: Path) -> None:
    config = load_config(ini)
    default = [x[b] for x, _ in make_validation_dataset(config, IDS[:3]) for b in range(len(x))]
    dataset = make_validation_dataset(config, IDS[:3], num_windows=7)
    first, second = list(dataset.as_numpy_iterator()), list(dataset.as_numpy_iterator())
    assert [x.shape[0] for x, _ in first] == [2, 2, 2, 1]
    windows = [x[b] for x, _ in first for b in range(len(x))]
    assert len(default) == 6  # two windows per subject (the fixture's sample_per_volume)
    assert [origin(w[..., 0])[0] for w in windows] == [0, 0, 1, 1, 2, 2, 0]
    for got, want in zip(windows[:6], default):  # the first visit is the default's windows
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(windows[6], windows[0])  # the second visit draws another window
    again = [x[b] for x, _ in second for b in range(len(x))]
    for got, want in zip(again, windows):
        np.testing.assert_array_equal(got, want)
    shards = [
        make_validation_dataset(config, IDS[:3], num_windows=7, num_shards=2, shard_index=k) for k in (0, 1)
    ]
    dealt = [[x[b] for x, _ in shard for b in range(len(x))] for shard in shards]
    assert [len(d) for d in dealt] == [4, 3]
    for k in (0, 1):
        for got, want in zip(dealt[k], windows[k::2]):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="num_windows"):
        make_validation_dataset(config, IDS[:3], num_windows=0)


def test_training_shards_deal_subjects(ini: Path) -> None:
    config = load_config(ini)
    for k, expected in ((0, {0, 2}), (1, {1, 3})):
        dataset = make_training_dataset(config, IDS, num_shards=2, shard_index=k, batch_size=1)
        assert (
            dataset.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF
        )
        assert {origin(x[0, ..., 0])[0] for x, _ in batches(dataset, 12)} == expected
    with pytest.raises(ValueError, match="shard_index"):
        make_training_dataset(config, IDS, num_shards=2, shard_index=2)


def test_augmentation_keeps_pairs_and_shift_only_moves_inputs(ini: Path) -> None:
    config = load_config(
        ini,
        [
            "TRAINING.random_flipping_axes=0, 1, 2",
            "TRAINING.rotation_angle=-10, 10",
            "TRAINING.intensity_shift=5",
        ],
    )
    for x, y in batches(make_training_dataset(config, IDS), 4):
        residual = y[..., 0] - (2 * x[..., 0] + 1)  # = -2 * shift, one constant per window
        spread = residual.reshape(2, -1).max(axis=1) - residual.reshape(2, -1).min(axis=1)
        assert np.all(spread < 1e-2) and np.all(np.abs(residual.reshape(2, -1)[:, 0]) <= 10.0 + 1e-3)
        assert np.all(np.abs(residual.reshape(2, -1)[:, 0]) > 0)


def test_errors_are_one_line(ini: Path) -> None:
    config = load_config(ini)
    with pytest.raises(UserError, match=r"no files for subject.*nobody"):
        make_training_dataset(config, ["s0", "nobody"])
    text = ini.read_text().replace("mask = BODY\n", "")
    unmasked = ini.with_name("unmasked.ini")
    unmasked.write_text(text[: text.index("[BODY]")] + text[text.index("[NETWORK]") :])
    with pytest.raises(ConfigError, match="window_sampling: weighted needs"):
        make_training_dataset(load_config(unmasked, ["NETWORK.window_sampling=weighted"]), IDS)
    y = batches(make_training_dataset(load_config(unmasked), IDS), 1)[0][1]
    np.testing.assert_array_equal(y[..., 1], 1.0)  # no mask section: every voxel of the volume counts
    corner = np.zeros(SHAPE, np.uint8)
    corner[0, 0, 0] = 1  # in the mask, but no 8^3 window is centred there
    nib.save(nib.Nifti1Image(corner, np.eye(4)), ini.parent / "d" / "s2_mask.nii.gz")
    weighted = load_config(ini, ["NETWORK.window_sampling=weighted"])
    with pytest.raises(UserError, match="subject s2: cannot sample a window"):
        make_training_dataset(weighted, IDS)
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.eye(4)), ini.parent / "d" / "s2_mask.nii.gz")
    with pytest.raises(UserError, match=r"s2_mask\.nii\.gz: \[BODY\] the mask is empty"):
        make_training_dataset(load_config(ini), IDS)


def test_tiny_phantom_with_the_demo_config(tmp_path: Path) -> None:
    demo = Path(__file__).resolve().parents[2] / "configs" / "demo_mr2ct.ini"
    config = load_config(
        demo,
        [
            f"SYSTEM.model_dir={tmp_path}",
            "PHANTOM.num_subjects=2",
            "PHANTOM.shape=24, 24, 24",
            "MR.spatial_window_size=8, 8, 8",
            "CT.spatial_window_size=8, 8, 8",
        ],
    )
    x, y = batches(make_training_dataset(config, ["phantom000", "phantom001"]), 1)[0]
    assert x.shape == (2, 8, 8, 8, 1) and y.shape == (2, 8, 8, 8, 2)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    assert set(np.unique(y[..., 1])) <= {0.0, 1.0}
    centres = y[:, 4, 4, 4, 1]
    np.testing.assert_array_equal(centres, 1.0)  # weighted by the body mask: centres in the body
    assert y[..., 0].min() > -0.5 and y[..., 0].max() < 1.5  # CT window-normalised to about [0, 1]


def test_generators_end_when_python_exits(ini: Path) -> None:
    from tfuq.data import pipeline

    dataset = make_training_dataset(load_config(ini), IDS)
    assert len(batches(dataset, 1)) == 1
    pipeline._EXITING.set()  # what the atexit hook does first
    try:
        assert batches(dataset, 1) == []  # the generator returns at once: no tf.data thread stays in Python
        start = time.monotonic()
        pipeline._end_generators_at_exit(quiet=0.05)
        assert time.monotonic() - start < 5
    finally:
        pipeline._EXITING.clear()
    assert len(batches(dataset, 1)) == 1


@pytest.mark.slow
def test_process_exits_with_a_live_iterator(ini: Path) -> None:
    script = (
        "from tfuq.config import load_config\n"
        "from tfuq.data.pipeline import make_training_dataset\n"
        f"ds = make_training_dataset(load_config({str(ini)!r}), {IDS!r})\n"
        "it = iter(ds)\n"
        "for _ in range(5):\n"
        "    next(it)\n"
    )
    for _ in range(3):  # without the atexit hook, exits like this deadlocked intermittently
        done = subprocess.run([sys.executable, "-c", script], timeout=120, capture_output=True, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
