"""Dilated convolutions as one native op (no space-to-batch round trip).

Keras's TensorFlow backend computes a dilated convolution through
``tf.nn.convolution``, which on CPU rewrites it as ``SpaceToBatchND -> conv
-> BatchToSpaceND``: two full copies of the tensor around a convolution on
``d^3`` smaller blocks. The ``Conv2D`` / ``Conv3D`` ops themselves take a
``dilations`` attribute, which oneDNN (CPU) and cuDNN (GPU) run directly,
forward and gradient. :class:`DilatedConv2D` / :class:`DilatedConv3D` are
Keras's convolutions with that one change: same weights, same config
(``dilation_rate`` etc.), same output up to float32 round-off.

HighRes3DNet's dilation-2 and -4 stacks use them (``tfuq.networks.blocks``);
``tfuq bench network`` reports the forward throughput they give. On another
Keras backend, with ``channels_first``, groups or strides, they fall back to
Keras's own op.

Reference:
    Yu & Koltun, "Multi-scale context aggregation by dilated convolutions",
    ICLR 2016, arXiv:1511.07122 (the operation). Li et al., "On the
    compactness, efficiency, and representation of 3D convolutional networks:
    brain parcellation as a pretext task", IPMI 2017 (HighRes3DNet's use).
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["DilatedConv2D", "DilatedConv3D", "native_dilated_conv"]


def native_dilated_conv(layer: keras.layers.Layer, inputs: Any, kernel: Any) -> Any | None:
    """The convolution of ``layer`` as one TensorFlow op, or None when Keras's own op must be used.

    Args:
        layer: A ``keras.layers.Conv2D`` / ``Conv3D`` (stride 1, channels last,
            one group).
        inputs: ``(B, *spatial, C_in)``.
        kernel: ``(*kernel_size, C_in, C_out)``.

    Returns:
        ``(B, *spatial', C_out)`` from ``tf.nn.conv2d`` / ``tf.nn.conv3d`` with
        the layer's dilations, or None (another backend, ``channels_first``,
        strides or groups, or no dilation: nothing to gain).
    """
    if keras.backend.backend() != "tensorflow":
        return None
    dilations = tuple(int(d) for d in layer.dilation_rate)
    if (
        layer.data_format != "channels_last"
        or getattr(layer, "groups", 1) != 1
        or any(int(s) != 1 for s in layer.strides)
        or all(d == 1 for d in dilations)
    ):
        return None
    import tensorflow as tf

    op = tf.nn.conv3d if len(dilations) == 3 else tf.nn.conv2d
    ones = [1] * (len(dilations) + 2)
    return op(inputs, kernel, strides=ones, padding=layer.padding.upper(), dilations=[1, *dilations, 1])


@keras.saving.register_keras_serializable(package="tfuq")
class DilatedConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose dilated convolution is one native op (see the module notes).

    Args:
        *args: As ``keras.layers.Conv2D``.
        **kwargs: As ``keras.layers.Conv2D``.

    Input shape:
        ``(B, H, W, C_in)``; output ``(B, H', W', filters)`` as Conv2D.

    Example:
        >>> DilatedConv2D(4, 3, dilation_rate=2, padding="same")(keras.Input((16, 16, 2))).shape
        (None, 16, 16, 4)
    """

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        """Native dilated op when it applies, else Keras's."""
        out = native_dilated_conv(self, inputs, kernel)
        return super().convolution_op(inputs, kernel) if out is None else out


@keras.saving.register_keras_serializable(package="tfuq")
class DilatedConv3D(keras.layers.Conv3D):
    """``keras.layers.Conv3D`` whose dilated convolution is one native op (see the module notes).

    Args:
        *args: As ``keras.layers.Conv3D``.
        **kwargs: As ``keras.layers.Conv3D``.

    Input shape:
        ``(B, X, Y, Z, C_in)``; output ``(B, X', Y', Z', filters)`` as Conv3D.

    Example:
        >>> DilatedConv3D(4, 3, dilation_rate=2, padding="same")(keras.Input((8, 8, 8, 2))).shape
        (None, 8, 8, 8, 4)
    """

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        """Native dilated op when it applies, else Keras's."""
        out = native_dilated_conv(self, inputs, kernel)
        return super().convolution_op(inputs, kernel) if out is None else out
