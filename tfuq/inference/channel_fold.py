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
activation). A BatchNormalization right after the convolution and a ReLU
after that are absorbed too (inference BN is an affine map per channel).
When the rest of the suffix is pointwise -- 1^3 convolutions, normalisation,
activations, a 1^3 head, as in HighRes3DNet's and MultiRes's head placement
-- and the convolution is 1^3 as well, the whole suffix is per voxel and runs
on chunks of voxels as matrix products whose ``(voxels, T * F)``
intermediate stays in the CPU caches; otherwise the deterministic layers
after the convolution run on the ``(T * B, ...)`` result as before.

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

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfuq.inference.folding import FoldedConv, batch_norm_affine
from tfuq.inference.prefix import graph_nodes
from tfuq.layers import (
    DistributionHead,
    MCSpatialDropout2D,
    MCSpatialDropout3D,
    iter_layers,
    stochastic_layers,
)

__all__ = ["fold_channel_dropout"]

#: Folded suffix: (cut tensor (B, *spatial, C), copies) -> the suffix outputs for the (copies * B) rows.
FoldedSuffix = Callable[[tf.Tensor, int], Any]


def _consumers(model: keras.Model) -> dict[int, list[Any]]:
    """id(tensor) -> the nodes of ``model``'s graph reading it."""
    found: dict[int, list[Any]] = {}
    for node in graph_nodes(model) or []:
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
        and all(int(s) == 1 for s in layer.strides)
    )


def _is_relu(layer: Any) -> bool:
    """A plain ReLU (``keras.layers.ReLU()`` with default arguments or ``Activation("relu")``)."""
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and float(layer.negative_slope) == 0 and float(layer.threshold) == 0
    return isinstance(layer, keras.layers.Activation) and getattr(layer.activation, "__name__", "") == "relu"


def _is_pointwise(layer: Any) -> bool:
    """A layer that maps every voxel on its own (so the voxels may be laid out in any spatial order)."""
    if isinstance(layer, keras.layers.InputLayer):
        return True
    if isinstance(layer, DistributionHead):
        return layer.kernel_size == 1
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D)):
        return all(int(k) == 1 for k in layer.kernel_size) and all(int(s) == 1 for s in layer.strides)
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer.axis in (-1, len(layer.input.shape) - 1)
    return isinstance(
        layer, (keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.ELU)
    )


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the folded convolution absorbs and where the rest of the suffix starts."""

    dropout: Any
    conv: Any
    batch_norm: Any | None
    relu: bool
    rest: keras.Model
    pointwise: tuple[Any, ...]


def _plan(suffix: keras.Model) -> _Plan | None:
    if len(suffix.inputs) != 1:
        return None
    consumers = _consumers(suffix)
    node = _only_consumer(consumers, suffix.inputs[0])
    dropout = node.operation if node is not None else None
    if not isinstance(dropout, (MCSpatialDropout2D, MCSpatialDropout3D)) or dropout.rate <= 0:
        return None
    node = _only_consumer(consumers, node.outputs[0])
    conv = node.operation if node is not None else None
    batch_norm, relu = None, False
    if isinstance(conv, FoldedConv):  # conv -> BN already merged by the inference graph
        conv, batch_norm = conv.conv, conv.bn
    if not _foldable_conv(conv):
        return None
    nxt = _only_consumer(consumers, node.outputs[0])
    if (
        batch_norm is None
        and conv.activation in (None, keras.activations.linear)
        and nxt is not None
        and isinstance(nxt.operation, keras.layers.BatchNormalization)
        and nxt.operation.axis in (-1, len(node.outputs[0].shape) - 1)
    ):
        batch_norm, node = nxt.operation, nxt
        nxt = _only_consumer(consumers, node.outputs[0])
    if (batch_norm is not None or conv.activation in (None, keras.activations.linear)) and (
        nxt is not None and _is_relu(nxt.operation)
    ):
        relu, node = True, nxt
    try:
        rest = keras.Model(node.outputs[0], suffix.outputs, name=f"{suffix.name}_rest")
    except (ValueError, TypeError):  # the rest reads another tensor of the suffix
        return None
    inside = {id(layer) for layer in iter_layers(rest)}
    if any(id(layer) in inside for layer in stochastic_layers(suffix)):
        return None
    return _Plan(dropout, conv, batch_norm, relu, rest, _pointwise_chain(rest))


def _pointwise_chain(rest: keras.Model) -> tuple[Any, ...]:
    """The rest's layers in order when it is a chain of pointwise layers (else ``()``)."""
    nodes = [
        node for node in graph_nodes(rest) or [] if not isinstance(node.operation, keras.layers.InputLayer)
    ]
    tensor = rest.inputs[0]
    for node in nodes:
        reads = list(node.input_tensors)
        if len(reads) != 1 or reads[0] is not tensor or not _is_pointwise(node.operation):
            return ()
        tensor = node.outputs[0]
    return tuple(node.operation for node in nodes) if nodes and tensor is rest.outputs[0] else ()


