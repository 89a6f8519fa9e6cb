"""Benchmarks that report ratios measured in one run, never absolute targets.

``tfuq bench network CONFIG`` measures this machine's fp32 matmul peak and the
network's forward throughput on its configured window in the same process,
and prints achieved GFLOP/s as a fraction of that peak. ``tfuq bench infer
CONFIG`` runs a whole-volume MC inference (random volume, the configured
network, window, batch and precision) once per T, each in a fresh process, and
prints the time and peak RSS as ratios to the first T. The machines are
shared and noisy: each timing is the best of several repeats, and only the
ratio is meant to be compared across runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NetworkBenchmark",
    "bench_infer",
    "bench_network",
    "best_time",
    "conv_flops",
    "infer_lines",
    "infer_once",
    "matmul_peak_gflops",
]


def best_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Best wall time in seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_gflops(n: int = 2048, *, repeats: int = 5, inner: int = 4) -> float:
    """This machine's fp32 matmul throughput in GFLOP/s (``2 n^3`` FLOPs per product).

    Args:
        n: Square matrix size.
        repeats: Timed calls; the best is kept.
        inner: Products per timed call, chained so none can be skipped.
    """
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=tf.float32) / math.sqrt(n)

    @tf.function
    def chain(x: tf.Tensor) -> tf.Tensor:
        for _ in range(inner):
            x = tf.matmul(x, a)
        return x

    seconds = best_time(lambda: chain(a).numpy(), repeats=repeats)
    return 2.0 * n**3 * inner / seconds / 1e9


def _conv_kind(layer: Any) -> str | None:
    import keras

    transposed = (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose, keras.layers.Conv1DTranspose)
    if isinstance(layer, transposed):
        return "transpose"
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    return None


def conv_flops(model: Any) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of ``model`` for batch 1.

    Counts convolutions (``2 k^d c_in c_out`` per output voxel; transposed
    convolutions per input voxel) and dense layers, from each layer's recorded
    input/output shapes, including layers of nested models and the layer
    wrapped by a ``keras.layers.Wrapper`` (e.g. concrete dropout). Elementwise
    work (normalisation, activations, dropout) is ignored: it is memory-bound.

    Raises:
        ValueError: a convolution whose shapes are unknown (not built on a
            concrete input shape).
    """
    import keras

    from tfuq.layers.mc_sampling import iter_layers

    total = 0
    counted: set[int] = set()
    for layer in iter_layers(model):
        inner = layer.layer if isinstance(layer, keras.layers.Wrapper) else layer
        kind = _conv_kind(inner)
        if kind is None or id(inner) in counted:
            continue
        try:
            in_shape, out_shape = tuple(layer.input.shape), tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue  # an inner layer with no graph node of its own: counted through its wrapper
        counted.add(id(inner))
        if kind == "dense":
            total += 2 * int(in_shape[-1]) * int(out_shape[-1]) * math.prod(int(s) for s in out_shape[1:-1])
            continue
        if any(s is None for s in (*in_shape[1:], *out_shape[1:])):
            raise ValueError(f"Expected concrete shapes to count FLOPs. Received: {layer.name} {in_shape}")
        groups = getattr(inner, "groups", 1)
        macs = math.prod(inner.kernel_size) * int(in_shape[-1]) * int(out_shape[-1]) // groups
        voxels = math.prod(in_shape[1:-1]) if kind == "transpose" else math.prod(out_shape[1:-1])
        total += 2 * macs * int(voxels)
    return total


