"""Building blocks shared by the networks: the layer table and ``apply_*_block`` builders.

Every network in :mod:`tfuq.networks` is a functional Keras model assembled by
``apply_*_block(x, ..., name=...)`` functions from this module. 2D and 3D
variants pick their layer classes from :data:`LAYERS` (a plain dict keyed by
spatial rank); epistemic dropout comes from a
:class:`~tfuq.networks.dropout.DropoutPlan` acting on convolution inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tfuq.checks import check_int
from tfuq.distributions import FAMILIES, check_family
from tfuq.layers import DilatedConv2D, DilatedConv3D, DistributionHead
from tfuq.networks.dropout import DropoutPlan

__all__ = [
    "ACTIVATIONS",
    "LAYERS",
    "NORMALIZATIONS",
    "ChannelPad",
    "apply_activation",
    "apply_conv_block",
    "apply_head_block",
    "apply_normalization",
    "apply_residual_block",
    "check_divisible",
    "check_image_shape",
    "expand",
]

#: Spatial rank -> the layer classes a network of that rank uses.
LAYERS: dict[int, dict[str, type[keras.layers.Layer]]] = {
    2: {
        "conv": keras.layers.Conv2D,
        "dilated_conv": DilatedConv2D,
        "conv_transpose": keras.layers.Conv2DTranspose,
        "upsample": keras.layers.UpSampling2D,
        "crop": keras.layers.Cropping2D,
        "zero_pad": keras.layers.ZeroPadding2D,
    },
    3: {
        "conv": keras.layers.Conv3D,
        "dilated_conv": DilatedConv3D,
        "conv_transpose": keras.layers.Conv3DTranspose,
        "upsample": keras.layers.UpSampling3D,
        "crop": keras.layers.Cropping3D,
        "zero_pad": keras.layers.ZeroPadding3D,
    },
}
#: Activation names the networks accept ([NETWORK] activation_function).
ACTIVATIONS = ("relu", "leaky_relu", "prelu", "elu", "selu", "gelu")
#: Normalisation layers the networks accept.
NORMALIZATIONS = ("batch", "instance", "none")


def _check_rank(rank: int) -> int:
    if rank not in LAYERS:
        raise ValueError(f"Expected a spatial rank in {sorted(LAYERS)}. Received: rank={rank!r}")
    return rank


def expand(value: int | Sequence[int], rank: int, name: str = "value") -> tuple[int, ...]:
    """Return ``value`` as a tuple of ``rank`` ints (an int is repeated).

    Raises:
        ValueError: a sequence of the wrong length or non-positive entries.
    """
    out = (value,) * rank if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != rank or any(v < 1 for v in out):
        raise ValueError(f"Expected {name} to be an int or {rank} ints >= 1. Received: {name}={value!r}")
    return out


def check_image_shape(image_shape: Sequence[int], ranks: Sequence[int], model: str) -> tuple[int, ...]:
    """Validate an input shape ``(*spatial, channels)`` and return it as a tuple of ints.

    Raises:
        ValueError: wrong length for the allowed spatial ranks, or a size < 1.
    """
    try:
        shape = tuple(int(v) for v in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) - 1 not in ranks or any(v < 1 for v in shape) or len(shape) != len(image_shape):
        raise ValueError(
            f"{model} takes inputs (*spatial, channels) with {' or '.join(map(str, ranks))} spatial "
            f"axes and sizes >= 1. Received: image_shape={image_shape!r}"
        )
    return shape


def check_divisible(spatial: Sequence[int | None], multiples: Sequence[int], model: str, reason: str) -> None:
    """Raise a ``ValueError`` naming valid sizes if a spatial size is not a multiple.

    Args:
        spatial: Spatial sizes of the input (without batch and channels).
        multiples: Required multiple per axis (1 = any size).
        model: Model name used in the message.
        reason: Why the multiple is needed (e.g. "3 stride-2 downsamplings").

    Raises:
        ValueError: a size is unknown, or not a positive multiple; the message
            lists the nearest valid sizes on that axis.
    """
    for axis, (size, multiple) in enumerate(zip(spatial, multiples)):
        if size is None:
            raise ValueError(f"{model} needs known spatial sizes. Received: spatial sizes {tuple(spatial)}")
        if size < multiple or size % multiple:
            below = (size // multiple) * multiple
            valid = [v for v in (below, below + multiple) if v >= multiple]
            raise ValueError(
                f"{model} needs spatial sizes divisible by {tuple(multiples)} ({reason}). "
                f"Expected axis {axis} to be a multiple of {multiple}, e.g. "
                f"{' or '.join(map(str, valid))}. Received: spatial sizes {tuple(spatial)}"
            )


def apply_activation(x: Any, activation: str, rank: int, name: str) -> Any:
    """Apply a named activation layer (``"none"`` = identity).

    ``leaky_relu`` uses slope 0.2 (pix2pix); ``prelu`` learns one slope per
    channel (shared over space, as in NiftyNet).
    """
    if activation == "none":
        return x
    if activation == "relu":
        layer: keras.layers.Layer = keras.layers.ReLU(name=name)
    elif activation == "leaky_relu":
        layer = keras.layers.LeakyReLU(negative_slope=0.2, name=name)
    elif activation == "prelu":
        layer = keras.layers.PReLU(shared_axes=list(range(1, rank + 1)), name=name)
    elif activation in ACTIVATIONS:
        layer = keras.layers.Activation(activation, name=name)
    else:
        raise ValueError(
            f"Expected activation in {(*ACTIVATIONS, 'none')}. Received: activation={activation!r}"
        )
    return layer(x)


def apply_normalization(x: Any, normalization: str, name: str) -> Any:
    """Apply batch, instance (GroupNormalization with one group per channel) or no normalisation."""
    if normalization == "batch":
        return keras.layers.BatchNormalization(name=name)(x)
    if normalization == "instance":
        return keras.layers.GroupNormalization(groups=-1, name=name)(x)
    if normalization == "none":
        return x
    raise ValueError(f"Expected normalization in {NORMALIZATIONS}. Received: normalization={normalization!r}")


def _conv_class(rank: int, dilation: Sequence[int]) -> type[keras.layers.Layer]:
    """Keras's convolution, or the native dilated one (:mod:`tfuq.layers.dilated_conv`) when dilated."""
    return LAYERS[rank]["dilated_conv" if any(int(d) > 1 for d in dilation) else "conv"]


