"""tfuq train --overwrite: the earlier model goes into replaced-<timestamp>/, inputs stay, nothing is lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tfuq.config import load_config
from tfuq.model_store.replace import move_aside

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo_mr2ct.ini"


def contents(folder: Path) -> dict[str, list[str]]:
    """Hash -> relative paths of every file under ``folder``."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found.setdefault(digest, []).append(str(path.relative_to(folder)))
    return found


def test_the_model_moves_aside_inputs_and_running_logs_stay(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ini = run / "my.ini"  # the model_dir is the INI's own folder, with the data in it
    run.mkdir()
    ini.write_text(DEMO.read_text().replace("model_dir = ../demo_out/mr2ct", "model_dir = ."))
    data = run / "data"
    files = {
        "model.keras": "network",
        "training_config.ini": "[SYSTEM]\n[INFERENCE]\nsave_seg_dir = " + str(run / "old_maps") + "\n",
        "normalisation.json": "{}",
        "checkpoints/ckpt-1.index": "i",
        "checkpoints/best/best.json": "{}",
        "calibration/recalibration.json": "{}",
        "logs/training.csv": "step,loss\n",
        "logs/train-1.log": "the earlier run's log",
        "logs/train-2.log": "this run's log",
        "inference/s1_mean.nii.gz": "map",
        "old_maps/s1_mean.nii.gz": "an older map",
        "dataset_split.csv": "subject,phase\n",
        "phantom/wholebody/s1_mr.nii.gz": "phantom input",
        "data/s1_mr.nii.gz": "user's input",
        "notes.txt": "a user's notes",
    }
    for name, text in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    config = load_config(ini, [f"MR.path_to_search={data}"])
    before = contents(run)

    folder = move_aside(
        config, stored=(run / "training_config.ini").read_text(), keep=[run / "logs/train-2.log"]
    )

    assert folder is not None and folder.parent == run and folder.name.startswith("replaced-")
    moved = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert moved == {
        "model.keras",
        "training_config.ini",
        "normalisation.json",
        "checkpoints/ckpt-1.index",
        "checkpoints/best/best.json",
        "calibration/recalibration.json",
        "logs/training.csv",
        "logs/train-1.log",
        "inference/s1_mean.nii.gz",
        "old_maps/s1_mean.nii.gz",
        "dataset_split.csv",  # a copy: the split stays in force
    }
    stayed = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and folder not in p.parents}
    assert stayed == {
        "my.ini",
        "logs/train-2.log",
        "dataset_split.csv",
        "phantom/wholebody/s1_mr.nii.gz",
        "data/s1_mr.nii.gz",
        "notes.txt",
    }
    after = contents(run)  # nothing lost: every file's content is still somewhere under the model_dir
    assert set(after) == set(before)
    for digest, names in before.items():
        for name in names:
            assert name in after[digest] or f"{folder.name}/{name}" in after[digest]

    running = [run / "logs/train-2.log"]
    assert move_aside(config, keep=running) is None  # nothing left to move
    (run / "model.keras").write_text("a second model")
    second = move_aside(config, keep=running)
    assert (
        second is not None and second != folder and (second / "model.keras").read_text() == "a second model"
    )


@pytest.mark.parametrize("inside", ["checkpoints", "logs"])
def test_a_folder_holding_an_input_stays(
    inside: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    (run / inside / "data").mkdir(parents=True)
    (run / inside / "data" / "s1_mr.nii.gz").write_text("input")
    (run / "model.keras").write_text("network")
    config = load_config(DEMO, [f"SYSTEM.model_dir={run}", f"MR.path_to_search={run / inside / 'data'}"])
    folder = move_aside(config)
    assert folder is not None and (folder / "model.keras").is_file()
    assert (run / inside / "data" / "s1_mr.nii.gz").is_file()
    if inside == "checkpoints":
        assert "holds" in caplog.text and "an input of the configuration" in caplog.text