@dataclasses.dataclass(frozen=True)
class NetworkBenchmark:
    """One run of :func:`bench_network`; ``fraction_of_peak`` is the figure to compare."""

    network: str
    window: tuple[int, ...]
    batch: int
    gflop_per_batch: float
    peak_gflops: float
    forward_seconds: float
    mc_forward_seconds: float
    bfloat16_forward_seconds: float | None = None
    mc_samples: int = 0
    mc_group_windows: int = 0
    mc_group_seconds: float | None = None
    group_forward_seconds: float | None = None
    shared_prefix: bool = False

    @property
    def achieved_gflops(self) -> float:
        """Deterministic forward throughput."""
        return self.gflop_per_batch / self.forward_seconds

    @property
    def fraction_of_peak(self) -> float:
        """Achieved forward GFLOP/s over the matmul peak measured in the same run."""
        return self.achieved_gflops / self.peak_gflops

    @property
    def mc_overhead(self) -> float:
        """Time of an MC-dropout pass over a deterministic one (1.0 = free)."""
        return self.mc_forward_seconds / self.forward_seconds

    @property
    def bfloat16_speedup(self) -> float | None:
        """Float32 forward time over the bfloat16 one (``[INFERENCE] precision``); None if not run."""
        if self.bfloat16_forward_seconds is None:
            return None
        return self.forward_seconds / self.bfloat16_forward_seconds

    @property
    def mc_cost(self) -> float | None:
        """Time of T MC passes of a window group (streamed moments included) over one deterministic pass."""
        if self.mc_group_seconds is None or not self.group_forward_seconds:
            return None
        return self.mc_group_seconds / self.group_forward_seconds

    def lines(self) -> list[str]:
        """Human-readable report."""
        w = "x".join(str(s) for s in self.window)
        extra = []
        if self.mc_cost is not None:
            extra.append(
                f"MC inference, T = {self.mc_samples} passes of {self.mc_group_windows} window(s) "
                f"(shared deterministic prefix: {'yes' if self.shared_prefix else 'no'}): "
                f"{self.mc_group_seconds:.3f} s = {self.mc_cost:.2f} deterministic passes"
            )
        if self.bfloat16_speedup is not None:
            extra.append(
                f"bfloat16 forward ([INFERENCE] precision = bfloat16): {self.bfloat16_forward_seconds:.3f} s "
                f"= {self.bfloat16_speedup:.2f}x the float32 speed"
            )
        return [
            f"matmul peak (fp32, this run): {self.peak_gflops:.1f} GFLOP/s",
            f"{self.network} forward, window {w}, batch {self.batch}: {self.gflop_per_batch:.2f} GFLOP "
            f"in {self.forward_seconds:.3f} s = {self.achieved_gflops:.1f} GFLOP/s",
            f"fraction of matmul peak: {self.fraction_of_peak:.3f}",
            f"MC-dropout pass / deterministic pass time: {self.mc_overhead:.3f}",
            *extra,
        ]


def bench_network(config: Any, *, batch: int | None = None, repeats: int = 3) -> NetworkBenchmark:
    """Time the configured network's forward pass against the matmul peak, in one process.

    Args:
        config: A loaded :class:`~tfuq.config.Config`.
        batch: Windows per forward call; default ``[NETWORK] batch_size``.
        repeats: Timed calls per measurement (best kept).

    Returns:
        NetworkBenchmark: FLOPs, times and the ratios.
    """
    import keras
    import tensorflow as tf

    from tfuq.errors import UserError
    from tfuq.layers import mc_sampling
    from tfuq.model_store import build_network
    from tfuq.model_store.precision import with_precision

    model = build_network(config)
    batch = batch or config.network.batch_size
    specs = model.inputs if isinstance(model.inputs, (list, tuple)) else [model.inputs]
    inputs = [
        tf.random.stateless_normal((batch, *(int(s) for s in spec.shape[1:])), seed=(3, i))
        for i, spec in enumerate(specs)
    ]
    args = inputs if len(inputs) > 1 else inputs[0]
    forward = tf.function(lambda x: model(x, training=False))
    deterministic = best_time(
        lambda: keras.tree.map_structure(lambda t: t.numpy(), forward(args)), repeats=repeats
    )
    with mc_sampling(model):
        mc_forward = tf.function(lambda x: model(x, training=False))
        mc = best_time(
            lambda: keras.tree.map_structure(lambda t: t.numpy(), mc_forward(args)), repeats=repeats
        )
    try:
        fast = with_precision(model, "bfloat16")
    except UserError:
        bf16 = None
    else:
        fast_forward = tf.function(lambda x: fast(x, training=False))
        bf16 = best_time(
            lambda: keras.tree.map_structure(lambda t: t.numpy(), fast_forward(args)), repeats=repeats
        )
    group = _mc_group(config, model, inputs, repeats)
    peak = matmul_peak_gflops(repeats=repeats + 2)
    return NetworkBenchmark(
        network=config.network.name,
        window=tuple(int(s) for s in specs[0].shape[1:-1]),
        batch=batch,
        gflop_per_batch=conv_flops(model) * batch / 1e9,
        peak_gflops=peak,
        forward_seconds=deterministic,
        mc_forward_seconds=mc,
        bfloat16_forward_seconds=bf16,
        **group,
    )


