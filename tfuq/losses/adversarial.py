"""Adversarial losses on discriminator logits: least squares (LSGAN) and BCE (pix2pix).

Pure functions give the discriminator and generator objectives from the raw
(pre-activation) discriminator outputs, e.g. PatchGAN maps ``(B, h, w, 1)``;
the Keras ``Loss`` classes compare logits with a label tensor (1 = real,
0 = fake, broadcast to the logits) so a training step can compose them.

Mathematical details:
    LSGAN (Mao et al. 2017, a = 0, b = c = 1; UP-GAN):
    ``L_D = 0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2]``,
    ``L_G = 0.5 E[(D(G(z)) - 1)^2]``.

    BCE with logits (pix2pix, Isola et al. 2017), with
    ``bce(l, t) = max(l, 0) - l t + log(1 + exp(-|l|))``:
    ``L_D = 0.5 (E[bce(D(x), 1)] + E[bce(D(G(z)), 0)])`` (pix2pix halves the
    discriminator objective), ``L_G = E[bce(D(G(z)), 1)]`` (non-saturating).

Reference:
    Mao et al., "Least squares generative adversarial networks", ICCV 2017,
    arXiv:1611.04076. Isola et al., "Image-to-image translation with
    conditional adversarial networks", CVPR 2017, arXiv:1611.07004.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

__all__ = [
    "BCEWithLogitsLoss",
    "LSGANLoss",
    "bce_discriminator_loss",
    "bce_generator_loss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
]


def _logits(x: Any) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    return x if x.dtype.is_floating else tf.cast(x, tf.float32)


def _bce(logits: tf.Tensor, label: float) -> tf.Tensor:
    return tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), tf.cast(label, logits.dtype)), logits=logits
    )


def lsgan_discriminator_loss(real_logits: Any, fake_logits: Any) -> tf.Tensor:
    """LSGAN discriminator loss ``0.5 mean((D(real) - 1)^2) + 0.5 mean(D(fake)^2)``.

    Args:
        real_logits: Discriminator output on real pairs, any shape.
        fake_logits: Discriminator output on generated pairs, any shape.

    Returns:
        tf.Tensor: scalar.

    Example:
        >>> float(lsgan_discriminator_loss(tf.ones((2, 4)), tf.zeros((2, 4))))
        0.0
    """
    real, fake = _logits(real_logits), _logits(fake_logits)
    return 0.5 * tf.reduce_mean(tf.square(real - 1.0)) + 0.5 * tf.reduce_mean(tf.square(fake))


def lsgan_generator_loss(fake_logits: Any) -> tf.Tensor:
    """LSGAN generator loss ``0.5 mean((D(fake) - 1)^2)``.

    Args:
        fake_logits: Discriminator output on generated pairs, any shape.

    Returns:
        tf.Tensor: scalar.
    """
    return 0.5 * tf.reduce_mean(tf.square(_logits(fake_logits) - 1.0))


def bce_discriminator_loss(real_logits: Any, fake_logits: Any) -> tf.Tensor:
    """pix2pix discriminator loss ``0.5 (mean bce(D(real), 1) + mean bce(D(fake), 0))``.

    Args:
        real_logits: Discriminator logits on real pairs, any shape.
        fake_logits: Discriminator logits on generated pairs, any shape.

    Returns:
        tf.Tensor: scalar.
    """
    real, fake = _logits(real_logits), _logits(fake_logits)
    return 0.5 * (tf.reduce_mean(_bce(real, 1.0)) + tf.reduce_mean(_bce(fake, 0.0)))


def bce_generator_loss(fake_logits: Any) -> tf.Tensor:
    """Non-saturating generator loss ``mean bce(D(fake), 1)``.

    Args:
        fake_logits: Discriminator logits on generated pairs, any shape.

    Returns:
        tf.Tensor: scalar.
    """
    return tf.reduce_mean(_bce(_logits(fake_logits), 1.0))


def _per_sample_mean(values: tf.Tensor) -> tf.Tensor:
    if values.shape.rank is not None and values.shape.rank <= 1:
        return values
    return tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))


@keras.saving.register_keras_serializable(package="tfuq")
class LSGANLoss(keras.losses.Loss):
    """Keras loss ``0.5 mean((logits - label)^2)`` per sample.

    ``y_true`` is the label (1 real, 0 fake), broadcast to ``y_pred``'s
    shape. Discriminator: ``loss(1, D(real)) + loss(0, D(fake))``;
    generator: ``loss(1, D(fake))`` — the LSGAN objectives above.

    Args:
        reduction: Keras reduction over the batch, default ``"sum_over_batch_size"``.
        name: Loss name, default ``"lsgan"``.
        dtype: Computation dtype, default Keras ``floatx``.
    """

    def __init__(
        self,
        reduction: str | None = "sum_over_batch_size",
        name: str = "lsgan",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        """Per-sample loss ``(B,)``."""
        label = tf.broadcast_to(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
        return 0.5 * _per_sample_mean(tf.square(y_pred - label))

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {**super().get_config(), "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="tfuq")
class BCEWithLogitsLoss(keras.losses.Loss):
    """Keras loss: mean sigmoid cross-entropy of logits against a label, per sample.

    ``y_true`` is the label (1 real, 0 fake), broadcast to ``y_pred``'s shape.
    pix2pix discriminator: ``0.5 * (loss(1, D(real)) + loss(0, D(fake)))``;
    generator: ``loss(1, D(fake))``.

    Args:
        reduction: Keras reduction over the batch, default ``"sum_over_batch_size"``.
        name: Loss name, default ``"bce_with_logits"``.
        dtype: Computation dtype, default Keras ``floatx``.
    """

    def __init__(
        self,
        reduction: str | None = "sum_over_batch_size",
        name: str = "bce_with_logits",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        """Per-sample loss ``(B,)``."""
        label = tf.broadcast_to(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
        return _per_sample_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=label, logits=y_pred))

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {**super().get_config(), "dtype": self.dtype}
