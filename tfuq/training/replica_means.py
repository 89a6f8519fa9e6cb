"""Validation running means over the windows of the global batch, on every replica.

Keras ``Mean`` trackers under a ``tf.distribute`` strategy hold one running
mean per replica, and the loops report one replica's (Keras ``evaluate``
under ``MirroredStrategy``) or the mean of the replicas' results; neither is
the one-device value in general (measured: half and twice it). Validation
steps therefore sum their terms over the replicas first and give every
replica's trackers the global batch's mean, weighted by its number of
windows: the result is the mean over the validation windows, however they
are batched and split, and any replica's result is the one-device value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

__all__ = ["batch_windows", "record_window_means"]


def batch_windows(batch: Any) -> tf.Tensor:
    """Number of windows (rows) of a batch, as a float32 scalar (the first tensor's axis 0)."""
    return tf.cast(tf.shape(tf.nest.flatten(batch)[0])[0], tf.float32)


def record_window_means(
    trackers: Mapping[str, keras.metrics.Mean], terms: Mapping[str, tf.Tensor], windows: tf.Tensor
) -> None:
    """Add a validation batch's terms to the trackers, as the global batch's window-weighted means.

    Args:
        trackers: ``Mean`` metrics keyed by term name (every name must be in ``terms``).
        terms: Scalars, each the mean over this replica's windows.
        windows: This replica's number of windows (0 for the empty batch
            ``tf.distribute`` may hand a replica at the end of uneven data;
            such a batch counts for nothing).

    Example:
        >>> record_window_means(trackers, trainer.loss_terms(x, y, False), batch_windows(y))  # doctest: +SKIP
    """
    sums = {name: tf.where(windows > 0, tf.cast(terms[name], tf.float32), 0.0) * windows for name in trackers}
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        sums, windows = context.all_reduce(tf.distribute.ReduceOp.SUM, (sums, windows))
    for name, tracker in trackers.items():
        tracker.update_state(sums[name] / tf.maximum(windows, 1.0), sample_weight=windows)
