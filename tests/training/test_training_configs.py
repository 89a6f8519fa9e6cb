"""The CT -> MR application and the training demos: they load, build, and every paper setting is sourced."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from tfuq.cli import main
from tfuq.config import load_config

REPO = Path(__file__).resolve().parents[2]
CT2MR = REPO / "applications" / "ct2mr_unet.ini"


def test_ct2mr_application_has_reinholds_settings_each_with_its_source() -> None:
    config = load_config(CT2MR)
    t, net, u = config.training, config.network, config.uncertainty
    assert (t.optimiser, t.lr, t.weight_decay, t.beta_1, t.beta_2) == ("adamw", 0.003, 1e-6, 0.9, 0.99)
    assert (net.name, net.spatial_mode, net.depth, net.batch_size) == ("unet", "2.5d", 3, 36)
    assert config.sources["CT"].spatial_window_size == (128, 128, 8)
    assert (u.family, u.dropout, u.dropout_rate, u.mc_samples) == ("normal", "mc", 0.2, 50)
    assert (config.input_sections, config.target_section) == (("CT",), "T1")
    lines = CT2MR.read_text().splitlines()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(CT2MR)
    keys = sum(len(parser[s]) for s in parser.sections())
    sourced = [
        i
        for i, line in enumerate(lines)
        if line and line[0].isalpha() and "=" in line and lines[i - 1].startswith("#")
    ]
    assert len(sourced) == keys
    for i in sourced:
        assert "Sec." in lines[i - 1] or "not stated" in lines[i - 1] or "Sec." in lines[i - 2], lines[i]


def test_info_summarises_the_ct2mr_application(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["info", str(CT2MR)])
    out = capsys.readouterr().out
    assert stop.value.code in (0, None)
    assert "application: REGRESSION: CT -> T1" in out and "[TRAINING] optimiser = adamw" in out
    assert "network: unet (2.5d, input 128x128x8 x 1 channel(s))" in out
    assert int(out.strip().splitlines()[-1].split()[-1]) > 1_000_000


@pytest.mark.parametrize("name", ["demo_mr2ct", "demo_ct2mr"])
def test_training_demos_build_their_trainers(name: str) -> None:
    pytest.importorskip("tensorflow")
    from tfuq.data.training_windows import window_geometry
    from tfuq.training.build import build_trainer

    config = load_config(REPO / "configs" / f"{name}.ini")
    assert config.training.max_iter <= 3000 and config.uncertainty.family == "normal"
    window_geometry(config)  # the pipeline accepts the windows
    trainer = build_trainer(config)
    assert trainer.count_params() < 1_000_000  # CPU sized
    assert trainer.optimizer.built
