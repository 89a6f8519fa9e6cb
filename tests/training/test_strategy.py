"""Strategy choice, TF_CONFIG, batch splitting, dataset distribution and the dtype policy (one process)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfuq.config import SystemSection
from tfuq.errors import UserError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tfuq.training.strategy import (  # noqa: E402
    distribute_dataset,
    is_chief,
    make_strategy,
    precision_policy,
    replica_batch_size,
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

    def make(shards: int, index: int, batch: int) -> tf.data.Dataset:
        calls.append((shards, index, batch))
        return tf.data.Dataset.range(100).batch(batch)

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    data = distribute_dataset(strategy, make, 4, skip_steps=2, take_steps=3)
    batches = [np.asarray(strategy.experimental_local_results(b)[0]) for b in data]
    assert calls == [(1, 0, 4)]
    assert [b.tolist() for b in batches] == [[8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]


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
