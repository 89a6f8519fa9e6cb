"""GAN loss terms against NumPy oracles; weights and their validation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfuq.config import GanSection
from tfuq.distributions import constrain
from tfuq.training.gan_losses import (
    G_ADV,
    G_KL,
    G_L1,
    G_NLL,
    LossWeights,
    discriminator_loss,
    generator_loss,
    generator_terms,
)

RNG = np.random.default_rng(0)
PARAMS = RNG.normal(size=(2, 6, 6, 2)).astype("float32")
TARGET = RNG.normal(size=(2, 6, 6)).astype("float32")
MASK = (RNG.uniform(size=(2, 6, 6)) > 0.3).astype("float32")
SCORES = RNG.normal(size=(2, 2, 2, 1)).astype("float32")
REAL = RNG.normal(size=(2, 2, 2, 1)).astype("float32")


def masked(values: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(np.sum(values * mask, axis=(1, 2)) / np.sum(mask, axis=(1, 2))))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def test_terms_of_a_normal_head_match_numpy_and_scipy() -> None:
    regs = [tf.constant(0.25), tf.constant(-0.05)]
    terms = generator_terms(
        "normal", PARAMS, TARGET, SCORES, mask=MASK, adversarial="bce", regularization=regs
    )
    assert set(terms) == {G_ADV, G_L1, G_NLL, G_KL}
    scale = constrain("normal", PARAMS)["scale"].numpy()
    nll = -stats.norm.logpdf(TARGET, PARAMS[..., 0], scale)
    np.testing.assert_allclose(float(terms[G_NLL]), masked(nll, MASK), rtol=1e-5)
    np.testing.assert_allclose(float(terms[G_L1]), masked(np.abs(TARGET - PARAMS[..., 0]), MASK), rtol=1e-6)
    np.testing.assert_allclose(float(terms[G_ADV]), np.mean(softplus(-SCORES)), rtol=1e-6)  # -log sigmoid
    np.testing.assert_allclose(float(terms[G_KL]), 0.2, rtol=1e-6)


def test_point_family_has_no_nll_and_lsgan_generator_term() -> None:
    terms = generator_terms("point", PARAMS[..., :1], TARGET, SCORES, border=1)
    assert set(terms) == {G_ADV, G_L1, G_KL} and float(terms[G_KL]) == 0.0
    inner = np.abs(TARGET - PARAMS[..., 0])[:, 1:-1, 1:-1]
    np.testing.assert_allclose(float(terms[G_L1]), inner.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(terms[G_ADV]), 0.5 * np.mean((SCORES - 1) ** 2), rtol=1e-6)


def test_weighted_sum_skips_absent_terms() -> None:
    terms = {G_ADV: 2.0, G_L1: 3.0, G_KL: 5.0}
    total = generator_loss(terms, LossWeights(adv=0.5, l1=10.0, nll=7.0, kl=0.1))
    np.testing.assert_allclose(float(total), 0.5 * 2 + 10 * 3 + 0.1 * 5, rtol=1e-6)


def test_discriminator_losses_match_numpy() -> None:
    lsgan = 0.5 * np.mean((REAL - 1) ** 2) + 0.5 * np.mean(SCORES**2)
    np.testing.assert_allclose(float(discriminator_loss("lsgan", REAL, SCORES)), lsgan, rtol=1e-6)
    bce = 0.5 * (np.mean(softplus(-REAL)) + np.mean(softplus(SCORES)))
    np.testing.assert_allclose(float(discriminator_loss("bce", REAL, SCORES)), bce, rtol=1e-6)
    with pytest.raises(ValueError, match="adversarial_loss"):
        discriminator_loss("wgan", REAL, SCORES)


def test_loss_weights_from_config_and_validation() -> None:
    gan = GanSection(lambda_adv=0.001, lambda_l1=0.0, lambda_nll=1.0, lambda_kl=100.0)
    weights = LossWeights.from_config(gan)
    assert weights == LossWeights(adv=0.001, l1=0.0, nll=1.0, kl=100.0)
    assert LossWeights.from_value(weights.to_dict()) == weights
    assert LossWeights.from_value(None) == LossWeights()
    with pytest.raises(ValueError, match="l1 >= 0"):
        LossWeights(l1=-1.0)
    with pytest.raises(ValueError, match="finite"):
        LossWeights(kl=float("nan"))
    with pytest.raises(ValueError, match="unknown keys"):
        LossWeights.from_value({"lambda_l1": 1.0})