def apply_conv_block(
    x: Any,
    filters: int,
    *,
    rank: int,
    kernel_size: int | Sequence[int] = 3,
    strides: int | Sequence[int] = 1,
    dilation_rate: int | Sequence[int] = 1,
    normalization: str = "batch",
    activation: str = "relu",
    dropout: DropoutPlan | None = None,
    transpose: bool = False,
    padding: str = "same",
    use_bias: bool | None = None,
    name: str,
) -> Any:
    """Convolution -> normalisation -> activation, with optional dropout on its input.

    Args:
        x: Input ``(B, *spatial, C)``.
        filters: Output channels.
        rank: Spatial rank, 2 or 3.
        kernel_size: Int or per-axis sizes.
        strides: Int or per-axis strides.
        dilation_rate: Int or per-axis dilation.
        normalization: ``"batch"``, ``"instance"`` or ``"none"``.
        activation: See :func:`apply_activation`; ``"none"`` for linear.
        dropout: Plan applied to the convolution's input, or None.
        transpose: Use a transposed convolution.
        padding: ``"same"`` or ``"valid"``.
        use_bias: Default: only without normalisation.
        name: Prefix of the layer names (``<name>_conv``, ``_norm``, ``_act``).

    Returns:
        The block's output tensor.
    """
    layers = LAYERS[_check_rank(rank)]
    conv_cls = layers["conv_transpose" if transpose else "conv"]
    options: dict[str, Any] = {}
    if not transpose:
        options["dilation_rate"] = expand(dilation_rate, rank, "dilation_rate")
        conv_cls = _conv_class(rank, options["dilation_rate"])
    conv = conv_cls(
        filters,
        expand(kernel_size, rank, "kernel_size"),
        strides=expand(strides, rank, "strides"),
        padding=padding,
        use_bias=normalization == "none" if use_bias is None else use_bias,
        name=f"{name}_conv",
        **options,
    )
    h = dropout.apply(x, conv, name) if dropout is not None else conv(x)
    h = apply_normalization(h, normalization, f"{name}_norm")
    return apply_activation(h, activation, rank, f"{name}_act")


