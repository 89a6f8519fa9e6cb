"""The runnable examples in ``examples/`` print what their docstrings promise.

``size_sweep_by_tissue.py`` is run on the size-sweep models a test keeps
(tests/evaluation/test_validate_uq.py); the two examples that train or export
a model are slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from utils import load_example


def _floats(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+\.\d+", line)]


def test_calibration_recovery_finds_the_known_over_confidence(capsys: pytest.CaptureFixture[str]) -> None:
    load_example("calibration_recovery").main()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert _floats(lines[0])[0] < 0.005  # the honest model is calibrated
    assert _floats(lines[1])[0] > 0.1  # std x 0.5: the PIT is Phi(2 z), far from uniform
    assert _floats(lines[2])[0] < 0.005 and _floats(lines[3])[0] == pytest.approx(0.95, abs=0.005)
    scale, rms = _floats(lines[4])
    assert scale == pytest.approx(2.0, abs=0.01) and rms < 0.005  # oracle: the claimed std was halved
    before, after = _floats(lines[5])[-2:]
    assert before > 0.1 and after < 0.005


@pytest.mark.slow
def test_import_keras_model_fine_tunes_and_reloads(capsys: pytest.CaptureFixture[str]) -> None:
    load_example("import_keras_model").main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("imported: ") and lines[0].endswith("output channels 2")  # mean, scale
    first, last = _floats(lines[1])
    assert last < first  # the NLL fell while fine-tuning
    mae, (aleatoric, noise), epistemic = _floats(lines[2])[0], _floats(lines[3]), _floats(lines[4])[0]
    # The phantom knows the noise: after a short fit the residual error exceeds it, and the
    # aleatoric std, which absorbs everything the inputs cannot explain, does too.
    assert mae > noise and aleatoric > noise > 0 and epistemic > 0
    assert lines[5].endswith("identical deterministic output: True")


@pytest.mark.slow
def test_export_and_query_serves_from_tensorflow_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from uq_job_setup import tiny_config

    config = tiny_config(tmp_path, model_dir=tmp_path / "untrained")
    load_example("export_and_query").main(config.path)
    out = capfd.readouterr().out
    assert "exporting untrained weights" in out
    assert "serving_default: inputs" in out and "predict_mc: inputs" in out  # both signatures
    for key in ("mean", "epistemic_std", "aleatoric_std", "total_std"):
        assert f"serving_default {key}: shape (2, " in out
    epistemic = float(re.search(r"predict_mc with T = 50: mean epistemic std ([\d.e+-]+)", out).group(1))
    assert epistemic > 0  # MC dropout in the graph, T chosen per request
    assert not list(tmp_path.rglob("saved_model.pb"))  # exported to a scratch folder, removed at the end
