"""L1 and L2 baselines on the loc channel of a head output, with mask and border.

These are the deterministic baselines (and the ``"point"`` family's loss):
they read only channel 0 (``loc``) of the head output, so the same model and
target layout serve both probabilistic and point training.

Mathematical details:
    per voxel, L1: ``|y - mu|``; L2: ``(y - mu)^2``; reduced with
    :func:`tfuq.losses.reduction.masked_mean` (mask, border) per sample, then
    averaged over the batch.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfuq.losses.reduction import check_border, masked_mean, split_target, voxel_target

__all__ = ["L1Loss", "L2Loss", "l1", "l2", "residual_map"]


def residual_map(params: Any, y: Any) -> tf.Tensor:
    """Per-voxel residual ``y - loc`` with ``loc = params[..., 0]``.

    Args:
        params: Head output ``(B, *spatial, P)``, P >= 1 (any family).
        y: Target ``(B, *spatial)`` or ``(B, *spatial, 1)``.

    Returns:
        tf.Tensor: ``(B, *spatial)`` in the dtype of ``params``.

    Raises:
        ValueError: shapes that do not match.
    """
    params = tf.convert_to_tensor(params)
    if not params.dtype.is_floating:
        params = tf.cast(params, tf.float32)
    y = tf.cast(voxel_target(y, params.shape.rank - 1), params.dtype)
    if not y.shape.is_compatible_with(params.shape[:-1]):
        raise ValueError(
            "The target must have the voxel shape of the head output. Expected shape "
            f"{tuple(params.shape[:-1])}. Received: y with shape {tuple(y.shape)}"
        )
    return y - params[..., 0]


def l1(params: Any, y: Any, mask: Any = None, border: int = 0) -> tf.Tensor:
    """Mean absolute error of the loc channel over masked, border-cropped voxels.

    Args:
        params: Head output ``(B, *spatial, P)``; channel 0 is the prediction.
        y: Target ``(B, *spatial)`` or ``(B, *spatial, 1)``.
        mask: Optional voxel weights of the target's shape.
        border: Voxels cropped from every spatial side, default 0.

    Returns:
        tf.Tensor: scalar.

    Example:
        >>> float(l1(tf.ones((1, 4, 4, 1)), tf.zeros((1, 4, 4))))
        1.0
    """
    return tf.reduce_mean(masked_mean(tf.abs(residual_map(params, y)), mask, border))


def l2(params: Any, y: Any, mask: Any = None, border: int = 0) -> tf.Tensor:
    """Mean squared error of the loc channel over masked, border-cropped voxels.

    Args:
        params: Head output ``(B, *spatial, P)``; channel 0 is the prediction.
        y: Target ``(B, *spatial)`` or ``(B, *spatial, 1)``.
        mask: Optional voxel weights of the target's shape.
        border: Voxels cropped from every spatial side, default 0.

    Returns:
        tf.Tensor: scalar.
    """
    return tf.reduce_mean(masked_mean(tf.square(residual_map(params, y)), mask, border))


class _PointwiseLoss(keras.losses.Loss):
    """Shared body of :class:`L1Loss` and :class:`L2Loss`."""

    def __init__(
        self,
        border: int = 0,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.border = check_border(border)

    def _voxel_loss(self, residual: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def call(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        """Per-sample loss ``(B,)``."""
        target, mask = split_target(y_true, y_pred.shape.rank)
        return masked_mean(self._voxel_loss(residual_map(y_pred, target)), mask, self.border)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {**super().get_config(), "border": self.border, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="tfuq")
class L1Loss(_PointwiseLoss):
    """Keras loss: L1 of the loc channel; ``y_true`` = [target] or [target, mask] channels.

    Args:
        border: Voxels cropped from every spatial side, default 0.
        reduction: Keras reduction over the batch, default ``"sum_over_batch_size"``.
        name: Loss name, default ``"l1"``.
        dtype: Computation dtype, default Keras ``floatx``.

    Example:
        >>> model.compile(optimizer="adam", loss=L1Loss(border=4))
    """

    def __init__(
        self,
        border: int = 0,
        reduction: str | None = "sum_over_batch_size",
        name: str = "l1",
        dtype: Any = None,
    ) -> None:
        super().__init__(border=border, reduction=reduction, name=name, dtype=dtype)

    def _voxel_loss(self, residual: tf.Tensor) -> tf.Tensor:
        return tf.abs(residual)


@keras.saving.register_keras_serializable(package="tfuq")
class L2Loss(_PointwiseLoss):
    """Keras loss: squared error of the loc channel; ``y_true`` as in :class:`L1Loss`.

    Args:
        border: Voxels cropped from every spatial side, default 0.
        reduction: Keras reduction over the batch, default ``"sum_over_batch_size"``.
        name: Loss name, default ``"l2"``.
        dtype: Computation dtype, default Keras ``floatx``.
    """

    def __init__(
        self,
        border: int = 0,
        reduction: str | None = "sum_over_batch_size",
        name: str = "l2",
        dtype: Any = None,
    ) -> None:
        super().__init__(border=border, reduction=reduction, name=name, dtype=dtype)

    def _voxel_loss(self, residual: tf.Tensor) -> tf.Tensor:
        return tf.square(residual)
