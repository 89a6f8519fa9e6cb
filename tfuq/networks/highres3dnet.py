"""HighRes3DNet: dilated residual network at full resolution (Li et al. 2017).

Layer plan as in NiftyNet's ``highres3dnet.py``: a 3^3 convolution with 16
channels; three stacks of three residual blocks, each block 2 x [BN -> ReLU
-> 3^3 conv], at 16 channels dilation 1, 32 channels dilation 2 and 64
channels dilation 4; a 1^3 convolution with 80 channels (-> BN -> ReLU); a
1^3 output convolution. With one input and one output channel that is
807,424 convolution weights (~0.81M). Convolutions followed by batch norm
have no bias (NiftyNet's default); the output convolution has one.

Unlike MONAI's ``HighResNet``, the last layer is linear (no BN/ReLU), so the
network works as a regression backbone: with ``family`` it ends in a
:class:`~tfuq.layers.DistributionHead`, without it in a plain 1^3
convolution to ``out_channels`` features (MultiRes uses it that way).
Spatial sizes need no divisibility (Keras dilated convolutions pad "same").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from tfuq.checks import check_int
from tfuq.distributions import check_family
from tfuq.layers import DistributionHead
from tfuq.networks.blocks import (
    ACTIVATIONS,
    LAYERS,
    NORMALIZATIONS,
    apply_conv_block,
    apply_residual_block,
    check_image_shape,
)
from tfuq.networks.dropout import DropoutPlan, DropoutSpec

__all__ = ["HIGHRES3DNET_PLAN", "HighRes3DNet"]

#: Layer plan (NiftyNet's HighRes3DNet); ``filters`` are multiples of ``base_filters`` / 16.
HIGHRES3DNET_PLAN: tuple[dict[str, Any], ...] = (
    {"name": "conv_0", "kind": "conv", "filters": 16, "kernel_size": 3},
    {"name": "res_1", "kind": "residual", "filters": 16, "dilation": 1},
    {"name": "res_2", "kind": "residual", "filters": 32, "dilation": 2},
    {"name": "res_3", "kind": "residual", "filters": 64, "dilation": 4},
    {"name": "conv_1", "kind": "conv", "filters": 80, "kernel_size": 1, "dropout": True},
)


@keras.saving.register_keras_serializable(package="tfuq")
class HighRes3DNet(keras.Model):
    """HighRes3DNet as a functional Keras model (2D or 3D).

    Args:
        image_shape: Input shape ``(D, H, W, C)`` (or ``(H, W, C)`` for 2D).
        family: Distribution family of a final
            :class:`~tfuq.layers.DistributionHead`, or None for a plain linear
            1^3 convolution to ``out_channels`` (backbone use).
        out_channels: Output channels when ``family`` is None. Default 1.
        base_filters: Channels of the first stack (16 in the paper); every
            width in :data:`HIGHRES3DNET_PLAN` scales with it.
        blocks_per_stack: Residual blocks per dilation stack (3 in NiftyNet).
        normalization: ``"batch"`` (paper), ``"instance"`` or ``"none"``.
        activation: Hidden activation (``ACTIVATIONS``). Default ``"relu"``.
        residual_matching: How a shortcut is widened when a stack doubles the
            channels: ``"pad"`` (centred zero channels, NiftyNet) or
            ``"projection"`` (1^3 convolution).
        dropout: Epistemic dropout (:class:`~tfuq.networks.dropout.DropoutSpec`,
            its dict, a kind name, or None): channel dropout on the input of
            the 80-channel 1^3 convolution.
        dropout_blocks: Also drop the input of every residual-block
            convolution (Reinhold et al.: dropout on all layers but the heads;
            never the image itself). Default False (NiftyNet, Klaser).
        init_scale: Initial predicted scale of the DistributionHead.
        name: Model name; also the prefix of every layer name.
        **kwargs: Base ``keras.Model`` arguments (e.g. ``trainable``).

    Input shape:
        ``(B, *image_shape)``.

    Output shape:
        ``(B, *spatial, params_size(family))`` or ``(B, *spatial, out_channels)``.

    Raises:
        ValueError: a bad argument.

    Example:
        >>> net = HighRes3DNet((32, 32, 32, 1), family="normal")
        >>> net.output_shape
        (None, 32, 32, 32, 2)

    Reference:
        Li et al., "On the compactness, efficiency, and representation of 3D
        convolutional networks: brain parcellation as a pretext task", IPMI
        2017, arXiv:1707.01992. Layer plan as in NiftyNet's HighRes3DNet.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        family: str | None = None,
        out_channels: int = 1,
        base_filters: int = 16,
        blocks_per_stack: int = 3,
        normalization: str = "batch",
        activation: str = "relu",
        residual_matching: str = "pad",
        dropout: DropoutSpec | Mapping[str, Any] | str | None = None,
        dropout_blocks: bool = False,
        init_scale: float = 0.5,
        name: str = "highres3dnet",
        **kwargs: Any,
    ) -> None:
        shape = check_image_shape(image_shape, (2, 3), "HighRes3DNet")
        rank = len(shape) - 1
        if family is not None:
            check_family(family)
        for key, value in (
            ("out_channels", out_channels),
            ("base_filters", base_filters),
            ("blocks_per_stack", blocks_per_stack),
        ):
            check_int(value, key, minimum=1)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Expected normalization in {NORMALIZATIONS}. Received: {normalization!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Expected activation in {ACTIVATIONS}. Received: activation={activation!r}")
        if residual_matching not in ("pad", "projection"):
            raise ValueError(
                f"Expected residual_matching in ('pad', 'projection'). Received: {residual_matching!r}"
            )
        spec = DropoutSpec.from_value(dropout)
        plan = DropoutPlan(spec, rank)

        inputs = keras.Input(shape, name=f"{name}_image")
        h = inputs
        for layer in HIGHRES3DNET_PLAN:
            filters = layer["filters"] * base_filters // 16
            if layer["kind"] == "conv":
                h = apply_conv_block(
                    h,
                    filters,
                    rank=rank,
                    kernel_size=layer["kernel_size"],
                    normalization=normalization,
                    activation=activation,
                    dropout=plan if layer.get("dropout") else None,
                    name=f"{name}_{layer['name']}",
                )
                continue
            for block in range(blocks_per_stack):
                h = apply_residual_block(
                    h,
                    filters,
                    rank=rank,
                    dilation_rate=layer["dilation"],
                    normalization=normalization,
                    activation=activation,
                    matching=residual_matching,
                    dropout=plan if dropout_blocks else None,
                    name=f"{name}_{layer['name']}_{block}",
                )
        if family is None:
            outputs = LAYERS[rank]["conv"](out_channels, 1, name=f"{name}_conv_2")(h)
        else:
            outputs = DistributionHead(family, rank=rank, init_scale=init_scale, name=f"{name}_conv_2")(h)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.image_shape = shape
        self.family = family
        self.out_channels = out_channels
        self.base_filters = base_filters
        self.blocks_per_stack = blocks_per_stack
        self.normalization = normalization
        self.activation = activation
        self.residual_matching = residual_matching
        self.dropout = spec
        self.dropout_blocks = bool(dropout_blocks)
        self.init_scale = float(init_scale)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            "image_shape": list(self.image_shape),
            "family": self.family,
            "out_channels": self.out_channels,
            "base_filters": self.base_filters,
            "blocks_per_stack": self.blocks_per_stack,
            "normalization": self.normalization,
            "activation": self.activation,
            "residual_matching": self.residual_matching,
            "dropout": self.dropout.to_dict(),
            "dropout_blocks": self.dropout_blocks,
            "init_scale": self.init_scale,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HighRes3DNet:
        """Rebuild from :meth:`get_config`."""
        return cls(**config)