def fold_channel_dropout(suffix: keras.Model) -> FoldedSuffix | None:
    """The suffix's T passes with channel dropout folded into the next convolution, or None.

    The convolution also absorbs a BatchNormalization right after it (its
    inference affine map goes into the kernel and bias) and a plain ReLU after
    that, so the T passes are one ``conv + bias + relu`` (fused by TensorFlow's
    graph optimiser on CPU). When the rest of the suffix is pointwise (1^3
    convolutions, normalisation, activations, a 1^3 head) it runs on the
    ``(1, X, Y, Z * T, F)`` view of the result, avoiding a transpose of the
    largest tensor; otherwise the result is transposed to ``(T * B, ...)``.

    Args:
        suffix: The stochastic suffix of :func:`tfuq.inference.prefix.split_at_stochastic`.

    Returns:
        A callable ``(h, copies)`` -> the suffix outputs for ``tile(h, copies)``
        (rows ``t * B + b``) with the dropout masks drawn as the naive path
        draws them; to be called (traced) with MC sampling on. None when the
        pattern of the module notes does not hold.
    """
    plan = _plan(suffix)
    if plan is None:
        return None
    conv, rank = plan.conv, len(plan.conv.kernel.shape) - 2

    def run(h: tf.Tensor, copies: int) -> Any:
        batch, channels = int(h.shape[0]), int(h.shape[-1])
        noise = (copies * batch, *([1] * rank), channels)
        dtype = conv.compute_dtype
        ones = tf.ones(noise, dtype)
        masks = keras.random.dropout(
            ones, plan.dropout.rate, noise_shape=noise, seed=plan.dropout.seed_generator
        )
        masks = tf.cast(tf.reshape(masks, (copies, batch, channels)), tf.float32)
        kernel = tf.cast(conv.kernel, tf.float32)
        filters = int(kernel.shape[-1])
        bias = tf.cast(conv.bias, tf.float32) if conv.use_bias else tf.zeros((filters,), tf.float32)
        if plan.batch_norm is not None:
            scale, shift = batch_norm_affine(plan.batch_norm)
            kernel, bias = kernel * scale, bias * scale + shift
        bias = tf.cast(tf.tile(bias, [copies]), dtype)
        h = tf.cast(h, dtype)
        voxelwise = bool(plan.pointwise) and all(int(k) == 1 for k in conv.kernel_size)
        rows = []
        for b in range(batch):
            # (*k, C, F) x (copies, C) -> (*k, C, copies * F): copy t's kernel is K, rows scaled by m_t.
            scaled = kernel[..., None, :] * tf.reshape(tf.transpose(masks[:, b]), (channels, copies, 1))
            stacked = tf.cast(tf.reshape(scaled, (*kernel.shape[:-1], copies * filters)), dtype)
            if voxelwise:
                out = _voxelwise(plan, h[b], stacked, bias, copies)
            else:
                out = _convolved(plan, h[b : b + 1], stacked, bias, copies)
            rows.append(tf.transpose(out, (rank, *range(rank), rank + 1))[:, None])  # (copies, 1, *sp, F|P)
        y = tf.concat(rows, axis=1) if batch > 1 else rows[0]
        y = tf.reshape(y, (copies * batch, *y.shape[2:]))
        return y if plan.pointwise else plan.rest(y, training=False)

    return run


