"""tfuq bench train: the report's arithmetic, and one tiny run through the CLI (no timing asserted)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tfuq.bench.train import TrainBenchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training_setup import TINY_INI


def test_ratio_and_lines() -> None:
    report = TrainBenchmark(
        network="multires", window=(80, 80, 80), context=(320, 320, 320), batch=1, steps=5, repeats=3,
        pipeline_step_seconds=2.5, cached_step_seconds=2.0, peak_rss_mb=6144.4,
    )  # fmt: skip
    assert report.pipeline_rate == pytest.approx(0.8)
    assert report.pipeline_overhead == pytest.approx(0.5)
    assert report.lines() == [
        "multires training, window 80x80x80 (context 320x320x320), batch 1, windows cut by TF ops in tf.data",
        "step with the real pipeline: 2.500 s (best of 3 x 5 steps)",
        "step on one cached batch: 2.000 s",
        "pipeline rate / cached rate: 0.800",
        "peak RSS: 6144 MB",
    ]
    assert report.pipeline_cpu_share is None
    numpy = TrainBenchmark(
        "unet", (16, 16), (16, 16), 2, 1, 1, 1.0, 1.0, 100.0, graph_windows=False,
        pipeline_cpu_seconds=2.0, cached_cpu_seconds=1.5,
    )  # fmt: skip
    assert numpy.pipeline_rate == 1.0 and numpy.lines()[0].endswith("windows cut by a NumPy generator")
    assert numpy.pipeline_cpu_share == pytest.approx(0.25)
    assert numpy.lines()[-1] == (
        "process CPU per step: 2.000 s with the pipeline, 1.500 s cached (pipeline share 0.250)"
    )


def test_bench_train_on_the_tiny_phantom_through_the_cli(tmp_path, capsys) -> None:
    from tfuq.cli import main

    ini = tmp_path / "tiny.ini"
    ini.write_text(TINY_INI.format(model_dir=tmp_path / "run", cache_dir=tmp_path / "phantom"))
    with pytest.raises(SystemExit) as stop:
        main(["bench", "train", str(ini), "--steps", "2", "--repeats", "1"])
    assert stop.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "unet training, window 16x16x16 (context 16x16x16), batch 2, windows cut by TF ops in tf.data"
    )
    assert re.fullmatch(r"pipeline rate / cached rate: [0-9.]+", out[3])
    assert float(out[3].rsplit(" ", 1)[1]) > 0  # a ratio, not a timing test
    assert re.fullmatch(r"peak RSS: [0-9]+ MB", out[4])
    assert out[5].startswith("process CPU per step: ")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing written


def test_bench_train_refuses_settings_training_cannot_take(tmp_path, capsys) -> None:
    from tfuq.cli import main

    ini = tmp_path / "tiny.ini"
    ini.write_text(TINY_INI.format(model_dir=tmp_path / "run", cache_dir=tmp_path / "phantom"))
    with pytest.raises(SystemExit) as stop:
        main(["bench", "train", str(ini), "--set", "TRAINING.max_iter=0"])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
