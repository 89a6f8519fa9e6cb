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
statistics are then per replica). Every worker's input pipeline builds the
same global batches and keeps its replicas' rows (:func:`distribute_dataset`),
so W workers see the batches of one process.

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
    "replica_batches",
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


def replica_batches(
    dataset: tf.data.Dataset,
    global_batch: int,
    *,
    replicas: int,
    num_input_pipelines: int = 1,
    input_pipeline_id: int = 0,
) -> tf.data.Dataset:
    """One input pipeline's per-replica batches: its rows of every global batch.

    Every pipeline reads the same stream of global batches; the replicas are
    numbered pipeline by pipeline (pipeline ``p`` feeds replicas
    ``p * L .. p * L + L - 1`` with ``L = replicas / num_input_pipelines``),
    and replica ``r`` gets rows ``r * b .. r * b + b - 1`` of each global
    batch, ``b = global_batch / replicas``. The pipeline's ``L`` per-replica
    batches of a step come out one after the other, the order in which
    ``tf.distribute`` hands them to its local replicas. So the replicas of all
    pipelines together see exactly the global batches of one process. A last
    global batch smaller than ``global_batch`` is dropped (every replica
    needs its full share).

    Args:
        dataset: Batches of ``global_batch`` elements (any nested structure
            of tensors with the batch on axis 0).
        global_batch: ``[NETWORK] batch_size``, a multiple of ``replicas``.
        replicas: Replicas of all pipelines together (``num_replicas_in_sync``).
        num_input_pipelines: Pipelines (workers), dividing ``replicas``. Default 1.
        input_pipeline_id: This pipeline, in ``[0, num_input_pipelines)``. Default 0.

    Returns:
        tf.data.Dataset: ``replicas / num_input_pipelines`` batches of
        ``global_batch / replicas`` elements per global batch.

    Raises:
        UserError: the global batch does not split over the replicas.
        ValueError: pipelines that do not divide the replicas, or a pipeline id out of range.

    Example:
        >>> data = tf.data.Dataset.range(8).batch(4)
        >>> part = replica_batches(data, 4, replicas=2, num_input_pipelines=2, input_pipeline_id=1)
        >>> [b.numpy().tolist() for b in part]
        [[2, 3], [6, 7]]
    """
    per_replica = replica_batch_size(global_batch, replicas)
    if num_input_pipelines < 1 or replicas % num_input_pipelines:
        raise ValueError(
            "Expected num_input_pipelines dividing replicas. Received: "
            f"num_input_pipelines={num_input_pipelines}, replicas={replicas}"
        )
    if not 0 <= input_pipeline_id < num_input_pipelines:
        raise ValueError(
            "Expected 0 <= input_pipeline_id < num_input_pipelines. Received: "
            f"input_pipeline_id={input_pipeline_id}, num_input_pipelines={num_input_pipelines}"
        )
    local = replicas // num_input_pipelines
    first = input_pipeline_id * local * per_replica
    leaf = tf.nest.flatten(dataset.element_spec)[0]
    if leaf.shape[0] != global_batch:  # unknown (a last batch may be smaller): keep the full ones
        dataset = dataset.filter(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0] == global_batch)
        dataset = dataset.map(lambda *batch: _with_batch(batch, global_batch))
    if local == replicas:  # one pipeline: all rows, in per-replica pieces
        return dataset.rebatch(per_replica, drop_remainder=True) if replicas > 1 else dataset

    def rows(*batch: Any) -> Any:
        def part(tensor: tf.Tensor) -> tf.Tensor:
            own = tensor[first : first + local * per_replica]
            return tf.reshape(own, [local, per_replica, *tensor.shape[1:]])

        return tf.nest.map_structure(part, batch[0] if len(batch) == 1 else batch)

    return dataset.map(rows).unbatch()


def _with_batch(batch: tuple[Any, ...], size: int) -> Any:
    """A ``map`` function's arguments as the element, with the static batch size ``size``."""
    element = batch[0] if len(batch) == 1 else batch
    return tf.nest.map_structure(lambda t: tf.ensure_shape(t, [size, *t.shape[1:]]), element)


def distribute_dataset(
    strategy: tf.distribute.Strategy,
    make: Callable[[int], tf.data.Dataset],
    global_batch: int,
    *,
    skip_steps: int = 0,
    take_steps: int | None = None,
) -> Any:
    """The global batches of one process, distributed over the replicas of all workers.

    Every input pipeline (one per worker) builds the same stream of global
    batches from the same seeds and keeps its replicas' rows of each
    (:func:`replica_batches`), so a step sees the same windows however many
    workers and devices share it, and a run on W workers follows the run of
    one process (same data, augmentation and order; the gradients differ
    only by the order of the float sums). The cost: each worker prepares the
    whole global batch (W times the input work of its own rows), which pays
    off as long as the input pipeline keeps up with ``1 / W`` of the
    network's work.

    Args:
        strategy: The strategy.
        make: ``make(global_batch)`` returns the dataset of global batches
            (e.g. a closure over :func:`~tfuq.data.pipeline.make_training_dataset`);
            it must give the same batches in every process.
        global_batch: ``[NETWORK] batch_size``.
        skip_steps: Global steps to skip at the start (replaying an endless
            deterministic stream up to a resumed step).
        take_steps: Keep this many global steps (e.g. validation batches); the
            dataset must hold at least that many full global batches.

    Returns:
        ``tf.distribute.DistributedDataset``-like: each step gives every
        replica ``global_batch / num_replicas`` windows.

    Raises:
        UserError: the global batch does not split over the replicas.
    """
    replicas = strategy.num_replicas_in_sync
    replica_batch_size(global_batch, replicas)  # fail before any dataset is built

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = make(global_batch)
        if skip_steps:
            dataset = dataset.skip(skip_steps)
        if take_steps is not None:
            dataset = dataset.take(take_steps)
        local = replica_batches(
            dataset,
            global_batch,
            replicas=replicas,
            num_input_pipelines=context.num_input_pipelines,
            input_pipeline_id=context.input_pipeline_id,
        ).prefetch(tf.data.AUTOTUNE)
        if take_steps is not None:  # Keras evaluate doubled the trackers' counts on a dataset of
            # unknown length (Keras 3.15): state its length
            per_step = replicas // context.num_input_pipelines
            local = local.apply(tf.data.experimental.assert_cardinality(take_steps * per_step))
        return local

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
