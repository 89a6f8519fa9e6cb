"""Slow: a MultiRes network trains on 80^3 windows of a 320^3 context within a stated memory bound.

The windows are cut in the graph (``tfuq.data.graph_windows``): the 320^3 context of every window
is read inside tf.data and only the three 80^3 levels leave it. The network is the MultiRes
cascade thinned for CPU (``base_filters = 4``, one block per dilation stack, branches 8, 8, 4),
whose activations at 80^3 are small: the paper's widths need ~15 GB in bfloat16 and do not fit
24 GB in float32 at 80^3 (docs/training_scale.md), which a test cannot take. The phantom volumes
are 160 x 160 x 128 voxels, smaller than the context, so every window also takes the padded path.

Measured on the 2-core, 24 GB machine: peak RSS 2.7 GB of the training process (the phantom is
generated beforehand in another process), 1 min in all; the bound is 4 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training_setup import TINY_INI

ROOT = Path(__file__).resolve().parents[2]

#: Peak resident memory allowed for the training process, MB.
PEAK_RSS_BOUND_MB = 4096

OVERRIDES = [
    "PHANTOM.num_subjects=3",
    "PHANTOM.shape=160, 160, 128",
    "NETWORK.name=multires",
    "NETWORK.multires_factors=1, 2, 4",
    "NETWORK.base_filters=4",
    "NETWORK.blocks_per_stack=1",
    "NETWORK.branch_filters=8, 8, 4",
    "NETWORK.batch_size=1",
    "MR.spatial_window_size=80, 80, 80",
    "CT.spatial_window_size=80, 80, 80",
    "TRAINING.max_iter=3",
    "TRAINING.tensorboard_every_n=0",
]

#: Runs tfuq's CLI in a child process and prints its own peak RSS (MB) as the last line.
CHILD = """\
import json, resource, sys
from tfuq.cli import main
try:
    main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
else:
    code = 0
print(json.dumps({"code": code, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", CHILD, *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["code"] in (0, None), proc.stderr[-3000:]
    return result


@pytest.mark.slow
def test_multires_trains_on_a_320_context_within_the_memory_bound(tmp_path: Path) -> None:
    ini = tmp_path / "tiny.ini"
    ini.write_text(TINY_INI.format(model_dir=tmp_path / "run", cache_dir=tmp_path / "phantom"))
    sets = [arg for item in OVERRIDES for arg in ("--set", item)]
    _run(["info", str(ini), *sets])  # generates the phantom in its own process
    result = _run(["train", str(ini), *sets])
    assert (tmp_path / "run" / "logs" / "training.csv").read_text().splitlines()[-1].startswith("3,")
    print(f"peak RSS of the training process: {result['peak_rss_mb']:.0f} MB (bound {PEAK_RSS_BOUND_MB})")
    assert result["peak_rss_mb"] < PEAK_RSS_BOUND_MB, result
