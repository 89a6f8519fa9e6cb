"""tfuq.bench: FLOP counting against hand counts, and the report's ratios."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import pytest

from tfuq.bench import NetworkBenchmark, best_time, conv_flops
from tfuq.layers import ConcreteSpatialDropout3D

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_conv_flops_hand_count() -> None:
    x = keras.Input((8, 8, 8, 2))
    h = keras.layers.Conv3D(4, 3, padding="same")(x)  # 2*27*2*4 per voxel, 512 voxels
    h = keras.layers.Conv3D(6, 1, strides=2)(h)  # 2*1*4*6 per output voxel, 64 voxels
    h = keras.layers.Conv3DTranspose(3, 2, strides=2)(h)  # 2*8*6*3 per INPUT voxel, 64 voxels
    h = ConcreteSpatialDropout3D(keras.layers.Conv3D(5, 3, padding="same"), seed=0)(h)  # 2*27*3*5 * 512
    inner = keras.Model(x, h)
    xo = keras.Input((8, 8, 8, 2))
    outer = keras.Model(xo, keras.layers.Dense(7)(inner(xo)))  # 2*5*7 per voxel, 512 voxels
    expected = 2 * 27 * 2 * 4 * 512 + 2 * 4 * 6 * 64 + 2 * 8 * 6 * 3 * 64 + 2 * 27 * 3 * 5 * 512
    assert conv_flops(inner) == expected
    assert conv_flops(outer) == expected + 2 * 5 * 7 * 512


def test_highres3dnet_flops_match_its_parameters() -> None:
    from tfuq.networks import HighRes3DNet

    model = HighRes3DNet((16, 16, 16, 1))
    # Every conv is 'same' with stride 1: FLOPs per voxel = 2 * (conv weights without biases).
    weights = sum(math.prod(w.shape) for w in model.weights if w.path.endswith("kernel"))
    assert conv_flops(model) == 2 * weights * 16**3


def test_best_time_and_ratios() -> None:
    calls = []
    assert best_time(lambda: calls.append(1), repeats=3, warmup=2) >= 0 and len(calls) == 5
    report = NetworkBenchmark("x", (8, 8, 8), 2, 10.0, 100.0, 0.5, 0.6)
    assert report.achieved_gflops == pytest.approx(20.0)
    assert report.fraction_of_peak == pytest.approx(0.2)
    assert report.mc_overhead == pytest.approx(1.2)
    assert report.lines()[2] == "fraction of matmul peak: 0.200"
    assert report.bfloat16_speedup is None and len(report.lines()) == 4
    fast = NetworkBenchmark("x", (8, 8, 8), 2, 10.0, 100.0, 0.5, 0.6, bfloat16_forward_seconds=0.25)
    assert fast.bfloat16_speedup == pytest.approx(2.0)
    assert fast.lines()[-1].endswith("= 2.00x the float32 speed")
    group = NetworkBenchmark(
        "x", (8, 8, 8), 2, 10.0, 100.0, 0.5, 0.6, mc_samples=20, mc_group_windows=1, mc_group_seconds=0.6,
        group_forward_seconds=0.4, shared_prefix=True,
    )  # fmt: skip
    assert group.mc_cost == pytest.approx(1.5)
    assert "T = 20 passes of 1 window(s) (shared deterministic prefix: yes)" in group.lines()[-1]
    assert group.lines()[-1].endswith("= 1.50 deterministic passes")
