"""Validation means over the windows of the global batch (one process; a stand-in replica context)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfuq.training.replica_means import batch_windows, record_window_means


def _trackers() -> dict[str, keras.metrics.Mean]:
    return {"loss": keras.metrics.Mean(name="loss"), "nll": keras.metrics.Mean(name="nll")}


def test_the_mean_is_over_windows_and_an_empty_batch_counts_for_nothing() -> None:
    trackers = _trackers()
    record_window_means(trackers, {"loss": 1.0, "nll": 2.0, "extra": 9.0}, batch_windows(np.zeros((1, 3))))
    record_window_means(trackers, {"loss": 4.0, "nll": 2.0}, batch_windows((np.zeros((3, 2)), np.zeros(3))))
    record_window_means(trackers, {"loss": np.nan, "nll": np.nan}, batch_windows(np.zeros((0, 3))))
    assert float(trackers["loss"].result()) == pytest.approx((1.0 + 3 * 4.0) / 4)
    assert float(trackers["nll"].result()) == pytest.approx(2.0)


class _TwoReplicas:
    """Replica 0 of two, whose all-reduce adds the other replica's values."""

    num_replicas_in_sync = 2

    def __init__(self, other: Any) -> None:
        self.other = other

    def all_reduce(self, op: tf.distribute.ReduceOp, value: Any) -> Any:
        assert op == tf.distribute.ReduceOp.SUM
        return tf.nest.map_structure(lambda a, b: a + b, value, self.other)


def test_every_replica_records_the_global_batch_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    # the other replica: 3 windows with mean loss 4 and nll 1 (sums 12 and 3)
    other = ({"loss": tf.constant(12.0), "nll": tf.constant(3.0)}, tf.constant(3.0))
    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: _TwoReplicas(other))
    trackers = _trackers()
    record_window_means(trackers, {"loss": 1.0, "nll": 1.0}, tf.constant(1.0))
    assert float(trackers["loss"].result()) == pytest.approx(13.0 / 4)  # not this replica's 1.0
    assert float(trackers["nll"].result()) == pytest.approx(1.0)