def _activate(plan: _Plan, y: tf.Tensor) -> tf.Tensor:
    """The activation the folded convolution absorbed (ReLU after BN, or the convolution's own)."""
    if plan.relu:
        return tf.nn.relu(y)
    if plan.batch_norm is None and plan.conv.activation is not None:
        return plan.conv.activation(y)
    return y


def _convolved(plan: _Plan, h: tf.Tensor, stacked: tf.Tensor, bias: tf.Tensor, copies: int) -> tf.Tensor:
    """One window ``(1, *sp, C)`` through the stacked convolution -> ``(*sp, copies, F or P)``."""
    y = _activate(plan, tf.nn.bias_add(plan.conv.convolution_op(h, stacked), bias))
    spatial = tuple(int(d) for d in y.shape[1:-1])
    filters = int(y.shape[-1]) // copies
    if not plan.pointwise:
        return tf.reshape(y, (*spatial, copies, filters))
    out = tf.reshape(y, (1, *spatial[:-1], spatial[-1] * copies, filters))  # a view: no copy
    for layer in plan.pointwise:  # the layers, not the model: its input shape is the window's
        out = layer(out, training=False)
    return tf.reshape(out, (*spatial, copies, out.shape[-1]))


#: Bytes of the ``(voxels, copies * F)`` block a voxel chunk makes (kept in the CPU caches).
_CHUNK_BYTES = 4 << 20


def _voxelwise(plan: _Plan, h: tf.Tensor, stacked: tf.Tensor, bias: tf.Tensor, copies: int) -> tf.Tensor:
    """One window ``(*sp, C)`` through a 1^3 stacked convolution and a pointwise rest, in voxel chunks.

    Everything after the cut is per voxel, so the voxels go through in chunks
    whose ``(n, copies * F)`` intermediate stays in the caches instead of
    writing and re-reading the whole ``(*sp, copies * F)`` tensor.

    Returns:
        ``(*sp, copies, P)``.
    """
    spatial = tuple(int(d) for d in h.shape[:-1])
    channels, width = int(h.shape[-1]), int(stacked.shape[-1])
    rows = tf.reshape(h, (-1, channels))
    matrix = tf.reshape(stacked, (channels, width))
    voxels = int(rows.shape[0])
    per_chunk = max(1, min(voxels, _CHUNK_BYTES // (4 * width)))
    sizes = [per_chunk] * (voxels // per_chunk) + ([voxels % per_chunk] if voxels % per_chunk else [])
    outs = []
    for chunk in tf.split(rows, sizes):
        out = _activate(plan, tf.nn.bias_add(tf.matmul(chunk, matrix), bias))
        out = tf.reshape(out, (int(chunk.shape[0]) * copies, width // copies))  # one row per voxel and copy
        for layer in plan.pointwise:
            out = _rowwise(layer, out)
        outs.append(tf.reshape(out, (int(chunk.shape[0]), copies, out.shape[-1])))
    return tf.reshape(tf.concat(outs, 0), (*spatial, copies, outs[0].shape[-1]))


def _rowwise(layer: Any, rows: tf.Tensor) -> tf.Tensor:
    """A pointwise layer on ``(n, C)`` rows: a 1^3 convolution as a matrix product, any other layer as is."""
    if isinstance(layer, DistributionHead):
        layer = layer.conv
    if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D)):
        return layer(rows, training=False)
    dtype = layer.compute_dtype
    kernel = tf.cast(tf.reshape(layer.kernel, layer.kernel.shape[-2:]), dtype)
    if (
        int(kernel.shape[-1]) <= 8
    ):  # a head: (P, n) = K^T rows^T is ~2x faster than the skinny (n, C) x (C, P)
        out = tf.transpose(tf.matmul(kernel, tf.cast(rows, dtype), transpose_a=True, transpose_b=True))
    else:
        out = tf.matmul(tf.cast(rows, dtype), kernel)
    if layer.use_bias:
        out = tf.nn.bias_add(out, tf.cast(layer.bias, dtype))
    return layer.activation(out) if layer.activation is not None else out