def _mc_group(config: Any, model: Any, inputs: list, repeats: int) -> dict[str, Any]:
    """Time ``tfuq infer``'s window predictor on one window group against a deterministic pass of it."""
    import keras
    import tensorflow as tf

    from tfuq.inference.mc import mc_window_predictor, sample_plan
    from tfuq.inference.prefix import split_at_stochastic
    from tfuq.layers import mc_sampling, stochastic_layers

    if not stochastic_layers(model) or config.family == "point":
        return {}
    samples = config.uncertainty.mc_samples
    windows, per_call = sample_plan(samples, config.inference.batch_size)
    group = [x[:1] for x in inputs]
    group = [tf.concat([x] * windows, 0) if windows > 1 else x for x in group]
    spatial = tuple(int(s) for s in group[0].shape[1:-1])
    window = spatial if len(spatial) == 3 else (*spatial, 1)
    levels = [x.numpy() if len(spatial) == 3 else x.numpy()[..., None, :] for x in group]
    forward = tf.function(lambda x: model(x, training=False))
    args = group if len(group) > 1 else group[0]
    deterministic = best_time(
        lambda: keras.tree.map_structure(lambda t: t.numpy(), forward(args)), repeats=repeats
    )
    with mc_sampling(model):
        predict = mc_window_predictor(
            model,
            config.family,
            mc_samples=samples,
            samples_per_call=per_call,
            window=window,
            levels=len(levels),
        )
        seconds = best_time(lambda: predict(levels), repeats=repeats)
    return {
        "mc_samples": samples,
        "mc_group_windows": windows,
        "mc_group_seconds": seconds,
        "group_forward_seconds": deterministic,
        "shared_prefix": split_at_stochastic(model) is not None,
    }


def infer_once(config: Any, shape: Sequence[int], mc_samples: int) -> dict[str, float]:
    """One whole-volume MC inference as ``tfuq infer`` runs it, on a random volume (this process).

    The configured network with its initial weights (the cost does not depend on the weights),
    ``[INFERENCE]`` window, overlap, batch and precision, ``mc_samples`` passes.

    Returns:
        dict ``mc_samples``, ``seconds`` (the prediction alone) and ``peak_rss_mb`` (the
        process's peak resident memory so far, MB).
    """
    import resource

    import numpy as np

    from tfuq.data.normalisation import NormalisationParams
    from tfuq.inference.prediction import check_windows, predict_subject, prediction_settings
    from tfuq.model_store import build_network
    from tfuq.model_store.precision import with_precision
    from tfuq.model_store.trained import TrainedModel

    settings = prediction_settings(config, mc_samples=mc_samples)
    model = with_precision(build_network(config), config.inference.precision)
    members = check_windows([TrainedModel(Path("."), model, NormalisationParams("none", 0.0, 1.0))], settings)
    channels = len(config.input_sections)
    volume = np.random.default_rng(0).normal(size=(*shape, channels)).astype(np.float32)
    start = time.perf_counter()
    predict_subject(members, volume, settings)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return {"mc_samples": float(mc_samples), "seconds": seconds, "peak_rss_mb": peak}


def bench_infer(
    config_path: Path, overrides: Sequence[str], shape: Sequence[int], samples: Sequence[int]
) -> list[dict[str, float]]:
    """:func:`infer_once` for each T in ``samples``, each in a fresh Python process (clean peak RSS)."""
    results = []
    for mc_samples in samples:
        request = json.dumps(
            {
                "config": str(config_path),
                "overrides": list(overrides),
                "shape": list(shape),
                "T": int(mc_samples),
            }
        )
        proc = subprocess.run(
            [sys.executable, "-m", "tfuq.bench", request], capture_output=True, text=True, check=False
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"bench infer T = {mc_samples} failed: {proc.stderr.strip()[-2000:]}")
        results.append(json.loads(lines[-1]))
    return results


def infer_lines(results: Sequence[Mapping[str, float]], shape: Sequence[int]) -> list[str]:
    """Human-readable report of :func:`bench_infer`, with ratios to the first T."""
    first = results[0]
    size = "x".join(str(s) for s in shape)
    lines = []
    for r in results:
        lines.append(
            f"{size} volume, T = {int(r['mc_samples'])}: {r['seconds']:.2f} s "
            f"({r['seconds'] / first['seconds']:.2f}x T = {int(first['mc_samples'])}), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] / first['peak_rss_mb']:.2f}x)"
        )
    return lines


if __name__ == "__main__":  # one measurement in a fresh process: python -m tfuq.bench '<json request>'
    from tfuq.config import load_config

    _request = json.loads(sys.argv[1])
    _config = load_config(_request["config"], _request["overrides"])
    print(json.dumps(infer_once(_config, _request["shape"], _request["T"])))
