"""``tfuq bench train``: training steps on the real tf.data pipeline against one cached batch, one process.

The trainer is built as ``tfuq train`` builds it (``[SYSTEM] mixed_precision``,
:func:`~tfuq.training.build.build_trainer`, initial weights) and fed the
training subjects of the split (made in memory, nothing is written) through
:func:`~tfuq.data.pipeline.make_training_dataset` with the target
normalisation fitted on them. Steps run as ``tfuq train`` runs them, in
Keras ``fit`` (one ``fit`` per round and stream; the time of a round runs
from the end of its ``warmup`` steps, which take the tracing and the
pipeline's start, to the end of its last step). Two streams are timed,
alternately, in each of ``repeats`` rounds of ``steps`` steps:

- pipeline: the real dataset (windows drawn, cut, shuffled, batched and
  prefetched while the steps run);
- cached: ``dataset.take(1).cache().repeat()``, the first batch again and
  again, i.e. the step with an input pipeline that costs nothing.

Each is the best round (the machines are shared and noisy), as seconds per
step; :attr:`TrainBenchmark.pipeline_rate` is pipeline steps per second over
cached steps per second (1.0: the input pipeline is free; issue #18 asks for
>= 0.95). Peak RSS is the process's peak resident memory at the end (the
model, both streams and the loaded subjects).
"""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import Any

__all__ = ["TrainBenchmark", "bench_train"]


@dataclasses.dataclass(frozen=True)
class TrainBenchmark:
    """One run of :func:`bench_train`; ``pipeline_rate`` is the figure to compare.

    Attributes:
        network: ``[NETWORK] name``.
        window: Network input window (spatial).
        context: Voxels read per window (``max(factors) * window`` for MultiRes).
        batch: Windows per step.
        steps: Timed steps per round.
        repeats: Rounds (the best is kept).
        pipeline_step_seconds: Seconds per step fed by the real pipeline.
        cached_step_seconds: Seconds per step on one cached batch.
        peak_rss_mb: Process peak resident memory, MB.
        graph_windows: Whether tf.data cut the windows with TF ops (else a NumPy generator).
        pipeline_cpu_seconds: Process CPU seconds (all threads) per step with the real pipeline.
        cached_cpu_seconds: Process CPU seconds per step on the cached batch.
    """

    network: str
    window: tuple[int, ...]
    context: tuple[int, ...]
    batch: int
    steps: int
    repeats: int
    pipeline_step_seconds: float
    cached_step_seconds: float
    peak_rss_mb: float
    graph_windows: bool = True
    pipeline_cpu_seconds: float | None = None
    cached_cpu_seconds: float | None = None

    @property
    def pipeline_rate(self) -> float:
        """Steps per second with the real pipeline over steps per second on the cached batch."""
        return self.cached_step_seconds / self.pipeline_step_seconds

    @property
    def pipeline_overhead(self) -> float:
        """Seconds per step the input pipeline adds (negative: within noise)."""
        return self.pipeline_step_seconds - self.cached_step_seconds

    @property
    def pipeline_cpu_share(self) -> float | None:
        """Fraction of the process's CPU time per step that the input pipeline adds (None if not measured).

        ``(pipeline_cpu - cached_cpu) / pipeline_cpu``: less sensitive to other jobs on a
        shared machine than the wall times; on a machine whose cores the step keeps busy,
        the rate ratio cannot stay above about ``1 - pipeline_cpu_share``.
        """
        if self.pipeline_cpu_seconds is None or self.cached_cpu_seconds is None:
            return None
        return (self.pipeline_cpu_seconds - self.cached_cpu_seconds) / self.pipeline_cpu_seconds

    def lines(self) -> list[str]:
        """Human-readable report."""
        w = "x".join(str(s) for s in self.window)
        c = "x".join(str(s) for s in self.context)
        cut = "TF ops in tf.data" if self.graph_windows else "a NumPy generator"
        lines = [
            f"{self.network} training, window {w} (context {c}), batch {self.batch}, windows cut by {cut}",
            f"step with the real pipeline: {self.pipeline_step_seconds:.3f} s "
            f"(best of {self.repeats} x {self.steps} steps)",
            f"step on one cached batch: {self.cached_step_seconds:.3f} s",
            f"pipeline rate / cached rate: {self.pipeline_rate:.3f}",
            f"peak RSS: {self.peak_rss_mb:.0f} MB",
        ]
        share = self.pipeline_cpu_share
        if share is not None:
            lines.append(
                f"process CPU per step: {self.pipeline_cpu_seconds:.3f} s with the pipeline, "
                f"{self.cached_cpu_seconds:.3f} s cached (pipeline share {share:.3f})"
            )
        return lines


