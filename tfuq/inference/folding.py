"""Inference graph: BatchNormalization folded into the convolution before it.

At inference BatchNormalization is a fixed affine map per channel,
``bn(y) = y * s + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)``
(MC sampling keeps it in inference mode too: only dropout samples). After a
convolution ``y = conv_K(x) + b`` it is the convolution with kernel ``K * s``
(per output channel) and bias ``b * s + beta - mean * s``. :func:`fold_batch_norm`
rebuilds a functional network with every such pair merged into one
convolution, so the graph loses two element-wise passes over the tensor per
pair, and TensorFlow's graph optimiser can fuse the bias with a following
ReLU into the oneDNN convolution (CPU). HighRes3DNet's residual blocks have
one foldable pair each (the normalisation before the second convolution;
the first one reads the block input, which the shortcut reads too); the
U-Net's conv -> norm -> act blocks fold entirely.

Every other layer is the original object (same weights, same dropout layers
and seed generators, so MC sampling and seeded masks behave as before), and
a folded pair computes its kernel and bias from the two layers' live
variables at every call, so the folded graph follows the network's weights;
nested functional models (MultiRes branches) are folded too. The folded
network computes the same function up to float round-off
(``tests/inference/test_folding.py``). It is the graph the MC engine
(:mod:`tfuq.inference.mc`) compiles; it is never saved (the model file keeps
the network as trained).
"""

from __future__ import annotations

from typing import Any

import keras

from tfuq.inference.prefix import graph_nodes

__all__ = ["FoldedConv", "batch_norm_affine", "fold_batch_norm"]


def _foldable_conv(layer: Any) -> bool:
    transposed = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
    return (
        isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D))
        and not isinstance(layer, transposed)
        and layer.data_format == "channels_last"
        and layer.activation in (None, keras.activations.linear)
    )


def _last_axis(layer: keras.layers.BatchNormalization, rank: int) -> bool:
    return layer.axis in (-1, rank - 1)


def _pairs(model: keras.Model) -> dict[int, Any]:
    """id(BN node) -> the convolution node it follows (the BN being the convolution's only reader)."""
    nodes = graph_nodes(model) or []
    producer = {id(t): node for node in nodes for t in node.outputs}
    readers: dict[int, int] = {}
    for node in nodes:
        for tensor in node.input_tensors:
            readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    outputs = {id(t) for t in model.outputs}
    pairs = {}
    for node in nodes:
        bn = node.operation
        if not isinstance(bn, keras.layers.BatchNormalization) or len(node.input_tensors) != 1:
            continue
        tensor = node.input_tensors[0]
        conv = producer.get(id(tensor))
        if (
            conv is not None
            and _foldable_conv(conv.operation)
            and readers.get(id(tensor)) == 1
            and id(tensor) not in outputs
            and _last_axis(bn, len(tensor.shape))
        ):
            pairs[id(node)] = conv
    return pairs


def batch_norm_affine(bn: keras.layers.BatchNormalization) -> tuple[Any, Any]:
    """Inference BatchNormalization as ``x * scale + shift`` per channel, float32, from its variables."""
    scale = keras.ops.rsqrt(keras.ops.cast(bn.moving_variance, "float32") + bn.epsilon)
    if bn.scale:
        scale = scale * keras.ops.cast(bn.gamma, "float32")
    shift = -keras.ops.cast(bn.moving_mean, "float32") * scale
    if bn.center:
        shift = shift + keras.ops.cast(bn.beta, "float32")
    return scale, shift


class FoldedConv(keras.layers.Layer):
    """``bn(conv(x))`` as one convolution whose kernel and bias are computed from both layers' variables.

    Reads the live variables at every call (cheap: kernel-sized), so the folded
    graph never goes stale. Internal to the inference graph: not serialisable.
    """

    def __init__(self, conv: Any, bn: keras.layers.BatchNormalization) -> None:
        super().__init__(name=f"{conv.name}_{bn.name}", dtype=conv.dtype_policy)
        self.conv = conv
        self.bn = bn

    def call(self, inputs: Any) -> Any:
        """``bn(conv(inputs))`` in one convolution."""
        scale, shift = batch_norm_affine(self.bn)
        kernel = keras.ops.cast(self.conv.kernel, "float32") * scale
        bias = shift
        if self.conv.use_bias:
            bias = bias + keras.ops.cast(self.conv.bias, "float32") * scale
        dtype = self.compute_dtype
        out = self.conv.convolution_op(keras.ops.cast(inputs, dtype), keras.ops.cast(kernel, dtype))
        return out + keras.ops.cast(bias, dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """The convolution's output shape."""
        return self.conv.compute_output_shape(input_shape)


def fold_batch_norm(model: keras.Model, *, _done: dict[int, keras.Model] | None = None) -> keras.Model:
    """``model`` with every BatchNormalization that follows a convolution merged into it.

    Args:
        model: A built functional Keras model (a tfuq network). Models that are
            not functional graphs, or have nothing to fold, are returned as they
            are.

    Returns:
        keras.Model: a functional model with the same inputs, outputs and
        function (inference mode), sharing every layer but the folded pairs.
    """
    done = {} if _done is None else _done
    if id(model) in done:
        return done[id(model)]
    nodes = graph_nodes(model) or []
    if not nodes or not getattr(model, "inputs", None):
        return model
    nested = {
        id(node.operation): fold_batch_norm(node.operation, _done=done)
        for node in nodes
        if isinstance(node.operation, keras.Model) and node.operation is not model
    }
    pairs = _pairs(model)
    if not pairs and not any(nested.get(id(node.operation)) not in (None, node.operation) for node in nodes):
        done[id(model)] = model
        return model
    convs = {id(pairs[id(node)]): node for node in nodes if id(node) in pairs}  # conv node -> its BN node
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name) for t in model.inputs]
    tensors: dict[int, Any] = {id(old): new for old, new in zip(model.inputs, inputs)}
    for node in nodes:
        if node.is_input or not node.operation:
            continue
        if id(node) in pairs:  # the BN of a folded pair: its output is the folded convolution's
            tensors[id(node.outputs[0])] = tensors[id(node.input_tensors[0])]
            continue
        args, kwargs = node.arguments.fill_in(tensors)
        operation = node.operation
        if id(node) in convs:
            operation = FoldedConv(operation, convs[id(node)].operation)
        elif id(operation) in nested:
            operation = nested[id(operation)]
        outputs = operation(*args, **kwargs)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(old)] = new
    outputs = keras.tree.pack_sequence_as(model._outputs_struct, [tensors[id(t)] for t in model.outputs])
    folded = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)
    done[id(model)] = folded
    return folded
