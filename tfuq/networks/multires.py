"""MultiRes: a cascade of HighRes3DNets over three resolutions (Klaser et al. 2020).

Three HighRes3DNet instances (no weight sharing) see crops of the same size
``c`` (80^3 in the paper) taken from the centre of one large patch (320^3)
at 1x, 2x and 4x downsampling, so they cover fields of view of c, 2c and 4c
voxels. Each outputs one channel at its own resolution. Starting from the
coarsest, the output is upsampled x2 (nearest neighbour), centre-cropped to
``c`` (which is then exactly the next level's field of view) and concatenated
with the next level's output, until the finest level. Two branches of four
1^3 convolutions read the result: the synthesis branch (mean) and the
heteroscedastic branch (scale, shape); with the point family only the
synthesis branch exists. The fourth convolution of both branches is one
:class:`~tfuq.layers.DistributionHead` over the concatenated branch features.
Channel dropout (keep 0.5 in the paper, i.e. ``dropout.rate = 0.5``) acts on
the input of each subnet's 80-channel 1^3 convolution and of branch
convolutions 2 and 3, at training and under MC sampling (the head's input is
not dropped: concrete dropout needs a plain convolution to wrap).

Geometry: the crop size c must satisfy ``(ratio - 1) * c`` even on every axis
for each ratio between consecutive factors, so the centre crop is exact.
Input k must be the central c-crop of the big patch after downsampling by
``factors[k]`` with each coarse voxel covering a block of fine voxels (block
mean); then coarse voxel i of level k+1 covers level-k voxels
``[r*i, r*(i+1))`` and the upsample + crop aligns them exactly.

Branch widths: the paper gives none. ``branch_filters=(256, 256, 128)``
reproduces Klaser's Table 1 with 3 x 810,305 HighRes3DNet parameters:
2,530,756 for the point family (paper 2.54M) and 2,630,853 for the normal
family (paper 2.61M).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from tfuq.distributions import FAMILIES, check_family
from tfuq.layers import DistributionHead
from tfuq.networks.blocks import LAYERS, apply_activation, check_image_shape
from tfuq.networks.dropout import DropoutPlan, DropoutSpec
from tfuq.networks.highres3dnet import HighRes3DNet

__all__ = ["MultiRes", "apply_upsample_crop", "check_multires_geometry"]


def check_multires_geometry(crop: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    """Validate the downsampling factors and crop size; return the ratios between levels.

    Args:
        crop: Spatial crop size of every level.
        factors: Downsampling factor of each level, finest first (e.g. 1, 2, 4).

    Returns:
        tuple: ``factors[k + 1] // factors[k]`` for each consecutive pair.

    Raises:
        ValueError: fewer than 2 levels, non-integer ratios, or a crop size
            that cannot be centre-cropped exactly (the message names valid sizes).
    """
    factors = tuple(int(f) for f in factors)
    if len(factors) < 2 or factors[0] < 1:
        raise ValueError(
            f"MultiRes needs at least two levels with factors >= 1, finest first. Received: factors={factors}"
        )
    ratios = []
    for fine, coarse in itertools.pairwise(factors):
        if coarse <= fine or coarse % fine:
            raise ValueError(
                "MultiRes factors must increase by integer ratios, e.g. (1, 2, 4). "
                f"Received: factors={factors}"
            )
        ratios.append(coarse // fine)
    for ratio in ratios:
        for axis, size in enumerate(crop):
            if ((ratio - 1) * size) % 2:
                raise ValueError(
                    f"MultiRes upsamples by {ratio} and centre-crops, so (ratio - 1) * size must be even. "
                    f"Expected axis {axis} size {size - 1} or {size + 1}. Received: crop size {tuple(crop)}"
                )
    return tuple(ratios)


def apply_upsample_crop(x: Any, ratio: int, crop: Sequence[int], name: str) -> Any:
    """Nearest-neighbour upsampling by ``ratio`` then a centred crop back to ``crop``.

    Args:
        x: ``(B, *crop, C)`` at the coarser level.
        ratio: Integer upsampling factor.
        crop: Spatial size to keep (the input's size).
        name: Layer-name prefix (``<name>_upsample``, ``<name>_crop``).

    Returns:
        ``(B, *crop, C)``: the central part, on the finer level's grid.
    """
    rank = len(crop)
    h = LAYERS[rank]["upsample"](size=(ratio,) * rank, name=f"{name}_upsample")(x)
    margins = tuple(((ratio - 1) * s // 2, (ratio - 1) * s // 2) for s in crop)
    return LAYERS[rank]["crop"](cropping=margins, name=f"{name}_crop")(h)


@keras.saving.register_keras_serializable(package="tfuq")
class MultiRes(keras.Model):
    """Klaser's multi-resolution HighRes3DNet cascade with synthesis and uncertainty branches.

    Args:
        image_shape: Crop shape of every level ``(D, H, W, C)`` (80, 80, 80, 1
            in the paper).
        family: Distribution family; ``"point"`` keeps only the synthesis branch.
        factors: Downsampling factor per level, finest first. Default (1, 2, 4).
        branch_filters: Widths of the first three 1^3 convolutions of each branch.
        deep_supervision: Also output each coarser subnet's own prediction.
        base_filters: HighRes3DNet first-stack width (16).
        blocks_per_stack: HighRes3DNet residual blocks per stack (3).
        normalization: Subnet normalisation.
        activation: Hidden activation.
        residual_matching: Subnet shortcut widening, ``"pad"`` or ``"projection"``.
        dropout: Channel dropout (``DropoutSpec``, dict, kind or None).
        dropout_blocks: Also drop the input of every residual-block
            convolution of the HighRes3DNets (see
            :class:`~tfuq.networks.HighRes3DNet`). Default False (Klaser).
        init_scale: Initial predicted scale.
        name: Model name and layer-name prefix.
        **kwargs: Base ``keras.Model`` arguments.

    Input shape:
        A list of ``len(factors)`` tensors ``(B, *image_shape)``, finest first.

    Output shape:
        ``(B, *crop, params_size(family))``; with ``deep_supervision`` a dict
        ``{"params": that, "level_1": (B, *crop, 1), ...}`` holding the
        coarser subnets' outputs (compare with the target downsampled and
        cropped like the inputs).

    Raises:
        ValueError: a bad argument or geometry.

    Example:
        >>> net = MultiRes((16, 16, 16, 1), family="normal", base_filters=4, branch_filters=(8, 8, 8))
        >>> net.output_shape
        (None, 16, 16, 16, 2)

    Reference:
        Klaser et al., "Uncertainty-aware multi-resolution whole-body MR to CT
        synthesis", SASHIMI 2020, DOI:10.1007/978-3-030-59520-3_12.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        family: str = "normal",
        factors: Sequence[int] = (1, 2, 4),
        branch_filters: Sequence[int] = (256, 256, 128),
        deep_supervision: bool = False,
        base_filters: int = 16,
        blocks_per_stack: int = 3,
        normalization: str = "batch",
        activation: str = "relu",
        residual_matching: str = "pad",
        dropout: DropoutSpec | Mapping[str, Any] | str | None = None,
        dropout_blocks: bool = False,
        init_scale: float = 0.5,
        name: str = "multires",
        **kwargs: Any,
    ) -> None:
        shape = check_image_shape(image_shape, (3,), "MultiRes")
        check_family(family)
        factors = tuple(int(f) for f in factors)
        ratios = check_multires_geometry(shape[:-1], factors)
        branch_filters = tuple(int(f) for f in branch_filters)
        if len(branch_filters) != 3 or min(branch_filters) < 1:
            raise ValueError(
                f"Expected 3 branch widths >= 1 (four 1^3 convolutions per branch). "
                f"Received: branch_filters={branch_filters}"
            )
        spec = DropoutSpec.from_value(dropout)

        inputs = [keras.Input(shape, name=f"{name}_level_{k}") for k in range(len(factors))]
        subnets = []
        for k in range(len(factors)):
            seed = None if spec.seed is None else spec.seed + 100 * (k + 1)
            subnets.append(
                HighRes3DNet(
                    shape,
                    family=None,
                    out_channels=1,
                    base_filters=base_filters,
                    blocks_per_stack=blocks_per_stack,
                    normalization=normalization,
                    activation=activation,
                    residual_matching=residual_matching,
                    dropout=dataclasses.replace(spec, seed=seed),
                    dropout_blocks=dropout_blocks,
                    name=f"{name}_highres_{k}",
                )
            )
        levels = [net(x) for net, x in zip(subnets, inputs)]
        h = levels[-1]
        for k in range(len(factors) - 2, -1, -1):
            up = apply_upsample_crop(h, ratios[k], shape[:-1], name=f"{name}_level_{k + 1}_to_{k}")
            h = keras.layers.Concatenate(name=f"{name}_merge_{k}")([levels[k], up])

        plan = DropoutPlan(spec, 3)
        branches = ["synthesis"] if len(FAMILIES[family]) == 1 else ["synthesis", "uncertainty"]
        features = []
        for branch in branches:
            b = h
            for i, filters in enumerate(branch_filters):
                conv = keras.layers.Conv3D(filters, 1, name=f"{name}_{branch}_conv_{i}")
                b = plan.apply(b, conv, f"{name}_{branch}_conv_{i}") if i else conv(b)
                b = apply_activation(b, activation, 3, f"{name}_{branch}_act_{i}")
            features.append(b)
        if len(features) > 1:
            features = [keras.layers.Concatenate(name=f"{name}_branches")(features)]
        params = DistributionHead(family, rank=3, init_scale=init_scale, name=f"{name}_conv_3")(features[0])
        outputs: Any = params
        if deep_supervision:
            outputs = {"params": params, **{f"level_{k}": levels[k] for k in range(1, len(factors))}}
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.image_shape = shape
        self.family = family
        self.factors = factors
        self.branch_filters = branch_filters
        self.deep_supervision = bool(deep_supervision)
        self.base_filters = base_filters
        self.blocks_per_stack = blocks_per_stack
        self.normalization = normalization
        self.activation = activation
        self.residual_matching = residual_matching
        self.dropout = spec
        self.dropout_blocks = bool(dropout_blocks)
        self.init_scale = float(init_scale)
        self.subnets = subnets

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            "image_shape": list(self.image_shape),
            "family": self.family,
            "factors": list(self.factors),
            "branch_filters": list(self.branch_filters),
            "deep_supervision": self.deep_supervision,
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
    def from_config(cls, config: dict[str, Any]) -> MultiRes:
        """Rebuild from :meth:`get_config`."""
        return cls(**config)
