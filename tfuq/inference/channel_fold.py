"""T channel-dropout passes through the next convolution as one convolution.

After :func:`tfuq.inference.prefix.split_at_stochastic` the stochastic suffix
of a network with dropout only before the head (``[UNCERTAINTY]
dropout_layers = head``) is: channel dropout on the cut tensor ``h``, a
convolution, then deterministic layers. Channel (spatial) dropout multiplies
each input channel by one draw ``m_tc`` (0 or ``1 / (1 - rate)``) for the whole
window, so for pass t

    conv(h * m_t) = conv_{K * m_t}(h)

(the kernel ``K`` with its input-channel rows scaled by ``m_t``). The T passes
are then one convolution of the *untiled* ``h`` with the T masked kernels
stacked along the output channels: ``h`` is read once instead of being copied
T times and masked, which is what made T passes of the suffix cost more than
the rest of the network (the tiled cut tensor is T times the largest
activation). The deterministic layers after the convolution run on the
``(T * B, ...)`` result as before.

The masks are drawn by the dropout layer's own ``SeedGenerator`` with the
same shape ``(T * B, 1, .., 1, C)`` and in the same call order as in the
naive path (rows ``t * B + b``), so for the same seed the folded suffix gives
the naive suffix's outputs up to float round-off (tested in
``tests/inference/test_channel_fold.py``).

The fold applies when the suffix has one input, read only by an
:class:`~tfuq.layers.MCSpatialDropout2D` / ``3D`` layer with rate > 0, whose
output is read only by an (undilated or dilated, stride 1, one group) 2D/3D
convolution, and the rest of the suffix reads nothing but that convolution's
output and holds no other stochastic layer. Otherwise
:func:`fold_channel_dropout` returns None and the caller tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfuq.layers import MCSpatialDropout2D, MCSpatialDropout3D, iter_layers, stochastic_layers

__all__ = ["fold_channel_dropout"]

#: Folded suffix: (cut tensor (B, *spatial, C), copies) -> the suffix outputs for the (copies * B) rows.
FoldedSuffix = Callable[[tf.Tensor, int], Any]


def _consumers(model: keras.Model) -> dict[int, list[Any]]:
    """id(tensor) -> the nodes of ``model``'s graph reading it."""
    found: dict[int, list[Any]] = {}
    for depth in getattr(model, "_nodes_by_depth", {}).values():
        for node in depth:
            if isinstance(node.operation, keras.layers.InputLayer):
                continue
            for tensor in node.input_tensors:
                found.setdefault(id(tensor), []).append(node)
    return found


def _only_consumer(consumers: dict[int, list[Any]], tensor: Any) -> Any | None:
    nodes = consumers.get(id(tensor), [])
    return nodes[0] if len(nodes) == 1 else None


def _foldable_conv(layer: Any) -> bool:
    conv = (keras.layers.Conv2D, keras.layers.Conv3D)
    transposed = (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    return (
        isinstance(layer, conv)
        and not isinstance(layer, transposed)
        and layer.data_format == "channels_last"
        and getattr(layer, "groups", 1) == 1
    )


def fold_channel_dropout(suffix: keras.Model) -> FoldedSuffix | None:
    """The suffix's T passes with channel dropout folded into the next convolution, or None.

    Args:
        suffix: The stochastic suffix of :func:`tfuq.inference.prefix.split_at_stochastic`.

    Returns:
        A callable ``(h, copies)`` -> the suffix outputs for ``tile(h, copies)``
        (rows ``t * B + b``) with the dropout masks drawn as the naive path
        draws them; to be called (traced) with MC sampling on. None when the
        pattern of the module notes does not hold.
    """
    if len(suffix.inputs) != 1:
        return None
    consumers = _consumers(suffix)
    first = _only_consumer(consumers, suffix.inputs[0])
    dropout = first.operation if first is not None else None
    if not isinstance(dropout, (MCSpatialDropout2D, MCSpatialDropout3D)) or dropout.rate <= 0:
        return None
    second = _only_consumer(consumers, first.outputs[0])
    conv = second.operation if second is not None else None
    if not _foldable_conv(conv) or any(int(s) != 1 for s in conv.strides):
        return None
    try:
        rest = keras.Model(second.outputs[0], suffix.outputs, name=f"{suffix.name}_rest")
    except (ValueError, TypeError):  # the rest reads another tensor of the suffix
        return None
    inside = {id(layer) for layer in iter_layers(rest)}
    if any(id(layer) in inside for layer in stochastic_layers(suffix)):
        return None
    rank = len(conv.kernel.shape) - 2

    def run(h: tf.Tensor, copies: int) -> Any:
        batch, channels = int(h.shape[0]), int(h.shape[-1])
        noise = (copies * batch, *([1] * rank), channels)
        dtype = conv.compute_dtype
        ones = tf.ones(noise, dtype)
        masks = keras.random.dropout(ones, dropout.rate, noise_shape=noise, seed=dropout.seed_generator)
        masks = tf.reshape(masks, (copies, batch, channels))
        kernel = tf.cast(conv.kernel, dtype)
        h = tf.cast(h, dtype)
        rows = []
        for b in range(batch):
            # (*k, C, F) x (copies, C) -> (*k, C, copies * F): copy t's kernel is K, rows scaled by m_t.
            scaled = kernel[..., None, :] * tf.reshape(tf.transpose(masks[:, b]), (channels, copies, 1))
            stacked = tf.reshape(scaled, (*kernel.shape[:-1], copies * kernel.shape[-1]))
            y = conv.convolution_op(h[b : b + 1], stacked)
            if conv.use_bias:
                y = y + tf.tile(tf.cast(conv.bias, dtype), [copies])
            y = tf.reshape(y, (*y.shape[:-1], copies, kernel.shape[-1]))
            rows.append(tf.transpose(y, (rank + 1, 0, *range(1, rank + 1), rank + 2)))  # (copies, 1, *sp, F)
        y = tf.concat(rows, axis=1) if batch > 1 else rows[0]
        y = tf.reshape(y, (copies * batch, *y.shape[2:]))
        if conv.activation is not None:
            y = conv.activation(y)
        return rest(y, training=False)

    return run
