"""Adversarial losses against NumPy transcriptions of the LSGAN and pix2pix objectives."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tfuq.losses import (
    BCEWithLogitsLoss,
    LSGANLoss,
    bce_discriminator_loss,
    bce_generator_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(3, 4, 4, 1))
FAKE = RNG.normal(size=(3, 4, 4, 1))


def _np_bce(logits: np.ndarray, label: float) -> np.ndarray:
    """-[t log s(l) + (1 - t) log(1 - s(l))], with s the logistic function."""
    s = 1.0 / (1.0 + np.exp(-logits))
    return -(label * np.log(s) + (1 - label) * np.log(1 - s))


def test_lsgan_functions_match_formula():
    d = 0.5 * np.mean((REAL - 1) ** 2) + 0.5 * np.mean(FAKE**2)
    assert float(lsgan_discriminator_loss(REAL, FAKE)) == pytest.approx(d, rel=1e-12)
    g = 0.5 * np.mean((FAKE - 1) ** 2)
    assert float(lsgan_generator_loss(FAKE)) == pytest.approx(g, rel=1e-12)
    # A perfect discriminator has zero loss; the fooled generator too.
    assert float(lsgan_discriminator_loss(np.ones(4), np.zeros(4))) == 0.0
    assert float(lsgan_generator_loss(np.ones(4))) == 0.0


def test_bce_functions_match_formula():
    d = 0.5 * (np.mean(_np_bce(REAL, 1.0)) + np.mean(_np_bce(FAKE, 0.0)))
    assert float(bce_discriminator_loss(REAL, FAKE)) == pytest.approx(d, rel=1e-10)
    assert float(bce_generator_loss(FAKE)) == pytest.approx(np.mean(_np_bce(FAKE, 1.0)), rel=1e-10)
    # Logits 0 are a coin flip: log 2 each.
    assert float(bce_generator_loss(np.zeros(5))) == pytest.approx(np.log(2.0), rel=1e-6)


def test_bce_is_stable_for_large_logits():
    value = float(bce_discriminator_loss(np.array([100.0]), np.array([-100.0])))
    assert value == pytest.approx(0.0, abs=1e-12)
    assert float(bce_generator_loss(np.array([-100.0]))) == pytest.approx(100.0, rel=1e-6)


def test_loss_classes_compose_into_the_objectives():
    ls = LSGANLoss()
    d = ls(np.ones_like(REAL), REAL) + ls(np.zeros_like(FAKE), FAKE)
    assert float(d) == pytest.approx(float(lsgan_discriminator_loss(REAL, FAKE)), rel=1e-6)
    assert float(ls(1.0, FAKE)) == pytest.approx(float(lsgan_generator_loss(FAKE)), rel=1e-6)
    bce = BCEWithLogitsLoss()
    d = 0.5 * (bce(1.0, REAL) + bce(0.0, FAKE))
    assert float(d) == pytest.approx(float(bce_discriminator_loss(REAL, FAKE)), rel=1e-6)
    assert float(bce(1.0, FAKE)) == pytest.approx(float(bce_generator_loss(FAKE)), rel=1e-6)
    per_sample = LSGANLoss(reduction=None)(1.0, FAKE).numpy()
    np.testing.assert_allclose(per_sample, 0.5 * ((FAKE - 1) ** 2).mean(axis=(1, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("cls", [LSGANLoss, BCEWithLogitsLoss])
def test_config_round_trip(cls):
    loss = cls(name="adv", reduction="sum")
    clone = keras.losses.deserialize(json.loads(json.dumps(keras.losses.serialize(loss))))
    assert type(clone) is cls and clone.get_config() == loss.get_config()
