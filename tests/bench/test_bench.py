"""tfuq.bench: FLOP counting against hand counts, and the report's ratios."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import pytest

from tfuq.bench import NetworkBenchmark, best_time, conv_flops
from tfuq.layers import ConcreteSpatialDropout3D

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    assert (
        "T = 20 passes of 1 window(s) (shared deterministic prefix: yes; channel dropout folded: no)"
        in (group.lines()[-1])
    )
    assert group.lines()[-1].endswith("= 1.50 deterministic passes")


def test_bench_infer_runs_each_t_in_its_own_process_and_reports_ratios(tmp_path, capsys) -> None:
    """tfuq bench infer on the tiny phantom config: one line per T, ratios to the first."""
    import re
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from training_setup import TINY_INI

    from tfuq.cli import main

    ini = tmp_path / "tiny.ini"
    ini.write_text(TINY_INI.format(model_dir=tmp_path / "run", cache_dir=tmp_path / "phantom"))
    with pytest.raises(SystemExit) as stop:
        main(["bench", "infer", str(ini), "--shape", "24,16,32", "--samples", "1,3"])
    assert stop.value.code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "volume, T =" in line]
    assert len(lines) == 2 and lines[0].startswith("24x16x32 volume, T = 1:")
    assert "(1.00x T = 1)" in lines[0] and "(1.00x)" in lines[0]
    assert lines[1].startswith("24x16x32 volume, T = 3:")
    assert float(re.search(r"\(([0-9.]+)x T = 1\)", lines[1]).group(1)) > 0  # a ratio, not a timing test
    from tfuq.config import load_config
    from tfuq.inference.prediction import prediction_settings, windows_per_subject

    expected = windows_per_subject((24, 16, 32), prediction_settings(load_config(ini)), 1)
    assert all(f", {expected} windows, " in line and "of the matmul peak" in line for line in lines)
    with pytest.raises(SystemExit) as stop:
        main(["bench", "infer", str(ini), "--shape", "24,16"])
    assert stop.value.code == 2


def test_infer_lines_arithmetic() -> None:
    from tfuq.bench import infer_lines

    lines = infer_lines(
        [
            {"mc_samples": 1, "seconds": 2.0, "peak_rss_mb": 500.0},
            {"mc_samples": 20, "seconds": 3.0, "peak_rss_mb": 550.0},
        ],
        (96, 96, 96),
    )
    assert lines[1] == "96x96x96 volume, T = 20: 3.00 s (1.50x T = 1), peak RSS 550 MB (1.10x)"
    flops = {
        "mc_samples": 20,
        "seconds": 3.0,
        "peak_rss_mb": 550.0,
        "windows": 27,
        "gflop": 30.0,
        "peak_gflops": 20.0,
    }
    assert infer_lines([flops], (8, 8, 8))[0].endswith(
        ", 27 windows, 10.0 GFLOP/s = 0.500 of the matmul peak (20.0)"
    )


def test_interleaved_best_times_every_function_in_turn() -> None:
    from tfuq.bench.timing import interleaved_best

    order: list[str] = []
    best = interleaved_best({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b"] * 4  # one warm-up each, then three rounds in alternation
    assert set(best) == {"a", "b"} and all(0 <= v < 1 for v in best.values())
