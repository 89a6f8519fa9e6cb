"""Strategy choice, TF_CONFIG, batch splitting, dataset distribution and the dtype policy (one process)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from tfuq.config import Config, SystemSection
from tfuq.errors import UserError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tfuq.training.strategy import (  # noqa: E402
    distribute_dataset,
    is_chief,
    make_strategy,
    precision_policy,
    replica_batch_size,
    replica_batches,
    tf_config_workers,
    worker_index,
)


def test_tf_config_and_multi_worker_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tf_config_workers() == 0
    with pytest.raises(
        UserError, match="strategy = multi_worker: expected the TF_CONFIG environment variable"
    ):
        make_strategy(SystemSection(strategy="multi_worker"))
    cluster = {
        "cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
        "task": {"type": "worker", "index": 0},
    }
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    assert tf_config_workers() == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG: expected JSON"):
        tf_config_workers()


def test_one_device_and_auto_on_a_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for kind in ("one_device", "auto"):
        strategy = make_strategy(SystemSection(strategy=kind))
        assert isinstance(strategy, tf.distribute.OneDeviceStrategy) and strategy.num_replicas_in_sync == 1
        assert is_chief(strategy) and worker_index(strategy) == 0
    mirrored = make_strategy(SystemSection(strategy="mirrored"))  # every logical CPU (one here)
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))


def test_replica_batch_and_distributed_dataset_skip_take() -> None:
    assert replica_batch_size(6, 3) == 2
    with pytest.raises(
        UserError, match=r"batch_size = 5: the global batch must split evenly over 2 replicas"
    ):
        replica_batch_size(5, 2)
    calls = []

    def make(batch: int) -> tf.data.Dataset:
        calls.append(batch)
        return tf.data.Dataset.range(100).batch(batch)

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    data = distribute_dataset(strategy, make, 4, skip_steps=2, take_steps=3)
    batches = [np.asarray(strategy.experimental_local_results(b)[0]) for b in data]
    assert calls == [4]
    assert [b.tolist() for b in batches] == [[8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]


def _pipelines(
    make: Callable[[], tf.data.Dataset], global_batch: int, replicas: int, pipelines: int, steps: int
) -> list[list[object]]:
    """Per step, the per-replica batches of every pipeline in replica order (each pipeline built anew)."""
    streams = [
        iter(
            replica_batches(
                make(), global_batch, replicas=replicas, num_input_pipelines=pipelines, input_pipeline_id=p
            )
        )
        for p in range(pipelines)
    ]
    local = replicas // pipelines
    return [[next(stream) for stream in streams for _ in range(local)] for _ in range(steps)]


def _concat(parts: list[object]) -> list[np.ndarray]:
    return [np.concatenate(leaves) for leaves in zip(*(map(np.asarray, tf.nest.flatten(p)) for p in parts))]


@pytest.mark.parametrize(("replicas", "pipelines"), [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4)])
def test_replica_batches_reassemble_the_global_batches(replicas: int, pipelines: int) -> None:
    # nested elements like MultiRes windows: ((level 1, level 2), targets); a last partial batch
    rows = tf.data.Dataset.range(22).map(lambda i: ((tf.fill([3], i), -tf.fill([2, 2], i)), 10 * i))
    global_batches = [tf.nest.flatten(b) for b in rows.batch(4, drop_remainder=True)]
    steps = _pipelines(lambda: rows.batch(4), 4, replicas, pipelines, len(global_batches))
    for step, want in zip(steps, global_batches, strict=True):
        assert all(tf.nest.flatten(part)[0].shape[0] == 4 // replicas for part in step)
        for got, expected in zip(_concat(step), want, strict=True):
            np.testing.assert_array_equal(got, np.asarray(expected))
    stream = replica_batches(rows.batch(4), 4, replicas=replicas, num_input_pipelines=pipelines)
    assert sum(1 for _ in stream) == 5 * replicas // pipelines  # the partial 6th batch is dropped
    assert tf.nest.flatten(stream.element_spec)[0].shape[0] == 4 // replicas


def test_replica_batches_arguments() -> None:
    data = tf.data.Dataset.range(8).batch(4)
    with pytest.raises(UserError, match="batch_size = 4: the global batch must split evenly over 3"):
        replica_batches(data, 4, replicas=3)
    with pytest.raises(ValueError, match="num_input_pipelines dividing replicas"):
        replica_batches(data, 4, replicas=2, num_input_pipelines=3)
    with pytest.raises(ValueError, match="input_pipeline_id < num_input_pipelines"):
        replica_batches(data, 4, replicas=2, num_input_pipelines=2, input_pipeline_id=2)


@pytest.mark.parametrize(("replicas", "pipelines"), [(2, 2), (4, 2)])
def test_workers_pipelines_are_the_rows_of_one_process_windows(
    tiny_config: Callable[..., Config], replicas: int, pipelines: int
) -> None:
    """Oracle: the shards' rows of the real training/validation pipelines are one process's batches."""
    from tfuq.data.pipeline import make_training_dataset, make_validation_dataset

    config = tiny_config("TRAINING.sample_per_volume=2", "NETWORK.queue_length=3")
    ids = ["phantom000", "phantom001", "phantom002"]
    for make in (
        lambda: make_training_dataset(config, ids, batch_size=4, fixed_stream=True),
        lambda: make_validation_dataset(config, ids[:2], batch_size=4, num_windows=12),
    ):
        one = [tf.nest.flatten(b) for b in make().take(3)]
        steps = _pipelines(make, 4, replicas, pipelines, 3)
        for step, want in zip(steps, one, strict=True):
            for got, expected in zip(_concat(step), want, strict=True):
                np.testing.assert_array_equal(got, np.asarray(expected))


def test_precision_policy_is_scoped() -> None:
    assert keras.config.dtype_policy().name == "float32"
    with precision_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(UserError, match="mixed_precision: expected float32"), precision_policy("float16"):
        pass
    with pytest.raises(RuntimeError), precision_policy("mixed_float16"):
        raise RuntimeError("restored even on errors")
    assert keras.config.dtype_policy().name == "float32"
