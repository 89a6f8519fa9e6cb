"""The GAN application and demo INIs: they load, carry the papers' settings, and build trainers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tfuq.config import load_config
from tfuq.networks.factory import input_geometry
from tfuq.training.gan import GANTrainer, build_gan_trainer
from tfuq.training.gan_schedule import ProgressiveSchedule
from tfuq.training.gan_upgan import UPGANTrainer

REPO = Path(__file__).resolve().parents[2]
ZHAO = REPO / "applications" / "t1t2_bayesian_cgan.ini"
UPGAN = REPO / "applications" / "pet2ct_upgan.ini"
DEMOS = [REPO / "configs" / "demo_t1t2.ini", REPO / "configs" / "demo_upgan.ini"]


@pytest.mark.parametrize("path", [ZHAO, UPGAN])
def test_every_application_setting_names_its_source(path: Path) -> None:
    comment: list[str] = []  # the comment block right above a key
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            comment.append(line.lower())
        elif re.match(r"^\w+\s*=", line):
            assert comment, f"{path.name}: no comment above {line!r}"
            source = r"sec\.|eq\.|not stated|data|experiments|cgan|concrete|recalibration|results"
            assert re.search(source, " ".join(comment)), f"{path.name}: {line!r} does not name its source"
            comment = []
        else:
            comment = []


def test_zhao_application_has_the_papers_settings() -> None:
    config = load_config(ZHAO)
    assert config.network.name == "pix2pix" and config.network.depth == 8 and config.network.batch_size == 16
    assert input_geometry(config).spatial == (256, 256)
    assert (config.training.optimiser, config.training.lr, config.training.beta_1) == ("adam", 2e-4, 0.5)
    u = config.uncertainty
    assert (u.dropout, u.concrete_temperature, u.weight_regularizer, u.dropout_regularizer) == (
        "concrete",
        0.1,
        1e-6,
        1e-5,
    )
    assert (config.app.lambda_l1, config.app.lambda_kl, config.app.discriminator_lr) == (100.0, 100.0, 2e-4)
    assert config.calibration.dataset == "Training"


def test_upgan_application_has_the_papers_settings() -> None:
    config = load_config(UPGAN)
    assert (
        config.network.name == "upgan" and config.network.num_phases == 3 and config.network.batch_size == 8
    )
    assert config.family == "generalized_normal" and config.app.adversarial_loss == "lsgan"
    assert (config.app.lambda_nll, config.app.lambda_adv, config.app.lambda_l1) == (1.0, 0.001, 0.0)
    assert config.training.lr * config.app.finetune_lr_factor == pytest.approx(0.0005)
    schedule = ProgressiveSchedule.from_config(config)
    assert schedule.num_phases == 3 and schedule.finetune_iterations(config.training.max_iter) > 0


@pytest.mark.parametrize(("path", "kind"), zip(DEMOS, [GANTrainer, UPGANTrainer]))
def test_demos_build_their_trainers(path: Path, kind: type, tmp_path: Path) -> None:
    config = load_config(path, [f"SYSTEM.model_dir={tmp_path}"])
    assert config.phantom.kind == "brain" and config.training.max_iter <= 400
    trainer = build_gan_trainer(config)
    assert isinstance(trainer, kind) and trainer.compiled
    assert trainer.generator.input_shape == (None, 64, 64, 1)
