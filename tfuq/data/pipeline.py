"""tf.data training and validation pipelines built from a Config.

Per subject: load and normalise (:func:`~tfuq.data.training_windows.load_training_subject`),
then ``[TRAINING] sample_per_volume`` windows per pass with ``[NETWORK]
window_sampling`` (:func:`~tfuq.data.training_windows.sample_windows`),
augmented for training only. Elements are ``(inputs, targets)``: inputs
``(B, *spatial, C_in)`` (MultiRes: a tuple, one per level), targets
``(B, *spatial, 2)`` with channels ``[target, mask]`` (see
:mod:`tfuq.data.training_windows`).

Loading and parallelism: volumes are read with nibabel in a thread pool of
``[SYSTEM] num_threads`` workers (zlib, NumPy and scipy.ndimage release the
GIL for most of that work), at most that many subjects ahead, the results
used in order. With ``cache=True`` (the default) every subject is loaded and
normalised once, up front and in parallel, so a bad file fails before
training starts; with ``cache=False`` each pass reloads them (bounded memory).

Where windows are cut: with ``cache=True`` and no augmentation, subjects are
held as tensors and a Python generator yields only ``(subject, start)``
pairs; ``Dataset.map`` cuts the windows with TF ops
(:mod:`tfuq.data.graph_windows`; MultiRes levels are block means computed
in the graph from the ``max(factors) * window`` context), in tf.data's
threads, ``num_parallel_calls=AUTOTUNE``. Otherwise (augmentation, which
resamples with scipy, or ``cache=False``) the generator cuts the windows
with NumPy (:func:`~tfuq.data.training_windows.sample_windows`) in the pool.
Both draw the same starts from the same seeds and cut the same windows
(block means to float32 round-off). Training elements are shuffled in a
Python buffer of ``[NETWORK] queue_length`` elements, then batched and
prefetched by tf.data. All
randomness comes from NumPy generators seeded by ``(seed, shard, pass, epoch,
subject)``, so a dataset is a deterministic function of its seed; a new
iteration over the same training dataset continues with fresh windows
(with ``fixed_stream=True`` it starts the same windows again).

Validation windows (the same on every pass): on the graph path their starts
are drawn once and the windows cut by tf.data on every pass; on the NumPy
path they are cut once and held in memory (up to 512 MiB; beyond that they
stay a generator).

Multi-worker: build one dataset per input pipeline with ``num_shards`` and
``shard_index`` (e.g. from ``tf.distribute.InputContext`` in
``strategy.distribute_datasets_from_function``, with the per-replica
``batch_size``); training subjects are dealt round-robin when there are at
least as many as shards (otherwise every shard uses all subjects with its own
seeds), validation windows are dealt round-robin, and tf.data auto-sharding is
turned off. These shards are not a split of one process's batches: ``tfuq
train`` instead builds the one-process stream on every worker and keeps each
replica's rows (:func:`tfuq.training.strategy.distribute_dataset`).

Exit: a tf.data thread still inside the Python generator when the
interpreter finalises would deadlock the process (a TensorFlow limitation
of ``from_generator``), so at exit (``atexit``) the generators stop producing
and Python waits until none is running.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from tfuq.config import Config, InputSource
from tfuq.data.augmentation import AugmentationSettings
from tfuq.data.dataset import config_subjects
from tfuq.data.graph_windows import SubjectTensors, subject_tensors, window_cutter
from tfuq.data.normalisation import NormalisationParams
from tfuq.data.subjects import Subject
from tfuq.data.training_windows import (
    SubjectArrays,
    load_training_subject,
    sample_starts,
    sample_windows,
    window_geometry,
)
from tfuq.errors import UserError

__all__ = ["make_training_dataset", "make_validation_dataset", "windows_in_graph"]

_TRAIN, _VALID, _SHUFFLE = 0, 1, 2  # seed stream tags
T = TypeVar("T")


class _Activity(threading.Condition):
    count = 0


#: Generator calls in progress, and the flag that ends them when Python exits.
_ACTIVE = _Activity()
_EXITING = threading.Event()


@atexit.register
def _end_generators_at_exit(quiet: float = 0.2, timeout: float = 60.0) -> None:
    """End every window generator before the interpreter finalises.

    A tf.data prefetch thread that enters a Python generator while the
    interpreter finalises deadlocks the process (the iterator's destructor
    waits for that thread, which waits for the GIL). At exit, generators
    return instead of producing, and this waits (releasing the GIL) until no
    call has been in progress for ``quiet`` seconds.
    """
    _EXITING.set()
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        with _ACTIVE:
            if _ACTIVE.count:
                _ACTIVE.wait(0.05)
                quiet_since = time.monotonic()
                continue
        if time.monotonic() - quiet_since > quiet:
            return
        time.sleep(0.01)


def windows_in_graph(config: Config, *, training: bool = True, cache: bool = True) -> bool:
    """Whether the pipeline cuts windows with TF ops (cached subjects, no augmentation; module notes)."""
    return cache and not (training and AugmentationSettings.from_config(config.training).enabled)


class _WindowSource:
    """Callable generator factory behind ``from_generator``; holds the subject cache."""

    def __init__(
        self,
        config: Config,
        subjects: list[Subject],
        sources: Mapping[str, InputSource],
        *,
        seed: int,
        shard: int,
        training: bool,
        deterministic: bool,
        cache: bool,
        num_shards: int = 1,
        target_normalisation: NormalisationParams | None = None,
        fixed_stream: bool = False,
        num_windows: int | None = None,
    ) -> None:
        self.config, self.subjects, self.sources = config, subjects, sources
        self.num_windows = num_windows
        self.target_normalisation = target_normalisation
        self.seed, self.shard, self.training, self.deterministic = seed, shard, training, deterministic
        self.num_shards = num_shards
        self.geometry = window_geometry(config)
        self.method = config.network.window_sampling
        self.augmentation = AugmentationSettings.from_config(config.training) if training else None
        self.graph = windows_in_graph(config, training=training, cache=cache)
        self.cache: dict[int, SubjectArrays | SubjectTensors] | None = {} if cache else None
        self.passes = itertools.count()
        self.fixed_stream = fixed_stream
        self.threads = config.system.num_threads
        if cache:
            tasks = [(i,) for i in range(len(subjects))]
            for index, arrays in enumerate(self._parallel(self._load, tasks, deterministic=True)):
                self.cache[index] = arrays  # type: ignore[index]
        else:
            self._load(0)  # fail fast on the first subject

    def _load(self, index: int) -> SubjectArrays | SubjectTensors:
        subject = self.subjects[index]
        arrays = load_training_subject(
            self.config, subject, self.sources, target_normalisation=self.target_normalisation
        )
        try:  # a sampling map with no valid centre fails here, as a UserError, not inside tf.data
            sample_starts(
                arrays.shape, self.geometry, 1, np.random.default_rng(0), method=self.method,
                sampling_map=arrays.sampling_map,
            )  # fmt: skip
        except ValueError as err:
            raise UserError(f"subject {subject.id}: cannot sample a window: {err}") from err
        return subject_tensors(arrays) if self.graph else arrays

    def cutter(self) -> Callable[[Any, Any], tuple[Any, Any]]:
        """The ``Dataset.map`` function that cuts the windows of the graph path's elements."""
        return window_cutter([self.cache[i] for i in range(len(self.subjects))], self.geometry)  # type: ignore[index,misc]

    def _parallel(
        self, fn: Callable[..., T], tasks: Iterable[tuple[Any, ...]], *, deterministic: bool
    ) -> Iterator[T]:
        # fn(*task) in a pool of num_threads threads, at most num_threads tasks
        # ahead, results in task order (or as they finish). Waits poll the exit
        # flag, since at exit the pool stops running queued tasks.
        tasks = iter(tasks)
        pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="tfuq-data")
        try:
            pending = collections.deque(pool.submit(fn, *t) for t in itertools.islice(tasks, self.threads))
            while pending:
                future = pending[0]
                while not _EXITING.is_set():
                    waiting = [future] if deterministic else pending
                    done, _ = concurrent.futures.wait(waiting, timeout=0.1, return_when="FIRST_COMPLETED")
                    if done:
                        break
                else:
                    return
                future = next(f for f in pending if f in done)
                pending.remove(future)
                for task in itertools.islice(tasks, 1):
                    pending.append(pool.submit(fn, *task))
                yield future.result()
        finally:  # also when the generator is closed: finish running tasks, drop queued ones
            pool.shutdown(wait=True, cancel_futures=True)

    def _tasks(self, stream: list[int]) -> Iterator[tuple[int, int]]:
        endless = self.training or self.num_windows is not None
        for epoch in itertools.count() if endless else [0]:
            order = np.arange(len(self.subjects))
            if self.training:
                order = np.random.default_rng([*stream, epoch]).permutation(order)
            yield from ((epoch, int(index)) for index in order)

    def _sample(self, stream: list[int], epoch: int, index: int) -> list[tuple[Any, np.ndarray]]:
        arrays = self.cache[index] if self.cache is not None else self._load(index)
        rng = np.random.default_rng([*stream, epoch, index + 1])
        n = self.config.training.sample_per_volume
        if self.graph:  # the same draws as sample_windows without augmentation; windows cut by tf.data
            starts = sample_starts(
                arrays.shape, self.geometry, n, rng, method=self.method, sampling_map=arrays.sampling_map
            )
            return [(np.int32(index), start.astype(np.int64)) for start in starts]
        return sample_windows(
            arrays,  # type: ignore[arg-type]
            self.geometry, n, rng, method=self.method, augmentation=self.augmentation,
        )  # fmt: skip

    def _windows(self, pass_id: int) -> Iterator[tuple[Any, np.ndarray]]:
        # Subjects are loaded (without cache) and their windows cut in the pool;
        # each (epoch, subject) has its own generator, so threads cannot change
        # the windows. Validation windows depend on the seed only (not on the
        # pass or shard): every pass and the union of the shards see the same.
        stream = [self.seed, _TRAIN, self.shard, pass_id] if self.training else [self.seed, _VALID]
        sample = functools.partial(self._sample, stream)
        for windows in self._parallel(sample, self._tasks(stream), deterministic=self.deterministic):
            yield from windows

    def _elements(self) -> Iterator[tuple[Any, np.ndarray]]:
        pass_id = 0 if self.fixed_stream else next(self.passes)
        if not self.training:
            windows = self._windows(pass_id)
            if self.num_windows is not None:
                windows = itertools.islice(windows, self.num_windows)
            for k, element in enumerate(windows):
                if k % self.num_shards == self.shard:
                    yield element
            return
        rng = np.random.default_rng([self.seed, _SHUFFLE, self.shard, pass_id])
        buffer: list[tuple[Any, np.ndarray]] = []
        for element in self._windows(pass_id):
            if len(buffer) < self.config.network.queue_length:
                buffer.append(element)
                continue
            k = int(rng.integers(len(buffer)))
            yield buffer[k]
            buffer[k] = element

    def __call__(self) -> Iterator[tuple[Any, np.ndarray]]:
        elements = self._elements()
        while True:
            with _ACTIVE:
                _ACTIVE.count += 1
            try:
                if _EXITING.is_set():
                    return
                element = next(elements, None)
            finally:
                with _ACTIVE:
                    _ACTIVE.count -= 1
                    _ACTIVE.notify_all()
            if element is None:
                return
            yield element


