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

from tfuq.bench.infer import bench_infer, infer_lines, infer_once
from tfuq.bench.network import NetworkBenchmark, bench_network
from tfuq.bench.timing import best_time, conv_flops, matmul_peak_gflops

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
