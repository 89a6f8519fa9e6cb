"""Loss terms of a conditional GAN's generator and discriminator, and their weighted sum.

One set of pure functions serves pix2pix, the Bayesian conditional GAN and
every phase of UP-GAN: the trainers only decide which images the
discriminator sees and which networks are updated.

Mathematical details:
    Generator, for head parameters ``params`` (loc = the generated image mu),
    target y, optional mask m and discriminator scores ``D(fake)``:

    ``L_G = lambda_adv L_adv(D(fake)) + lambda_l1 L1(mu, y; m)
    + lambda_nll NLL(params, y; m) + lambda_kl KL``

    with ``L_adv`` the LSGAN (``0.5 mean((D(fake) - 1)^2)``) or
    non-saturating BCE generator loss (:mod:`tfuq.losses.adversarial`), L1 and
    NLL masked, border-cropped means (:func:`tfuq.losses.l1`,
    :func:`tfuq.losses.nll`; no NLL for the ``"point"`` family) and KL the sum
    of the generator's concrete-dropout regularisers (``model.losses``, Zhao
    eq. 4, already weighted by ``weight_regularizer`` and
    ``dropout_regularizer``). pix2pix: lambda_adv = 1, lambda_l1 = 100;
    Zhao: L1 and KL weights 100; UP-GAN eq. 2: ``lambda1 NLL + lambda2 L_adv``
    with (lambda1, lambda2) = (1, 0.001) and no L1.

    Discriminator: ``0.5 mean((D(real) - 1)^2) + 0.5 mean(D(fake)^2)``
    (LSGAN) or ``0.5 (bce(D(real), 1) + bce(D(fake), 0))`` (pix2pix).

Reference:
    Isola et al., CVPR 2017, arXiv:1611.07004. Zhao et al., "Bayesian
    conditional GAN for MRI brain image synthesis", arXiv:2005.11875.
    Upadhyay et al., MICCAI 2021, arXiv:2106.15542 (eq. 1-2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from tfuq.distributions import check_family
from tfuq.losses import (
    bce_discriminator_loss,
    bce_generator_loss,
    l1,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    nll,
)

__all__ = [
    "ADVERSARIAL_LOSSES",
    "D_LOSS",
    "G_ADV",
    "G_KL",
    "G_L1",
    "G_NLL",
    "G_TOTAL",
    "LOSS",
    "LossWeights",
    "check_adversarial",
    "discriminator_loss",
    "generator_loss",
    "generator_terms",
]

#: Log keys of the loss terms (``training.csv`` columns, Keras logs); ``loss`` = ``g_total``.
LOSS = "loss"
G_TOTAL, G_ADV, G_L1, G_NLL, G_KL, D_LOSS = "g_total", "g_adv", "g_l1", "g_nll", "g_kl", "d_loss"

#: ``[GAN] adversarial_loss`` -> (generator loss, discriminator loss) on raw scores.
ADVERSARIAL_LOSSES: dict[str, tuple[Callable[[Any], tf.Tensor], Callable[[Any, Any], tf.Tensor]]] = {
    "lsgan": (lsgan_generator_loss, lsgan_discriminator_loss),
    "bce": (bce_generator_loss, bce_discriminator_loss),
}


def check_adversarial(kind: str) -> str:
    """Return ``kind`` if it names an adversarial loss, else raise ``ValueError``."""
    if kind not in ADVERSARIAL_LOSSES:
        raise ValueError(
            f"Expected adversarial_loss in {tuple(ADVERSARIAL_LOSSES)}. Received: adversarial_loss={kind!r}"
        )
    return kind


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the generator loss terms (``[GAN] lambda_*``).

    Args:
        adv: Adversarial term (pix2pix 1, UP-GAN lambda2 = 0.001).
        l1: L1 of the generated mean (pix2pix/Zhao 100, UP-GAN 0).
        nll: Likelihood of the head (UP-GAN lambda1 = 1); ignored for ``"point"``.
        kl: Concrete-dropout regulariser (Zhao 100).

    Raises:
        ValueError: a weight that is negative or not finite.
    """

    adv: float = 1.0
    l1: float = 100.0
    nll: float = 1.0
    kl: float = 100.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"Expected a finite number {field.name}. Received: {field.name}={value!r}")
            if value < 0:
                raise ValueError(f"Expected loss weight {field.name} >= 0. Received: {field.name}={value!r}")
            object.__setattr__(self, field.name, float(value))

    @classmethod
    def from_config(cls, gan: Any) -> LossWeights:
        """The weights of a ``[GAN]`` section (:class:`~tfuq.config.GanSection`)."""
        return cls(adv=gan.lambda_adv, l1=gan.lambda_l1, nll=gan.lambda_nll, kl=gan.lambda_kl)

    def to_dict(self) -> dict[str, float]:
        """``{"adv": ..., "l1": ..., "nll": ..., "kl": ...}``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_value(cls, value: LossWeights | Mapping[str, float] | None) -> LossWeights:
        """Accept an instance, a dict of :meth:`to_dict` keys, or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, LossWeights):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(
                    f"Expected loss weights adv, l1, nll, kl. Received unknown keys: {sorted(unknown)}"
                )
            return cls(**value)
        raise ValueError(f"Expected LossWeights, a dict or None. Received: loss_weights={value!r}")


