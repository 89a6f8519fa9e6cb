"""UP-GAN: uncertainty-guided progressive cascade of U-Net generators (Upadhyay et al. 2021).

``num_phases`` (M = 3) U-Net generators run in sequence. Each predicts the
mean, scale alpha and shape beta of a generalized Gaussian per voxel (three
heads ending in ``DistributionHead("generalized_normal")``). Phase m > 0
reads the previous phase's prediction weighted by its own uncertainty,
concatenated with the original input (UP-GAN eq. 3-4):

    sigma = alpha * sqrt(Gamma(3 / beta) / Gamma(1 / beta))   (the GGD's std)
    f     = mu * sigma / sum_j sigma_j                          (sum over the voxels j of the image)
    a_m   = concat(f, x)

The sum runs over all spatial voxels of each image (and target channel), so
``f`` is the mean image re-weighted by the share of uncertainty each voxel
carries. Other families with a scale use their standard deviation as sigma.
The discriminators are one :class:`~tfuq.networks.pix2pix.PatchDiscriminator`
per phase (see :mod:`tfuq.networks.factory`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfuq.checks import check_int
from tfuq.distributions import FAMILIES, check_family, stddev
from tfuq.networks.blocks import check_image_shape
from tfuq.networks.dropout import DropoutSpec
from tfuq.networks.unet import UNet

__all__ = ["UPGAN", "UncertaintyAttention", "uncertainty_attention"]


def uncertainty_attention(family: str, params: Any, image: Any) -> tf.Tensor:
    """UP-GAN's input of the next phase: ``concat(mu * sigma / sum(sigma), image)``.

    Args:
        family: Family of ``params`` (must have a scale).
        params: ``(B, *spatial, params_size(family))`` unconstrained head channels.
        image: ``(B, *spatial, C)`` original network input.

    Returns:
        ``(B, *spatial, 1 + C)`` float32: the uncertainty-weighted mean, then ``image``.

    Raises:
        ValueError: a family without a scale (``"point"``).

    Example:
        >>> a1 = uncertainty_attention("generalized_normal", params0, x)
    """
    if "scale" not in FAMILIES[check_family(family)]:
        raise ValueError(
            f"UP-GAN weights by the predicted scale. Expected a family with a scale. Received: {family!r}"
        )
    params = tf.cast(params, tf.float32)
    loc = params[..., :1]
    sigma = stddev(family, params)[..., None]
    axes = list(range(1, len(params.shape) - 1))
    weighted = loc * sigma / tf.reduce_sum(sigma, axis=axes, keepdims=True)
    return tf.concat([weighted, tf.cast(image, tf.float32)], axis=-1)


@keras.saving.register_keras_serializable(package="tfuq")
class UncertaintyAttention(keras.layers.Layer):
    """Layer form of :func:`uncertainty_attention` (float32 by default).

    Args:
        family: Distribution family of the incoming parameters.
        **kwargs: Base layer arguments.

    Input shape:
        ``[params (B, *spatial, P), image (B, *spatial, C)]``.

    Output shape:
        ``(B, *spatial, 1 + C)``.

    Raises:
        ValueError: a family without a scale.
    """

    def __init__(self, family: str, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if "scale" not in FAMILIES[check_family(family)]:
            raise ValueError(f"Expected a family with a scale. Received: family={family!r}")
        self.family = family

    def call(self, inputs: Sequence[Any]) -> Any:
        """Return ``concat(mu * sigma / sum(sigma), image)``."""
        params, image = inputs
        return uncertainty_attention(self.family, params, image)

    def compute_output_shape(self, input_shape: Sequence[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        """``image`` shape with one more channel."""
        image = tuple(input_shape[1])
        return (*image[:-1], None if image[-1] is None else image[-1] + 1)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {**super().get_config(), "family": self.family}


@keras.saving.register_keras_serializable(package="tfuq")
class UPGAN(keras.Model):
    """UP-GAN generator cascade: M U-Nets, each phase guided by the previous one's uncertainty.

    Args:
        image_shape: Input ``(*spatial, C)`` (2D or 3D, as :class:`UNet`).
        family: Family of every phase's head; ``"generalized_normal"`` in the
            paper (any family with a scale works).
        num_phases: M >= 1. Default 3.
        mode: U-Net mode (``"2d"``, ``"2.5d"``, ``"3d"`` or None).
        depth: U-Net levels. Default 3.
        base_filters: U-Net level-0 channels. Default 32.
        convs_per_level: U-Net convolutions per level. Default 2.
        up_kernel_size: U-Net convolution after upsampling. Default 3.
        normalization: U-Net normalisation.
        activation: U-Net hidden activation.
        dropout: Epistemic dropout of every generator.
        output_all_phases: Output the list of all phases' parameters (for
            progressive training) instead of only the last phase's.
        init_scale: Initial predicted scale.
        name: Model name; phase m's generator is ``<name>_phase_<m>``.
        **kwargs: Base ``keras.Model`` arguments.

    Input shape:
        ``(B, *image_shape)``.

    Output shape:
        ``(B, *spatial, params_size(family))`` of the last phase, or a list of
        M such tensors with ``output_all_phases``.

    Raises:
        ValueError: a bad argument (see :class:`UNet` for sizes).

    Example:
        >>> g = UPGAN((64, 64, 1), num_phases=3, base_filters=8)
        >>> g.output_shape
        (None, 64, 64, 3)

    Reference:
        Upadhyay et al., "Uncertainty-guided progressive GANs for medical
        image translation", MICCAI 2021, arXiv:2106.15542.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        family: str = "generalized_normal",
        num_phases: int = 3,
        mode: str | None = None,
        depth: int = 3,
        base_filters: int = 32,
        convs_per_level: int = 2,
        up_kernel_size: int = 3,
        normalization: str = "batch",
        activation: str = "relu",
        dropout: DropoutSpec | Mapping[str, Any] | str | None = None,
        output_all_phases: bool = False,
        init_scale: float = 0.5,
        name: str = "upgan",
        **kwargs: Any,
    ) -> None:
        shape = check_image_shape(image_shape, (2, 3), "UPGAN")
        if "scale" not in FAMILIES[check_family(family)]:
            raise ValueError(
                f"UP-GAN guides each phase by the predicted scale. Expected a family with a scale "
                f"(generalized_normal in the paper). Received: family={family!r}"
            )
        check_int(num_phases, "num_phases", minimum=1)
        spec = DropoutSpec.from_value(dropout)
        unet_kwargs = {
            "family": family,
            "mode": mode,
            "depth": depth,
            "base_filters": base_filters,
            "convs_per_level": convs_per_level,
            "up_kernel_size": up_kernel_size,
            "normalization": normalization,
            "activation": activation,
            "init_scale": init_scale,
        }
        inputs = keras.Input(shape, name=f"{name}_image")
        generators, phases = [], []
        h = inputs
        for m in range(num_phases):
            if m:
                h = UncertaintyAttention(family, name=f"{name}_attention_{m}")([phases[-1], inputs])
            seed = None if spec.seed is None else spec.seed + 100 * m
            generator = UNet(
                (*shape[:-1], shape[-1] + (1 if m else 0)),
                dropout={**spec.to_dict(), "seed": seed},
                name=f"{name}_phase_{m}",
                **unet_kwargs,
            )
            generators.append(generator)
            phases.append(generator(h))
        outputs = phases if output_all_phases else phases[-1]
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.image_shape = shape
        self.family = family
        self.num_phases = num_phases
        self.mode = generators[0].mode
        self.depth = depth
        self.base_filters = base_filters
        self.convs_per_level = convs_per_level
        self.up_kernel_size = up_kernel_size
        self.normalization = normalization
        self.activation = activation
        self.dropout = spec
        self.output_all_phases = bool(output_all_phases)
        self.init_scale = float(init_scale)
        self.generators = generators

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            "image_shape": list(self.image_shape),
            "family": self.family,
            "num_phases": self.num_phases,
            "mode": self.mode,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "convs_per_level": self.convs_per_level,
            "up_kernel_size": self.up_kernel_size,
            "normalization": self.normalization,
            "activation": self.activation,
            "dropout": self.dropout.to_dict(),
            "output_all_phases": self.output_all_phases,
            "init_scale": self.init_scale,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UPGAN:
        """Rebuild from :meth:`get_config`."""
        return cls(**config)
