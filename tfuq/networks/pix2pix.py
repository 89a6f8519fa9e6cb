"""pix2pix: U-Net-256 generator and 70x70 PatchGAN discriminator, 2D or 3D (Isola et al. 2017).

Generator (``depth`` = 8 for 256^2 inputs): encoder convolutions of kernel 4,
stride 2 with ``base_filters * min(2**i, 8)`` channels (C64-C128-C256-C512-
C512-C512-C512-C512), each but the first preceded by LeakyReLU(0.2) and each
but the first and the innermost followed by batch norm; decoder transposed
convolutions of kernel 4, stride 2, each preceded by ReLU and (except the
outermost) followed by batch norm and concatenated with the mirrored encoder
output. Convolutions followed by batch norm have no bias. Where pix2pix ends
in a transposed convolution to the output channels and tanh, this generator's
outermost transposed convolution outputs ``base_filters`` features, then ReLU
and a 1x1 :class:`~tfuq.layers.DistributionHead` give the parameters.

Bayesian cGAN (Zhao et al.): dropout "after the 2nd, 3rd and 4th transposed
convolutional layers" (counted from the innermost), i.e. on the input of the
transposed convolutions that read their (concatenated) outputs; concrete
spatial dropout wraps those convolutions, MC spatial dropout sits at the same
places (``dropout_after``).

PatchGAN (``n_layers`` = 3): C64 (no norm) - C128 - C256 with kernel 4 stride
2, then C512 and a 1-channel convolution with kernel 4 stride 1 (1-voxel zero
padding, "valid"), LeakyReLU(0.2) between; each output sees a 70x70 patch.
The output is linear (LSGAN scores or logits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from tfuq.checks import check_int
from tfuq.distributions import check_family
from tfuq.layers import DistributionHead
from tfuq.networks.blocks import (
    LAYERS,
    NORMALIZATIONS,
    apply_activation,
    apply_conv_block,
    check_divisible,
    check_image_shape,
)
from tfuq.networks.dropout import DropoutPlan, DropoutSpec

__all__ = ["PatchDiscriminator", "Pix2PixGenerator", "patch_receptive_field"]


@keras.saving.register_keras_serializable(package="tfuq")
class Pix2PixGenerator(keras.Model):
    """pix2pix U-Net generator ending in a DistributionHead (Bayesian cGAN with dropout).

    Args:
        image_shape: ``(H, W, C)`` or ``(D, H, W, C)``; every spatial size a
            multiple of ``2**depth``.
        family: Distribution family of the head.
        depth: Stride-2 levels (8 = U-Net-256). Default 8.
        base_filters: Channels of the first encoder layer (64).
        normalization: ``"batch"`` (pix2pix), ``"instance"`` or ``"none"``.
        dropout: Epistemic dropout (``DropoutSpec``, dict, kind or None).
        dropout_after: Transposed convolutions (1 = innermost) whose output is
            dropped, each < ``depth``. Default (2, 3, 4) (Zhao).
        init_scale: Initial predicted scale.
        name: Model name and layer-name prefix.
        **kwargs: Base ``keras.Model`` arguments.

    Input shape:
        ``(B, *image_shape)``.

    Output shape:
        ``(B, *spatial, params_size(family))``.

    Raises:
        ValueError: a bad argument or a spatial size not divisible by
            ``2**depth`` (the message names valid sizes).

    Example:
        >>> g = Pix2PixGenerator((256, 256, 1), family="normal", dropout="concrete")
        >>> g.output_shape
        (None, 256, 256, 2)

    Reference:
        Isola et al., "Image-to-image translation with conditional adversarial
        networks", CVPR 2017, arXiv:1611.07004. Zhao et al., "Bayesian
        conditional GAN for MRI brain image synthesis", arXiv:2005.11875.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        family: str = "normal",
        depth: int = 8,
        base_filters: int = 64,
        normalization: str = "batch",
        dropout: DropoutSpec | Mapping[str, Any] | str | None = None,
        dropout_after: Sequence[int] = (2, 3, 4),
        init_scale: float = 0.5,
        name: str = "pix2pix_generator",
        **kwargs: Any,
    ) -> None:
        shape = check_image_shape(image_shape, (2, 3), "Pix2PixGenerator")
        rank = len(shape) - 1
        check_family(family)
        check_int(depth, "depth", minimum=2)
        check_int(base_filters, "base_filters", minimum=1)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Expected normalization in {NORMALIZATIONS}. Received: {normalization!r}")
        dropout_after = tuple(int(k) for k in dropout_after)
        if any(not 1 <= k < depth for k in dropout_after):
            raise ValueError(
                f"Expected dropout_after positions in 1..{depth - 1} (transposed convolutions, innermost "
                f"first, followed by another one). Received: dropout_after={dropout_after}"
            )
        check_divisible(
            shape[:-1], (2**depth,) * rank, f"Pix2PixGenerator(depth={depth})", f"{depth} downsamplings"
        )
        spec = DropoutSpec.from_value(dropout)
        plan = DropoutPlan(spec, rank)
        widths = [base_filters * min(2**i, 8) for i in range(depth)]

        inputs = keras.Input(shape, name=f"{name}_image")
        h = inputs
        skips = []
        for i, filters in enumerate(widths):
            if i:
                h = apply_activation(h, "leaky_relu", rank, f"{name}_down_{i}_act")
            norm = normalization if 0 < i < depth - 1 else "none"
            h = apply_conv_block(
                h,
                filters,
                rank=rank,
                kernel_size=4,
                strides=2,
                normalization=norm,
                activation="none",
                use_bias=normalization == "none",
                name=f"{name}_down_{i}",
            )
            skips.append(h)
        for j in range(1, depth + 1):  # transposed convolution j, innermost first
            h = apply_activation(h, "relu", rank, f"{name}_up_{j}_act")
            outermost = j == depth
            h = apply_conv_block(
                h,
                base_filters if outermost else widths[depth - 1 - j],
                rank=rank,
                kernel_size=4,
                strides=2,
                normalization="none" if outermost else normalization,
                activation="none",
                dropout=plan if j - 1 in dropout_after else None,
                transpose=True,
                use_bias=outermost or normalization == "none",
                name=f"{name}_up_{j}",
            )
            if not outermost:
                h = keras.layers.Concatenate(name=f"{name}_skip_{j}")([h, skips[depth - 1 - j]])
        h = apply_activation(h, "relu", rank, f"{name}_head_act")
        outputs = DistributionHead(family, rank=rank, init_scale=init_scale, name=f"{name}_head")(h)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.image_shape = shape
        self.family = family
        self.depth = depth
        self.base_filters = base_filters
        self.normalization = normalization
        self.dropout = spec
        self.dropout_after = dropout_after
        self.init_scale = float(init_scale)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            "image_shape": list(self.image_shape),
            "family": self.family,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "normalization": self.normalization,
            "dropout": self.dropout.to_dict(),
            "dropout_after": list(self.dropout_after),
            "init_scale": self.init_scale,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Pix2PixGenerator:
        """Rebuild from :meth:`get_config`."""
        return cls(**config)


