"""TensorBoard summaries of a training run: scalars and mid-slice images.

Scalars: every per-step term (and the learning rate) every
``[TRAINING] tensorboard_every_n`` steps, validation terms after each
validation. Images: the middle slice (last spatial axis) of the input, the
target, the predicted mean and the predicted standard deviation of one fixed
window, each rescaled to [0, 1], every ``image_every_n`` steps and at the end.
Written to ``<model_dir>/logs/tensorboard`` by the chief only.

The summaries are written with ``tf.summary.write`` and the metadata of
TensorBoard's ``scalars`` and ``images`` plugins, in the format those
plugins read, so training does not need the ``tensorboard`` package (only
viewing them does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfuq.distributions import mean as dist_mean
from tfuq.distributions import stddev as dist_stddev
from tfuq.training.callbacks import StepClock, current_lr, scalar_logs

__all__ = ["TensorBoardLog", "mid_slice", "prediction_images", "to_image", "write_image", "write_scalar"]


def _metadata(plugin: str) -> Any:
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    return meta


def write_scalar(tag: str, value: float) -> None:
    """Write a TensorBoard scalar at the default writer's step (inside ``writer.as_default(step)``)."""
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_metadata("scalars"))


def write_image(tag: str, image: np.ndarray) -> None:
    """Write a TensorBoard image from ``(1, H, W, 1)`` values in [0, 1] (PNG encoded)."""
    pixels = np.clip(np.round(np.asarray(image)[0] * 255.0), 0, 255).astype(np.uint8)
    height, width = pixels.shape[:2]
    payload = tf.stack([tf.as_string(width), tf.as_string(height), tf.image.encode_png(pixels)])
    tf.summary.write(tag, payload, metadata=_metadata("images"))


def mid_slice(window: np.ndarray) -> np.ndarray:
    """The middle slice of a single-channel window: ``(X, Y, Z)`` -> ``(X, Y)``; ``(X, Y)`` unchanged.

    Raises:
        ValueError: a window that is not 2D or 3D.

    Example:
        >>> mid_slice(np.arange(8).reshape(2, 2, 2))[0, 0]
        1
    """
    array = np.asarray(window)
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        return array[:, :, array.shape[2] // 2]
    raise ValueError(f"Expected a 2D or 3D window. Received: shape={array.shape}")


def to_image(plane: np.ndarray) -> np.ndarray:
    """Rescale a 2D plane to [0, 1] (constant planes -> 0) as ``(1, X, Y, 1)`` float32 for TensorBoard.

    Example:
        >>> to_image(np.array([[0.0, 2.0]])).ravel().tolist()
        [0.0, 1.0]
    """
    plane = np.nan_to_num(np.asarray(plane, dtype=np.float64))
    low, high = plane.min(), plane.max()
    scaled = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
    return scaled.astype(np.float32)[None, :, :, None]


def prediction_images(network: keras.Model, family: str, batch: tuple[Any, Any]) -> dict[str, np.ndarray]:
    """Mid slices of the first window of ``batch``: input, target, mean and (probabilistic) std.

    Args:
        network: Maps the inputs to head parameters ``(B, *spatial, P)``.
        family: Its distribution family (``"point"``: no std image).
        batch: ``(inputs, targets)`` as from the training pipeline (MultiRes
            inputs: a tuple, the finest level is shown).

    Returns:
        Name -> ``(X, Y)`` plane.
    """
    inputs, targets = batch
    params = keras.ops.convert_to_numpy(network(inputs, training=False)).astype(np.float64)
    first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    planes = {
        "input": mid_slice(np.asarray(first)[0, ..., 0]),
        "target": mid_slice(np.asarray(targets)[0, ..., 0]),
        "mean": mid_slice(np.asarray(dist_mean(family, params[:1]))[0]),
    }
    if family != "point":
        planes["std"] = mid_slice(np.asarray(dist_stddev(family, params[:1]))[0])
    return planes


class TensorBoardLog(keras.callbacks.Callback):
    """Scalars every ``every_n`` steps, validation scalars, images every ``image_every_n`` steps.

    Args:
        clock: The shared step clock.
        log_dir: Summary folder.
        every_n: Steps between scalar summaries (0 = off).
        images: ``() -> {name: plane}`` (e.g. a closure over
            :func:`prediction_images`), or None for no images.
        image_every_n: Steps between image summaries (0 = only at the end).
    """

    def __init__(
        self,
        clock: StepClock,
        log_dir: Path,
        every_n: int,
        *,
        images: Callable[[], Mapping[str, np.ndarray]] | None = None,
        image_every_n: int = 0,
    ) -> None:
        super().__init__()
        self.clock, self.every_n, self.images, self.image_every_n = (
            clock,
            int(every_n),
            images,
            int(image_every_n),
        )
        self.writer = tf.summary.create_file_writer(str(log_dir))

    def _scalars(self, values: Mapping[str, float], prefix: str = "") -> None:
        with self.writer.as_default(step=self.clock.step):
            for key, value in values.items():
                write_scalar(prefix + key, value)

    def _images(self) -> None:
        if self.images is None:
            return
        with self.writer.as_default(step=self.clock.step):
            for name, plane in self.images().items():
                write_image(f"mid_slice/{name}", to_image(plane))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each training step."""
        step = self.clock.step
        if self.every_n and step % self.every_n == 0:
            values = scalar_logs(logs)
            lr = current_lr(self.model)
            if lr is not None:
                values["lr"] = lr
            self._scalars(values, "train/")
        if self.image_every_n and step % self.image_every_n == 0:
            self._images()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras after each epoch (and its validation)."""
        values = {k[4:]: v for k, v in scalar_logs(logs).items() if k.startswith("val_")}
        if values:
            self._scalars(values, "validation/")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Called by Keras when ``fit`` ends."""
        if not self.image_every_n or self.clock.step % self.image_every_n:
            self._images()
        self.writer.flush()
