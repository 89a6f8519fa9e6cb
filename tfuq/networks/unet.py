"""U-Net with distribution heads (Reinhold et al. 2020), in 2D, 2.5D and 3D.

Reinhold's modifications of the U-Net, as built here:

- ``depth`` (default 3) down/up levels instead of 4;
- downsampling by stride-2 convolutions instead of max pooling;
- upsampling by nearest-neighbour interpolation followed by a convolution
  (``up_kernel_size``, 5 as the paper's 5^2 convolution);
- the network input concatenated to the last feature maps, right before the
  heads;
- heads of a 3x3 then a 1x1 convolution per distribution parameter (mean and
  variance in the paper), the 1x1 part being one
  :class:`~tfuq.layers.DistributionHead` (see
  :func:`~tfuq.networks.blocks.apply_head_block`);
- spatial dropout (p = 0.2) on all layers but the heads: the dropout plan acts
  on the input of every convolution except the first (which sees the raw
  image) and the heads'.

Each level has ``convs_per_level`` (2) [conv -> norm -> activation] blocks;
level l has ``base_filters * 2**l`` channels; skips are concatenated after
the upsampling convolution.

2.5D (``mode="2.5d"``): the input is a slab ``(H, W, S, C)`` of S adjacent
slices (Reinhold: 128x128x8). It is a rank-3 network whose body is 2D in
effect: kernels (3, 3, 1), strides (2, 2, 1), upsampling (2, 2, 1) and up
convolutions (5, 5, 1) never mix slices, except the two "3D convolutional
layers, one at the start and one at the end": the very first convolution
and the heads' convolution use full 3^3 kernels (the paper's heads are 3^3
then 1^3). Only H and W are downsampled, so S can be any size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from tfuq.checks import check_int
from tfuq.distributions import check_family
from tfuq.networks.blocks import (
    ACTIVATIONS,
    LAYERS,
    NORMALIZATIONS,
    apply_conv_block,
    apply_head_block,
    check_divisible,
    check_image_shape,
)
from tfuq.networks.dropout import DropoutPlan, DropoutSpec

__all__ = ["UNET_MODES", "UNet", "unet_layer_plan"]

#: mode -> spatial rank, body kernel, edge (first conv / head) kernel, down/up factor.
UNET_MODES: dict[str, dict[str, Any]] = {
    "2d": {"rank": 2, "kernel": (3, 3), "edge_kernel": (3, 3), "factor": (2, 2)},
    "2.5d": {"rank": 3, "kernel": (3, 3, 1), "edge_kernel": (3, 3, 3), "factor": (2, 2, 1)},
    "3d": {"rank": 3, "kernel": (3, 3, 3), "edge_kernel": (3, 3, 3), "factor": (2, 2, 2)},
}


def unet_layer_plan(depth: int, base_filters: int, convs_per_level: int) -> list[dict[str, Any]]:
    """The U-Net's blocks, in build order, as data.

    Args:
        depth: Down/up levels.
        base_filters: Channels of level 0.
        convs_per_level: Convolution blocks per level and path.

    Returns:
        list: dicts with ``name``, ``kind`` (``"conv"``, ``"down"``, ``"up"``,
        ``"skip"``, ``"merge"``), ``level`` and ``filters``.
    """
    plan: list[dict[str, Any]] = []
    for level in range(depth + 1):
        filters = base_filters * 2**level
        if level:
            plan.append({"name": f"down_{level}", "kind": "down", "level": level, "filters": filters})
        for i in range(convs_per_level):
            plan.append({"name": f"enc_{level}_{i}", "kind": "conv", "level": level, "filters": filters})
        if level < depth:
            plan.append({"name": f"skip_{level}", "kind": "skip", "level": level, "filters": filters})
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        plan.append({"name": f"up_{level}", "kind": "up", "level": level, "filters": filters})
        plan.append({"name": f"merge_{level}", "kind": "merge", "level": level, "filters": filters})
        for i in range(convs_per_level):
            plan.append({"name": f"dec_{level}_{i}", "kind": "conv", "level": level, "filters": filters})
    return plan


@keras.saving.register_keras_serializable(package="tfuq")
class UNet(keras.Model):
    """Reinhold's uncertainty U-Net ending in a DistributionHead.

    Args:
        image_shape: ``(H, W, C)`` for 2D, ``(H, W, S, C)`` for 2.5D slabs,
            ``(D, H, W, C)`` for 3D.
        family: Distribution family of the head (``"point"`` for a plain
            regression U-Net).
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``; None picks 2D or 3D from
            ``image_shape``.
        depth: Down/up levels, >= 1. Default 3.
        base_filters: Channels at level 0 (doubling per level). Default 32.
        convs_per_level: Convolution blocks per level and path. Default 2.
        up_kernel_size: In-plane size of the convolution after each upsampling.
            Default 5.
        head_filters: Channels of each head branch; None = ``base_filters``.
        normalization: ``"batch"``, ``"instance"`` or ``"none"``.
        activation: Hidden activation (``ACTIVATIONS``).
        dropout: Epistemic dropout (``DropoutSpec``, dict, kind name or None).
        init_scale: Initial predicted scale of the head.
        name: Model name and layer-name prefix.
        **kwargs: Base ``keras.Model`` arguments.

    Input shape:
        ``(B, *image_shape)``; downsampled axes must be multiples of
        ``2**depth``.

    Output shape:
        ``(B, *spatial, params_size(family))``.

    Raises:
        ValueError: a bad argument, or spatial sizes that cannot be
            downsampled ``depth`` times (the message names valid sizes).

    Example:
        >>> net = UNet((128, 128, 8, 1), family="normal", mode="2.5d")
        >>> net.output_shape
        (None, 128, 128, 8, 2)

    Reference:
        Reinhold et al., "Validating uncertainty in medical image
        translation", ISBI 2020, arXiv:2002.04639. Ronneberger et al.,
        "U-Net", MICCAI 2015, arXiv:1505.04597.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        family: str = "normal",
        mode: str | None = None,
        depth: int = 3,
        base_filters: int = 32,
        convs_per_level: int = 2,
        up_kernel_size: int = 5,
        head_filters: int | None = None,
        normalization: str = "batch",
        activation: str = "relu",
        dropout: DropoutSpec | Mapping[str, Any] | str | None = None,
        init_scale: float = 0.5,
        name: str = "unet",
        **kwargs: Any,
    ) -> None:
        shape = check_image_shape(image_shape, (2, 3), "UNet")
        if mode is None:
            mode = "2d" if len(shape) == 3 else "3d"
        if mode not in UNET_MODES:
            raise ValueError(f"Expected mode in {tuple(UNET_MODES)} or None. Received: mode={mode!r}")
        geometry = UNET_MODES[mode]
        rank = geometry["rank"]
        if len(shape) != rank + 1:
            raise ValueError(
                f"UNet mode {mode!r} takes inputs with {rank} spatial axes. Received: image_shape={shape}"
            )
        check_family(family)
        check_int(depth, "depth", minimum=1)
        check_int(base_filters, "base_filters", minimum=1)
        check_int(convs_per_level, "convs_per_level", minimum=1)
        check_int(up_kernel_size, "up_kernel_size", minimum=1)
        head_filters = (
            base_filters if head_filters is None else check_int(head_filters, "head_filters", minimum=1)
        )
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Expected normalization in {NORMALIZATIONS}. Received: {normalization!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Expected activation in {ACTIVATIONS}. Received: activation={activation!r}")
        multiples = tuple(f**depth for f in geometry["factor"])
        check_divisible(
            shape[:-1], multiples, f"UNet(mode={mode!r}, depth={depth})", f"{depth} downsamplings"
        )
        spec = DropoutSpec.from_value(dropout)
        plan = DropoutPlan(spec, rank)
        up_kernel = tuple(up_kernel_size if f > 1 else 1 for f in geometry["factor"])
        block = {"rank": rank, "normalization": normalization, "activation": activation}

        inputs = keras.Input(shape, name=f"{name}_image")
        h = inputs
        skips: dict[int, Any] = {}
        for layer in unet_layer_plan(depth, base_filters, convs_per_level):
            kind, level, filters = layer["kind"], layer["level"], layer["filters"]
            lname = f"{name}_{layer['name']}"
            if kind == "skip":
                skips[level] = h
            elif kind == "merge":
                h = keras.layers.Concatenate(name=lname)([skips[level], h])
            elif kind == "up":
                h = LAYERS[rank]["upsample"](size=geometry["factor"], name=f"{lname}_upsample")(h)
                h = apply_conv_block(h, filters, kernel_size=up_kernel, dropout=plan, name=lname, **block)
            else:
                first = h is inputs
                h = apply_conv_block(
                    h,
                    filters,
                    kernel_size=geometry["edge_kernel" if first else "kernel"],
                    strides=geometry["factor"] if kind == "down" else 1,
                    dropout=None if first else plan,
                    name=lname,
                    **block,
                )
        h = keras.layers.Concatenate(name=f"{name}_input_concat")([h, inputs])
        outputs = apply_head_block(
            h,
            family,
            rank=rank,
            filters=head_filters,
            kernel_size=geometry["edge_kernel"],
            activation=activation,
            init_scale=init_scale,
            name=f"{name}_head",
        )
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.image_shape = shape
        self.family = family
        self.mode = mode
        self.depth = depth
        self.base_filters = base_filters
        self.convs_per_level = convs_per_level
        self.up_kernel_size = up_kernel_size
        self.head_filters = head_filters
        self.normalization = normalization
        self.activation = activation
        self.dropout = spec
        self.init_scale = float(init_scale)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            "image_shape": list(self.image_shape),
            "family": self.family,
            "mode": self.mode,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "convs_per_level": self.convs_per_level,
            "up_kernel_size": self.up_kernel_size,
            "head_filters": self.head_filters,
            "normalization": self.normalization,
            "activation": self.activation,
            "dropout": self.dropout.to_dict(),
            "init_scale": self.init_scale,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNet:
        """Rebuild from :meth:`get_config`."""
        return cls(**config)