def generator_terms(
    family: str,
    params: Any,
    target: Any,
    fake_scores: Any,
    *,
    mask: Any = None,
    adversarial: str = "lsgan",
    border: int = 0,
    regularization: Sequence[Any] = (),
) -> dict[str, tf.Tensor]:
    """The unweighted generator loss terms of one generator output.

    Args:
        family: Head family of ``params`` (``"point"``: no NLL term).
        params: Head output ``(B, *spatial, params_size(family))``; channel 0
            is the generated image.
        target: Real image ``(B, *spatial)`` or ``(B, *spatial, 1)``.
        fake_scores: Discriminator output on the generated image, any shape.
        mask: Optional voxel weights of the target's shape.
        adversarial: ``"lsgan"`` or ``"bce"``.
        border: Voxels cropped from each spatial side for L1 and NLL.
        regularization: Scalar regularisers of the generator (its ``losses``).

    Returns:
        dict: float32 scalars ``g_adv``, ``g_l1``, ``g_kl`` and (not for
        ``"point"``) ``g_nll``.

    Raises:
        ValueError: an unknown family or adversarial loss, or shapes that do not match.

    Example:
        >>> terms = generator_terms("normal", params, y, d_fake, mask=m)  # doctest: +SKIP
    """
    check_family(family)
    generator_adv, _ = ADVERSARIAL_LOSSES[check_adversarial(adversarial)]
    params = tf.cast(params, tf.float32)
    terms = {
        G_ADV: generator_adv(tf.cast(fake_scores, tf.float32)),
        G_L1: l1(params, target, mask, border),
    }
    if family != "point":
        terms[G_NLL] = nll(family, params, target, mask, border)
    regs = [tf.cast(r, tf.float32) for r in regularization]
    terms[G_KL] = tf.add_n(regs) if regs else tf.constant(0.0, tf.float32)
    return terms


def generator_loss(terms: Mapping[str, Any], weights: LossWeights) -> tf.Tensor:
    """``lambda_adv g_adv + lambda_l1 g_l1 + lambda_nll g_nll + lambda_kl g_kl`` (absent terms count 0).

    Args:
        terms: Output of :func:`generator_terms` (or sums of them over phases).
        weights: The loss weights.

    Returns:
        tf.Tensor: float32 scalar.
    """
    pairs = ((G_ADV, weights.adv), (G_L1, weights.l1), (G_NLL, weights.nll), (G_KL, weights.kl))
    total = tf.constant(0.0, tf.float32)
    for key, weight in pairs:
        if key in terms:
            total += weight * tf.cast(terms[key], tf.float32)
    return total


def discriminator_loss(adversarial: str, real_scores: Any, fake_scores: Any) -> tf.Tensor:
    """The discriminator objective on real and generated scores (LSGAN or BCE).

    Args:
        adversarial: ``"lsgan"`` or ``"bce"``.
        real_scores: Discriminator output on real images, any shape.
        fake_scores: Discriminator output on generated images, any shape.

    Returns:
        tf.Tensor: float32 scalar.

    Raises:
        ValueError: an unknown adversarial loss.
    """
    _, loss = ADVERSARIAL_LOSSES[check_adversarial(adversarial)]
    return loss(tf.cast(real_scores, tf.float32), tf.cast(fake_scores, tf.float32))
