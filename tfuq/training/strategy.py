"""Devices and precision of a training run: ``[SYSTEM] strategy``, ``num_gpus``, ``mixed_precision``.

``strategy``:

- ``one_device``: the first GPU, or the CPU (``num_gpus = 0`` forces the CPU);
- ``mirrored``: synchronous data parallelism on one machine over the first
  ``num_gpus`` GPUs, or over every logical CPU device when there is no GPU
  (``cpu_devices = N`` splits the CPU into N of them from the config, no code
  needed; that is how multi-device training is tested on a CPU-only machine);
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` across the machines that
  the ``TF_CONFIG`` environment variable lists (one process per worker, each
  running the same ``tfuq train``);
- ``auto``: ``multi_worker`` when ``TF_CONFIG`` lists more than one worker,
  ``mirrored`` when ``num_gpus >= 2`` GPUs are visible, else ``one_device``.

``[NETWORK] batch_size`` is the *global* batch: each of the R replicas gets
``batch_size / R`` windows per step and the gradients are summed across them,
so one step sees the same windows as on one device (BatchNormalization
statistics are then per replica). Datasets are built per input pipeline
(:func:`distribute_dataset`), sharded by worker.

``mixed_precision`` sets the Keras dtype policy (``mixed_float16`` or
``mixed_bfloat16``) while the model is built; distribution heads and losses
compute in float32, and ``mixed_float16`` training scales the loss
(``keras.optimizers.LossScaleOptimizer``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from tfuq.config import SystemSection
from tfuq.errors import UserError

__all__ = [
    "STRATEGIES",
    "distribute_dataset",
    "is_chief",
    "make_strategy",
    "precision_policy",
    "replica_batch_size",
    "tf_config_workers",
    "worker_index",
]

#: ``[SYSTEM] strategy`` names.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def tf_config_workers() -> int:
    """Number of workers (chief included) that ``TF_CONFIG`` lists; 0 without it.

    Raises:
        UserError: ``TF_CONFIG`` is set but is not valid JSON.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except (ValueError, AttributeError):
        raise UserError(f"TF_CONFIG: expected JSON with a cluster and a task, got {text[:80]!r}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(system: SystemSection) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy that ``[SYSTEM]`` asks for.

    Call it before any other TensorFlow operation of the process when
    ``strategy = multi_worker`` (TensorFlow's requirement).

    Args:
        system: The ``[SYSTEM]`` section (``strategy``, ``num_gpus``).

    Returns:
        tf.distribute.Strategy.

    Raises:
        UserError: ``multi_worker`` without ``TF_CONFIG``, or an unknown strategy.

    Example:
        >>> strategy = make_strategy(SystemSection(strategy="one_device"))
        >>> strategy.num_replicas_in_sync
        1
    """
    kind = system.strategy
    if kind not in STRATEGIES:
        raise UserError(f"[SYSTEM] strategy: expected one of {', '.join(STRATEGIES)}, got {kind!r}")
    workers = tf_config_workers()
    if kind == "auto" and workers > 1:
        kind = "multi_worker"
    if kind == "multi_worker":  # before listing devices: collectives must be set up first
        if workers == 0:
            raise UserError(
                "[SYSTEM] strategy = multi_worker: expected the TF_CONFIG environment variable "
                '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
                '"index": 0}})'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if system.cpu_devices > 1:
        _split_cpu(system.cpu_devices)
    gpus = tf.config.list_logical_devices("GPU")[: system.num_gpus]
    if kind == "auto":
        kind = "mirrored" if len(gpus) >= 2 else "one_device"
    if kind == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _split_cpu(count: int) -> None:
    """``count`` logical CPU devices (``[SYSTEM] cpu_devices``), set before TensorFlow starts.

    Raises:
        UserError: TensorFlow already runs with another device layout.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise UserError(
                f"[SYSTEM] cpu_devices = {count}: TensorFlow already started with "
                f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s) in this process; set it "
                "for a fresh tfuq train"
            ) from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: True except on non-chief workers."""
    return bool(strategy.extended.should_checkpoint)


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This process's worker index (0 on a single machine)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not tf_config_workers():
        return 0
    return int(resolver.task_id or 0)


def replica_batch_size(global_batch: int, replicas: int) -> int:
    """``global_batch / replicas``.

    Raises:
        UserError: the global batch does not split evenly.

    Example:
        >>> replica_batch_size(4, 2)
        2
    """
    if replicas < 1 or global_batch % replicas:
        raise UserError(
            f"[NETWORK] batch_size = {global_batch}: the global batch must split evenly over "
            f"{replicas} replicas; use a multiple of {replicas}"
        )
    return global_batch // replicas


def distribute_dataset(
    strategy: tf.distribute.Strategy,
    make: Callable[[int, int, int], tf.data.Dataset],
    global_batch: int,
    *,
    skip_steps: int = 0,
    take_steps: int | None = None,
) -> Any:
    """One dataset per input pipeline, distributed over the replicas.

    Args:
        strategy: The strategy.
        make: ``make(num_shards, shard_index, per_replica_batch)`` returns one
            pipeline's dataset of per-replica batches (e.g. a closure over
            :func:`~tfuq.data.pipeline.make_training_dataset`).
        global_batch: ``[NETWORK] batch_size``.
        skip_steps: Global steps to skip at the start (replaying an endless
            deterministic stream up to a resumed step).
        take_steps: Keep at most this many global steps (e.g. validation batches).

    Returns:
        ``tf.distribute.DistributedDataset``-like: each step gives every
        replica ``global_batch / num_replicas`` windows.

    Raises:
        UserError: the global batch does not split over the replicas.
    """
    replicas = strategy.num_replicas_in_sync
    per_replica = replica_batch_size(global_batch, replicas)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make(context.num_input_pipelines, context.input_pipeline_id, per_replica)
        per_pipeline = max(1, replicas // context.num_input_pipelines)
        if skip_steps:
            dataset = dataset.skip(skip_steps * per_pipeline)
        if take_steps is not None:
            dataset = dataset.take(take_steps * per_pipeline)
        return dataset

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Set the global Keras dtype policy for the block, then restore the previous one.

    Args:
        name: ``"float32"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``.

    Raises:
        UserError: an unknown policy name.

    Example:
        >>> with precision_policy("mixed_bfloat16"):
        ...     model = build_model(config)  # doctest: +SKIP
    """
    if name not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise UserError(
            f"[SYSTEM] mixed_precision: expected float32, mixed_float16 or mixed_bfloat16, got {name!r}"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
