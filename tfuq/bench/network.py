"""``tfuq bench network``: the forward pass against the fp32 matmul peak, in one process."""

from __future__ import annotations

import dataclasses
from typing import Any

from tfuq.bench.timing import conv_flops, interleaved_best, matmul_peak

__all__ = ["NetworkBenchmark", "bench_network"]


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
    folded: bool = False

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
                f"(shared deterministic prefix: {'yes' if self.shared_prefix else 'no'}; "
                f"channel dropout folded: {'yes' if self.folded else 'no'}): "
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

    The network is timed as the MC engine runs it (BatchNormalization folded,
    :func:`tfuq.inference.folding.fold_batch_norm`). Every measurement
    (matmul peak, deterministic and MC-dropout forward,
    bfloat16 forward, one MC window group and its deterministic pass) is timed
    in alternation (:func:`~tfuq.bench.timing.interleaved_best`), so the
    ratios compare runs made under the same load.

    Args:
        config: A loaded :class:`~tfuq.config.Config`.
        batch: Windows per forward call; default ``[NETWORK] batch_size``.
        repeats: Rounds of timing (best kept per measurement).

    Returns:
        NetworkBenchmark: FLOPs, times and the ratios.
    """
    import keras
    import tensorflow as tf

    from tfuq.errors import UserError
    from tfuq.inference.folding import fold_batch_norm
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

    def run(fn: Any, x: Any) -> Any:
        return lambda: keras.tree.map_structure(lambda t: t.numpy(), fn(x))

    graph = fold_batch_norm(model)  # what the MC engine compiles
    peak_fn, peak_flops = matmul_peak()
    fns = {"peak": peak_fn, "forward": run(tf.function(lambda x: graph(x, training=False)), args)}
    with mc_sampling(model):  # traced now, with MC sampling on
        fns["mc"] = run(tf.function(lambda x: graph(x, training=False)), args)
        fns["mc"]()
    try:
        fast = fold_batch_norm(with_precision(model, "bfloat16"))
    except UserError:
        pass
    else:
        fns["bf16"] = run(tf.function(lambda x: fast(x, training=False)), args)
    group = _mc_group(config, model, graph, inputs)
    fns.update(group.pop("fns", {}))
    with mc_sampling(model):
        best = interleaved_best(fns, repeats=repeats)
    return NetworkBenchmark(
        network=config.network.name,
        window=tuple(int(s) for s in specs[0].shape[1:-1]),
        batch=batch,
        gflop_per_batch=conv_flops(model) * batch / 1e9,
        peak_gflops=peak_flops / best["peak"] / 1e9,
        forward_seconds=best["forward"],
        mc_forward_seconds=best["mc"],
        bfloat16_forward_seconds=best.get("bf16"),
        mc_group_seconds=best.get("group_mc"),
        group_forward_seconds=best.get("group_forward"),
        **group,
    )


def _mc_group(config: Any, model: Any, graph: Any, inputs: list) -> dict[str, Any]:
    """``tfuq infer``'s window predictor on one window group, and a deterministic pass of it, to time.

    ``graph`` is the network as the engine compiles it (its deterministic pass is the unit).

    Returns:
        dict with the group's description and ``fns``: ``group_mc`` (T passes, streamed moments) and
        ``group_forward`` (one deterministic pass), both traced already; empty for a model without
        MC sampling.
    """
    import keras
    import tensorflow as tf

    from tfuq.inference.channel_fold import fold_channel_dropout
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
    forward = tf.function(lambda x: graph(x, training=False))
    args = group if len(group) > 1 else group[0]
    split = split_at_stochastic(graph)
    with mc_sampling(model):
        predict = mc_window_predictor(
            model,
            config.family,
            mc_samples=samples,
            samples_per_call=per_call,
            window=window,
            levels=len(levels),
        )
        predict(levels)
    return {
        "mc_samples": samples,
        "mc_group_windows": windows,
        "shared_prefix": split is not None,
        "folded": split is not None and fold_channel_dropout(split[1]) is not None,
        "fns": {
            "group_forward": lambda: keras.tree.map_structure(lambda t: t.numpy(), forward(args)),
            "group_mc": lambda: predict(levels),
        },
    }