def patch_receptive_field(n_layers: int) -> int:
    """Receptive field (voxels per axis) of one PatchGAN output: 70 for ``n_layers=3``.

    Walks the kernel-4 layers back from one output voxel: ``r <- s * r + (k - s)``.
    """
    field = 1
    for stride in [1, 1] + [2] * n_layers:
        field = stride * field + (4 - stride)
    return field


@keras.saving.register_keras_serializable(package="tfuq")
class PatchDiscriminator(keras.Model):
    """PatchGAN discriminator (70x70 for ``n_layers=3``), optionally conditional.

    Args:
        image_shape: Shape of the judged image ``(*spatial, C)``, 2D or 3D.
        condition_channels: Channels of the conditioning image (pix2pix: the
            input modality); 0 for an unconditional discriminator (UP-GAN).
        base_filters: Channels of the first layer (64).
        n_layers: Stride-2 layers (3 = 70x70 patches).
        normalization: Normalisation of the inner layers.
        name: Model name and layer-name prefix.
        **kwargs: Base ``keras.Model`` arguments.

    Input shape:
        ``[(B, *spatial, condition_channels), (B, *image_shape)]`` when
        conditional, else ``(B, *image_shape)``.

    Output shape:
        ``(B, *(s // 2**n_layers - 2 for s in spatial), 1)``: one linear score
        per patch (30x30 for 256x256 inputs).

    Raises:
        ValueError: a bad argument or spatial sizes that are not multiples of
            ``2**n_layers`` of at least ``3 * 2**n_layers``.

    Example:
        >>> d = PatchDiscriminator((256, 256, 1), condition_channels=1)
        >>> d.output_shape
        (None, 30, 30, 1)
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        condition_channels: int = 0,
        base_filters: int = 64,
        n_layers: int = 3,
        normalization: str = "batch",
        name: str = "patch_discriminator",
        **kwargs: Any,
    ) -> None:
        shape = check_image_shape(image_shape, (2, 3), "PatchDiscriminator")
        rank = len(shape) - 1
        check_int(condition_channels, "condition_channels", minimum=0)
        check_int(base_filters, "base_filters", minimum=1)
        check_int(n_layers, "n_layers", minimum=1)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Expected normalization in {NORMALIZATIONS}. Received: {normalization!r}")
        multiple = 2**n_layers
        model = f"PatchDiscriminator(n_layers={n_layers})"
        check_divisible(shape[:-1], (multiple,) * rank, model, f"{n_layers} downsamplings")
        if min(shape[:-1]) < 3 * multiple:
            raise ValueError(
                f"{model} needs spatial sizes >= {3 * multiple} for at least one output patch. "
                f"Received: image_shape={shape}"
            )
        image = keras.Input(shape, name=f"{name}_image")
        if condition_channels:
            condition = keras.Input((*shape[:-1], condition_channels), name=f"{name}_condition")
            inputs: Any = [condition, image]
            h = keras.layers.Concatenate(name=f"{name}_pair")([condition, image])
        else:
            inputs = h = image
        for i in range(n_layers + 1):
            strided = i < n_layers
            if not strided:
                h = LAYERS[rank]["zero_pad"](1, name=f"{name}_layer_{i}_pad")(h)
            h = apply_conv_block(
                h,
                base_filters * min(2**i, 8),
                rank=rank,
                kernel_size=4,
                strides=2 if strided else 1,
                padding="same" if strided else "valid",
                normalization=normalization if i else "none",
                activation="leaky_relu",
                name=f"{name}_layer_{i}",
            )
        h = LAYERS[rank]["zero_pad"](1, name=f"{name}_score_pad")(h)
        outputs = LAYERS[rank]["conv"](1, 4, padding="valid", name=f"{name}_score")(h)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.image_shape = shape
        self.condition_channels = condition_channels
        self.base_filters = base_filters
        self.n_layers = n_layers
        self.normalization = normalization

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            "image_shape": list(self.image_shape),
            "condition_channels": self.condition_channels,
            "base_filters": self.base_filters,
            "n_layers": self.n_layers,
            "normalization": self.normalization,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PatchDiscriminator:
        """Rebuild from :meth:`get_config`."""
        return cls(**config)
