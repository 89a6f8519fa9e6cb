"""Dropout noise of a replica's own rows: the masks one device draws for the global batch.

Under a ``tf.distribute`` strategy every replica runs the same layer with a
``keras.random.SeedGenerator`` in the same state, so a plain
``keras.random`` draw gives every replica the same numbers: the windows of
replica ``r`` get the masks of rows ``0 .. b - 1``, the same masks on all
replicas, where one device draws other masks for every row of the global
batch. :func:`replica_rows` draws the noise of the whole global batch
(``R * b`` rows, the same numbers on every replica) and keeps the replica's
rows ``r * b .. r * b + b - 1`` (the rows it holds, see
:func:`tfuq.training.strategy.replica_batches`). Stateless draws fill a
tensor in row-major order, so those rows are exactly what one device draws
for them: a step on R replicas uses the masks of one device. The cost is R
times the random numbers of the replica's own rows (the convolutions are
unchanged). Without a strategy, or with one replica, the noise is drawn as
it is without this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["replica_count", "replica_rows"]


def replica_count() -> int:
    """Replicas in sync in the current replica context; 1 outside a strategy or when building."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()  # None in a cross-replica context (e.g. building)
    return context.num_replicas_in_sync if context is not None else 1


def replica_rows(draw: Callable[[tuple[Any, ...]], Any], shape: Sequence[Any]) -> Any:
    """``draw(shape)``, taken as this replica's rows of the global batch's draw.

    Args:
        draw: ``draw(shape)`` returns random values of that shape from the
            layer's seed generator (e.g. ``keras.random.uniform``).
        shape: The per-replica noise shape, batch first (ints or scalar tensors).

    Returns:
        The noise, of ``shape``: rows ``r * b .. r * b + b - 1`` of
        ``draw((R * b, *shape[1:]))`` on replica ``r`` of ``R`` (``b = shape[0]``),
        ``draw(shape)`` outside a strategy or with one replica.

    Example:
        >>> u = replica_rows(lambda s: keras.random.uniform(s, seed=gen), (2, 1, 1, 1, 8))  # doctest: +SKIP
    """
    import tensorflow as tf

    replicas = replica_count()
    if replicas == 1:
        return draw(tuple(shape))
    rows = shape[0]
    noise = draw((rows * replicas, *shape[1:]))
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    first = tf.cast(replica, tf.int32) * rows
    return noise[first : first + rows]