def _fit_seconds(trainer: Any, data: Any, steps: int, warmup: int) -> tuple[float, float]:
    """Wall and process CPU seconds per step of ``trainer.fit`` on ``data`` after ``warmup`` steps."""
    import keras

    stamps: list[tuple[float, float]] = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: stamps.append((time.perf_counter(), time.process_time()))
    )
    trainer.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[clock])
    (wall0, cpu0), (wall1, cpu1) = stamps[warmup - 1], stamps[-1]
    return (wall1 - wall0) / steps, (cpu1 - cpu0) / steps


def bench_train(config: Any, *, steps: int = 20, repeats: int = 3, warmup: int = 1) -> TrainBenchmark:
    """Time training steps on the real pipeline and on one cached batch, in this process.

    Args:
        config: A loaded :class:`~tfuq.config.Config` (``[REGRESSION]`` or ``[GAN]``).
        steps: Timed steps per round and stream.
        repeats: Rounds; the best round of each stream is kept.
        warmup: Untimed steps at the start of every round (tracing, pipeline start), >= 1.

    Returns:
        TrainBenchmark: the times, their ratio and the peak RSS.

    Raises:
        UserError: no training subject, or data problems (one line).
        ConfigError: settings training cannot take.
    """
    from tfuq.data.dataset import plan_dataset
    from tfuq.data.pipeline import make_training_dataset, windows_in_graph
    from tfuq.data.sources import resolve_sources
    from tfuq.data.split import TRAINING
    from tfuq.data.training_windows import window_geometry
    from tfuq.errors import UserError
    from tfuq.training.build import build_trainer, check_training_config
    from tfuq.training.normalisation import fit_target_normalisation
    from tfuq.training.strategy import precision_policy

    check_training_config(config)
    sources = resolve_sources(config)
    train_ids = plan_dataset(config, sources).ids(TRAINING)
    if not train_ids:
        raise UserError(f"{config.path}: no Training subject to benchmark; check the split and the data")
    target = None if config.per_subject_target else fit_target_normalisation(config, train_ids, sources)
    dataset = make_training_dataset(config, train_ids, sources=sources, target_normalisation=target)
    cached = dataset.take(1).cache().repeat()
    with precision_policy(config.system.mixed_precision):
        trainer = build_trainer(config)
    streams = {"pipeline": dataset, "cached": cached}
    best = dict.fromkeys(streams, float("inf"))
    cpu = dict.fromkeys(streams, float("inf"))
    for _ in range(repeats):
        for name, data in streams.items():
            wall, used = _fit_seconds(trainer, data, steps, max(1, warmup))
            best[name], cpu[name] = min(best[name], wall), min(cpu[name], used)
    geometry = window_geometry(config)
    return TrainBenchmark(
        network=config.network.name,
        window=tuple(geometry.spatial),
        context=tuple(geometry.region[: len(geometry.spatial)]),
        batch=config.network.batch_size,
        steps=steps,
        repeats=repeats,
        pipeline_step_seconds=best["pipeline"],
        cached_step_seconds=best["cached"],
        pipeline_cpu_seconds=cpu["pipeline"],
        cached_cpu_seconds=cpu["cached"],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # KiB on Linux
        graph_windows=windows_in_graph(config),
    )
