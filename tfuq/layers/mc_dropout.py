"""Monte Carlo dropout layers: dropout that can stay on at inference, BatchNorm untouched.

Like ``keras.layers.Dropout`` / ``SpatialDropout2D/3D`` (inverted dropout:
kept units are scaled by ``1 / (1 - rate)``), but the layer also samples when
its ``mc_active`` attribute is true, which
:func:`tfuq.layers.mc_sampling` / :func:`tfuq.layers.set_mc_sampling` switch
for a whole model. The attribute is read when a function is traced (see
:mod:`tfuq.layers.mc_sampling`). With ``training`` false and MC sampling off,
the layer is the identity.

Reference:
    Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016,
    arXiv:1506.02142. Tompson et al., "Efficient object localization using
    convolutional networks", CVPR 2015, arXiv:1411.4280 (spatial dropout).
"""

from __future__ import annotations

import functools
from typing import Any

import keras
from keras import ops

from tfuq.checks import check_seed
from tfuq.layers.mc_sampling import dropout_active
from tfuq.layers.replica_noise import replica_count, replica_rows

__all__ = ["MCDropout", "MCSpatialDropout2D", "MCSpatialDropout3D"]


class _MCDropoutBase(keras.layers.Layer):
    """Shared body; ``_spatial_rank`` None = element-wise, 2/3 = channel-wise."""

    _spatial_rank: int | None = None

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(
                f"The dropout rate is a drop probability. Expected 0 <= rate < 1. Received: rate={rate!r}"
            )
        check_seed(seed)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.mc_active = False
        self.supports_masking = True

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Check the input rank of the spatial variants."""
        if self._spatial_rank is not None and len(input_shape) != self._spatial_rank + 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs (B, *spatial, C) of rank "
                f"{self._spatial_rank + 2}. Received: input_shape={tuple(input_shape)}"
            )

    def noise_shape(self, inputs: Any) -> Any:
        """Shape of the keep/drop mask: the input's, or ``(B, 1, .., 1, C)`` channel-wise."""
        if self._spatial_rank is None:
            return None
        shape = ops.shape(inputs)
        return (shape[0], *([1] * self._spatial_rank), shape[-1])

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Drop units when training or when MC sampling is on; identity otherwise.

        Under a ``tf.distribute`` strategy each replica uses its rows of the
        global batch's masks (:func:`~tfuq.layers.replica_noise.replica_rows`).
        """
        if self.rate == 0 or not dropout_active(self, training):
            return inputs
        if replica_count() == 1:
            return keras.random.dropout(
                inputs, self.rate, noise_shape=self.noise_shape(inputs), seed=self.seed_generator
            )
        shape = self.noise_shape(inputs) or tuple(ops.shape(inputs))
        ones = functools.partial(ops.ones, dtype=inputs.dtype)
        keep = replica_rows(
            lambda s: keras.random.dropout(ones(s), self.rate, seed=self.seed_generator), shape
        )
        return inputs * keep  # x * (1 / (1 - rate)) where kept, as keras.random.dropout(x) computes

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Same as the input shape."""
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfuq")
class MCDropout(_MCDropoutBase):
    """Element-wise dropout active in training and under MC sampling.

    Args:
        rate: Drop probability in [0, 1).
        seed: Seed of the layer's own ``keras.random.SeedGenerator``, default None.
        **kwargs: Base layer arguments.

    Input shape:
        Any; output has the same shape.

    Raises:
        ValueError: ``rate`` outside [0, 1) or a non-int seed.

    Example:
        >>> y = MCDropout(0.2, seed=1)(keras.Input((16,)))
    """


@keras.saving.register_keras_serializable(package="tfuq")
class MCSpatialDropout2D(_MCDropoutBase):
    """Channel dropout for ``(B, H, W, C)`` maps, active in training and under MC sampling.

    Every pixel of a channel shares its keep/drop draw (mask shape
    ``(B, 1, 1, C)``).

    Args:
        rate: Drop probability in [0, 1).
        seed: Seed of the layer's own ``keras.random.SeedGenerator``, default None.
        **kwargs: Base layer arguments.

    Input shape:
        ``(B, H, W, C)``; output has the same shape.

    Raises:
        ValueError: ``rate`` outside [0, 1), a non-int seed or an input of rank != 4.
    """

    _spatial_rank = 2


@keras.saving.register_keras_serializable(package="tfuq")
class MCSpatialDropout3D(_MCDropoutBase):
    """Channel dropout for ``(B, D, H, W, C)`` volumes, active in training and under MC sampling.

    Every voxel of a channel shares its keep/drop draw (mask shape
    ``(B, 1, 1, 1, C)``); the channel dropout of Reinhold et al. and Klaser
    et al.

    Args:
        rate: Drop probability in [0, 1).
        seed: Seed of the layer's own ``keras.random.SeedGenerator``, default None.
        **kwargs: Base layer arguments.

    Input shape:
        ``(B, D, H, W, C)``; output has the same shape.

    Raises:
        ValueError: ``rate`` outside [0, 1), a non-int seed or an input of rank != 5.
    """

    _spatial_rank = 3