#: Largest validation set (bytes) held in memory instead of a generator.
_IN_MEMORY_BYTES = 512 * 2**20


def _in_memory(source: _WindowSource, signature: Any) -> Any:
    """The finite validation windows as a ``from_tensor_slices`` dataset, or None when too large.

    Validation is the same windows on every pass, so they are cut once. A
    ``from_generator`` iterator abandoned by Keras after each validation
    (``fit`` builds a new one per validation) is destroyed while its tf.data
    thread waits for the Python generator, which stalls training for about
    a minute at every other validation (measured: 60 s at steps 200, 400,
    600 of the demo against 1 s at 100, 300, 500); a dataset without Python
    has no such thread.
    """
    import tensorflow as tf

    window_bytes = sum(4 * int(np.prod(spec.shape)) for spec in tf.nest.flatten(signature))
    expected = source.num_windows or len(source.subjects) * source.config.training.sample_per_volume
    if expected * window_bytes > _IN_MEMORY_BYTES:
        return None
    elements = list(source())
    if not elements:
        return None
    stacked = tf.nest.map_structure(lambda *parts: np.stack(parts).astype(np.float32), *elements)
    return tf.data.Dataset.from_tensor_slices(stacked)


def _windows(source: _WindowSource, *, training: bool) -> Any:
    """The unbatched ``(inputs, targets)`` windows of ``source`` (see the module notes)."""
    import tensorflow as tf

    if source.graph:  # Python draws the starts, tf.data cuts the windows
        locations = (tf.TensorSpec((), tf.int32), tf.TensorSpec((3,), tf.int64))
        if training:
            dataset = tf.data.Dataset.from_generator(source, output_signature=locations)
        else:  # finite and the same on every pass: the starts are drawn once, no Python when iterated
            elements = list(source())
            index = np.array([int(k) for k, _ in elements], np.int32)
            starts = np.array([start for _, start in elements], np.int64).reshape(-1, 3)
            dataset = tf.data.Dataset.from_tensor_slices((index, starts))
        return dataset.map(source.cutter(), num_parallel_calls=tf.data.AUTOTUNE)
    geometry = source.geometry
    channels = len(source.config.input_sections)
    spec = tf.TensorSpec((*geometry.spatial, channels), tf.float32)
    inputs_spec: Any = tuple(spec for _ in geometry.factors) if geometry.factors else spec
    signature = (inputs_spec, tf.TensorSpec((*geometry.spatial, 2), tf.float32))
    dataset = None if training else _in_memory(source, signature)
    if dataset is None:
        dataset = tf.data.Dataset.from_generator(source, output_signature=signature)
    return dataset


