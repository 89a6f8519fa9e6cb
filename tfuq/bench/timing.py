"""Timing primitives of the benchmarks: best-of-N wall time, the fp32 matmul peak, conv FLOPs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["best_time", "conv_flops", "interleaved_best", "matmul_peak", "matmul_peak_gflops"]


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


def interleaved_best(fns: Mapping[str, Callable[[], Any]], *, repeats: int = 5) -> dict[str, float]:
    """Best wall time of each function, timed in turn: round r times every function once.

    On a shared machine the load changes over seconds; timing the functions
    in alternation puts each of them in the same conditions, so the ratios of
    the results stay meaningful where separate best-of runs would not.

    Args:
        fns: Name -> callable (each called once as warm-up first, in order).
        repeats: Rounds, ``>= 1``.

    Returns:
        Name -> best seconds.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def matmul_peak(n: int = 2048, *, inner: int = 4) -> tuple[Callable[[], Any], float]:
    """A timed fp32 matmul chain and its FLOPs: ``(fn, flops)`` with ``2 n^3`` FLOPs per product.

    Args:
        n: Square matrix size.
        inner: Products per call, chained so none can be skipped.
    """
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=tf.float32) / math.sqrt(n)

    @tf.function
    def chain(x: tf.Tensor) -> tf.Tensor:
        for _ in range(inner):
            x = tf.matmul(x, a)
        return x

    return (lambda: chain(a).numpy()), 2.0 * n**3 * inner


def matmul_peak_gflops(n: int = 2048, *, repeats: int = 5, inner: int = 4) -> float:
    """This machine's fp32 matmul throughput in GFLOP/s (``2 n^3`` FLOPs per product).

    Args:
        n: Square matrix size.
        repeats: Timed calls; the best is kept.
        inner: Products per timed call, chained so none can be skipped.
    """
    fn, flops = matmul_peak(n, inner=inner)
    return flops / best_time(fn, repeats=repeats) / 1e9


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