@keras.saving.register_keras_serializable(package="tfuq")
class ChannelPad(keras.layers.Layer):
    """Zero-pad the channel axis: ``front`` zero channels before, ``back`` after.

    The residual shortcut of NiftyNet's HighRes3DNet when a block widens the
    channels (no weights).

    Args:
        front: Zero channels prepended, >= 0.
        back: Zero channels appended, >= 0.
        **kwargs: Base layer arguments.

    Input shape:
        ``(B, ..., C)``; output ``(B, ..., front + C + back)``.

    Example:
        >>> ChannelPad(8, 8)(keras.Input((4, 4, 4, 16))).shape
        (None, 4, 4, 4, 32)
    """

    def __init__(self, front: int, back: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for key, value in (("front", front), ("back", back)):
            check_int(value, key, minimum=0)
        self.front = front
        self.back = back

    def call(self, inputs: Any) -> Any:
        """Return the padded tensor."""
        rank = len(inputs.shape)
        return keras.ops.pad(inputs, [[0, 0]] * (rank - 1) + [[self.front, self.back]])

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The input shape with ``front + back`` more channels."""
        channels = input_shape[-1]
        return (*input_shape[:-1], None if channels is None else channels + self.front + self.back)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {**super().get_config(), "front": self.front, "back": self.back}


def _match_channels(shortcut: Any, channels: int, matching: str, rank: int, name: str) -> Any:
    """Zero-pad (centred, as NiftyNet's ElementwiseLayer) or project ``shortcut`` to ``channels``."""
    have = int(shortcut.shape[-1])
    if have == channels:
        return shortcut
    if matching == "projection" or have > channels:
        conv = LAYERS[rank]["conv"](channels, 1, use_bias=False, name=f"{name}_projection")
        return conv(shortcut)
    front = (channels - have) // 2
    return ChannelPad(front, channels - have - front, name=f"{name}_zero_pad")(shortcut)


def apply_residual_block(
    x: Any,
    filters: int,
    *,
    rank: int,
    kernel_size: int | Sequence[int] = 3,
    dilation_rate: int | Sequence[int] = 1,
    num_convs: int = 2,
    normalization: str = "batch",
    activation: str = "relu",
    matching: str = "pad",
    dropout: DropoutPlan | None = None,
    name: str,
) -> Any:
    """Pre-activation residual block: ``num_convs`` x [norm -> act -> conv] plus the shortcut.

    The shortcut is matched to ``filters`` channels by centred zero padding
    (``matching="pad"``, NiftyNet's HighRes3DNet) or a bias-free 1x1 projection
    (``"projection"``; always used when channels shrink).

    Args:
        x: Input ``(B, *spatial, C)``.
        filters: Output channels.
        rank: Spatial rank.
        kernel_size: Convolution size.
        dilation_rate: Dilation of every convolution in the block.
        num_convs: Convolutions in the residual branch, >= 1.
        normalization: Normalisation before each activation.
        activation: Activation before each convolution.
        matching: ``"pad"`` or ``"projection"``.
        dropout: Plan applied to the input of every convolution of the
            residual branch (not the shortcut), or None.
        name: Layer-name prefix.

    Returns:
        ``conv(...(x)) + shortcut(x)``.
    """
    if matching not in ("pad", "projection"):
        raise ValueError(f"Expected matching in ('pad', 'projection'). Received: matching={matching!r}")
    h = x
    for i in range(num_convs):
        h = apply_normalization(h, normalization, f"{name}_norm_{i}")
        h = apply_activation(h, activation, rank, f"{name}_act_{i}")
        dilation = expand(dilation_rate, rank, "dilation_rate")
        conv = _conv_class(rank, dilation)(
            filters,
            expand(kernel_size, rank, "kernel_size"),
            dilation_rate=dilation,
            padding="same",
            use_bias=normalization == "none",
            name=f"{name}_conv_{i}",
        )
        h = dropout.apply(h, conv, f"{name}_conv_{i}") if dropout is not None else conv(h)
    shortcut = _match_channels(x, filters, matching, rank, name)
    return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def apply_head_block(
    x: Any,
    family: str,
    *,
    rank: int,
    filters: int,
    kernel_size: int | Sequence[int] = 3,
    activation: str = "relu",
    init_scale: float = 0.5,
    name: str,
) -> Any:
    """One branch per distribution parameter, then a :class:`DistributionHead`.

    Each parameter (loc, scale, power of ``family``) gets its own
    ``kernel_size`` convolution with ``filters`` channels and an activation
    (Reinhold's two heads, UP-GAN's three); their features are concatenated
    and :class:`~tfuq.layers.DistributionHead` (a 1x1 convolution) maps them
    to the unconstrained parameter channels. No dropout in the heads.

    Args:
        x: Input ``(B, *spatial, C)``.
        family: Distribution family (``tfuq.distributions.FAMILIES``).
        rank: Spatial rank.
        filters: Channels of each parameter branch.
        kernel_size: Size of the branch convolutions.
        activation: Branch activation.
        init_scale: Initial predicted scale (DistributionHead).
        name: Layer-name prefix.

    Returns:
        ``(B, *spatial, params_size(family))``.
    """
    branches = []
    for param in FAMILIES[check_family(family)]:
        h = LAYERS[rank]["conv"](
            filters, expand(kernel_size, rank, "kernel_size"), padding="same", name=f"{name}_{param}_conv"
        )(x)
        branches.append(apply_activation(h, activation, rank, f"{name}_{param}_act"))
    h = branches[0] if len(branches) == 1 else keras.layers.Concatenate(name=f"{name}_concat")(branches)
    return DistributionHead(family, rank=rank, init_scale=init_scale, name=f"{name}_params")(h)