def _select(config: Config, sources: Mapping[str, InputSource], subject_ids: Sequence[str]) -> list[Subject]:
    found = {s.id: s for s in config_subjects(config, sources)}
    ids = list(subject_ids)
    missing = [i for i in ids if i not in found]
    if missing or not ids:
        what = f"no files for subject(s) {', '.join(missing[:5])}" if missing else "no subject given"
        raise UserError(f"training data: {what}; check the split file and the input sections")
    return [found[i] for i in ids]


def _dataset(
    config: Config,
    subject_ids: Sequence[str],
    *,
    training: bool,
    sources: Mapping[str, InputSource] | None,
    seed: int | None,
    deterministic: bool,
    cache: bool,
    num_shards: int,
    shard_index: int,
    batch_size: int | None,
    target_normalisation: NormalisationParams | None,
    fixed_stream: bool = False,
    num_windows: int | None = None,
) -> Any:
    import tensorflow as tf

    if not 0 <= shard_index < num_shards:
        raise ValueError(f"Expected 0 <= shard_index < num_shards. Received: {shard_index}, {num_shards}")
    from tfuq.data.sources import resolve_sources

    sources = resolve_sources(config) if sources is None else sources
    subjects = _select(config, sources, subject_ids)
    if training and num_shards > 1 and len(subjects) >= num_shards:
        subjects = subjects[shard_index::num_shards]
    seed = config.system.seed if seed is None else int(seed)
    source = _WindowSource(
        config,
        subjects,
        sources,
        seed=seed,
        shard=shard_index,
        training=training,
        deterministic=deterministic,
        cache=cache,
        num_shards=1 if training else num_shards,
        target_normalisation=target_normalisation,
        fixed_stream=fixed_stream,
        num_windows=num_windows,
    )
    dataset = _windows(source, training=training)
    batch = config.network.batch_size if batch_size is None else int(batch_size)
    dataset = dataset.batch(batch, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    if num_shards > 1:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def make_training_dataset(
    config: Config,
    subject_ids: Sequence[str],
    *,
    sources: Mapping[str, InputSource] | None = None,
    seed: int | None = None,
    deterministic: bool = True,
    cache: bool = True,
    num_shards: int = 1,
    shard_index: int = 0,
    batch_size: int | None = None,
    target_normalisation: NormalisationParams | None = None,
    fixed_stream: bool = False,
) -> Any:
    """An endless, shuffled, augmented ``tf.data.Dataset`` of training batches.

    Args:
        config: The loaded configuration.
        subject_ids: Training subjects (e.g. ``subjects_in_phase(split, TRAINING)``).
        sources: Resolved input sources (default :func:`resolve_sources`).
        seed: Seed of every random choice; default ``[SYSTEM] seed``.
        deterministic: Keep a fixed element order (otherwise subjects are
            used in the order they finish loading; only matters with ``cache=False``).
        cache: Keep loaded, normalised volumes in memory (loaded up front).
        num_shards: Number of input pipelines (workers).
        shard_index: This pipeline's index in ``[0, num_shards)``.
        batch_size: Windows per batch; default ``[NETWORK] batch_size``.
        target_normalisation: Fixed normalisation of the target section for
            every subject (see :mod:`tfuq.training.normalisation`); default:
            fitted per subject like the inputs.
        fixed_stream: Start every iteration over the dataset with the same
            windows (pass 0) instead of continuing with fresh ones, so the
            stream a training loop sees does not depend on how many iterators
            were made before (Keras ``fit`` under a ``tf.distribute``
            strategy draws one batch from its own iterator first).

    Returns:
        tf.data.Dataset: ``(inputs, targets)`` batches with a fixed batch size
        (``drop_remainder``): inputs ``(B, *spatial, C_in)`` (MultiRes: a tuple
        of those), targets ``(B, *spatial, 2)`` = ``[target, mask]``. Endless:
        pass ``steps_per_epoch`` to ``fit``.

    Raises:
        UserError: unknown subjects, data or config problems (one line).

    Example:
        >>> ds = make_training_dataset(cfg, subjects_in_phase(split, TRAINING))  # doctest: +SKIP
        >>> model.fit(ds, steps_per_epoch=100, epochs=3)  # doctest: +SKIP
    """
    return _dataset(
        config,
        subject_ids,
        training=True,
        sources=sources,
        seed=seed,
        deterministic=deterministic,
        cache=cache,
        num_shards=num_shards,
        shard_index=shard_index,
        batch_size=batch_size,
        target_normalisation=target_normalisation,
        fixed_stream=fixed_stream,
    )


def make_validation_dataset(
    config: Config,
    subject_ids: Sequence[str],
    *,
    sources: Mapping[str, InputSource] | None = None,
    seed: int | None = None,
    cache: bool = True,
    num_shards: int = 1,
    shard_index: int = 0,
    batch_size: int | None = None,
    target_normalisation: NormalisationParams | None = None,
    num_windows: int | None = None,
) -> Any:
    """A finite ``tf.data.Dataset`` of validation batches: the same windows on every pass.

    Subjects in the given order, ``sample_per_volume`` windows each drawn with
    the configured sampler from a fixed seed, no augmentation, no shuffling,
    the last batch possibly smaller; with ``num_shards > 1`` every
    ``num_shards``-th window belongs to this shard. With ``num_windows``, the
    subjects are visited again in the same order, each visit drawing fresh
    windows from its own fixed seed, until exactly ``num_windows`` windows (in
    all shards together); the first visit is the default's. Other arguments
    and element shapes as :func:`make_training_dataset`.
    """
    if num_windows is not None and (isinstance(num_windows, bool) or int(num_windows) < 1):
        raise ValueError(f"num_windows must be None or >= 1. Received: num_windows={num_windows!r}")
    return _dataset(
        config,
        subject_ids,
        training=False,
        sources=sources,
        seed=seed,
        deterministic=True,
        cache=cache,
        num_shards=num_shards,
        shard_index=shard_index,
        batch_size=batch_size,
        target_normalisation=target_normalisation,
        num_windows=None if num_windows is None else int(num_windows),
    )
