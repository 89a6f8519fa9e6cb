"""``tfuq bench infer``: whole-volume MC inference per T, each in a fresh process (time, peak RSS)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["bench_infer", "infer_lines", "infer_once"]


def infer_once(config: Any, shape: Sequence[int], mc_samples: int) -> dict[str, float]:
    """One whole-volume MC inference as ``tfuq infer`` runs it, on a random volume (this process).

    The configured network with its initial weights (the cost does not depend on the weights),
    ``[INFERENCE]`` window, overlap, batch and precision, ``mc_samples`` passes. The volume is
    predicted twice and the second run is timed: the first traces the compiled passes, which a
    cohort pays once (the peak RSS covers both). The network's
    convolution FLOPs (:func:`~tfuq.bench.timing.conv_flops`, per voxel of its window, times the
    voxels of every inference window and T) over the time give the achieved GFLOP/s; the fp32 matmul
    peak is measured in the same process just before and just after the inference (best kept).

    Returns:
        dict ``mc_samples``, ``seconds`` (the prediction alone), ``peak_rss_mb`` (the process's peak
        resident memory before the matmul peak is measured, MB), ``windows``, ``gflop`` (convolution
        work of the T passes over every window) and ``peak_gflops``.
    """
    import resource

    import numpy as np

    from tfuq.bench.timing import best_time, conv_flops, matmul_peak
    from tfuq.data.normalisation import NormalisationParams
    from tfuq.inference.prediction import check_windows, predict_subject, prediction_settings
    from tfuq.model_store import build_network
    from tfuq.model_store.precision import resolve_precision, with_precision
    from tfuq.model_store.trained import TrainedModel

    settings = prediction_settings(config, mc_samples=mc_samples)
    network = build_network(config)
    per_voxel = conv_flops(network) / math.prod(int(s) for s in network.inputs[0].shape[1:-1])
    model = with_precision(network, resolve_precision(config))
    members = check_windows([TrainedModel(Path("."), model, NormalisationParams("none", 0.0, 1.0))], settings)
    channels = len(config.input_sections)
    volume = np.random.default_rng(0).normal(size=(*shape, channels)).astype(np.float32)
    predict_subject(members, volume, settings)  # warm-up: the compiled passes are traced once per run
    windows = [0]
    start = time.perf_counter()
    predict_subject(members, volume, settings, progress=lambda n: windows.__setitem__(0, windows[0] + n))
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    peak_fn, peak_flops = matmul_peak()
    peak = peak_flops / best_time(peak_fn, repeats=5) / 1e9
    gflop = per_voxel * math.prod(settings.window) * windows[0] * mc_samples / 1e9
    return {
        "mc_samples": float(mc_samples),
        "seconds": seconds,
        "peak_rss_mb": rss,
        "windows": float(windows[0]),
        "gflop": gflop,
        "peak_gflops": peak,
    }


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
            [sys.executable, "-m", "tfuq.bench.infer", request], capture_output=True, text=True, check=False
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
        line = (
            f"{size} volume, T = {int(r['mc_samples'])}: {r['seconds']:.2f} s "
            f"({r['seconds'] / first['seconds']:.2f}x T = {int(first['mc_samples'])}), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] / first['peak_rss_mb']:.2f}x)"
        )
        if r.get("gflop") and r.get("peak_gflops"):
            achieved = r["gflop"] / r["seconds"]
            line += (
                f", {int(r['windows'])} windows, {achieved:.1f} GFLOP/s = "
                f"{achieved / r['peak_gflops']:.3f} of the matmul peak ({r['peak_gflops']:.1f})"
            )
        lines.append(line)
    return lines


if __name__ == "__main__":  # one measurement in a fresh process: python -m tfuq.bench.infer '<json request>'
    from tfuq.config import load_config

    _request = json.loads(sys.argv[1])
    _config = load_config(_request["config"], _request["overrides"])
    print(json.dumps(infer_once(_config, _request["shape"], _request["T"])))
