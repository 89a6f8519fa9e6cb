"""Losses: per-voxel likelihoods, L1/L2 baselines and adversarial objectives."""

from tfuq.losses.adversarial import (
    BCEWithLogitsLoss,
    LSGANLoss,
    bce_discriminator_loss,
    bce_generator_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from tfuq.losses.nll import NLLLoss, nll, nll_map
from tfuq.losses.pointwise import L1Loss, L2Loss, l1, l2, residual_map
from tfuq.losses.reduction import crop_border, masked_mean, split_target

__all__ = [
    "BCEWithLogitsLoss",
    "L1Loss",
    "L2Loss",
    "LSGANLoss",
    "NLLLoss",
    "bce_discriminator_loss",
    "bce_generator_loss",
    "crop_border",
    "l1",
    "l2",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "masked_mean",
    "nll",
    "nll_map",
    "residual_map",
    "split_target",
]
