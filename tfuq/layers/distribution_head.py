"""Distribution head: a 1x1(x1) convolution to unconstrained distribution parameters.

``tfp.layers`` cannot live in a Keras 3 functional model, so the head only
outputs ``params_size(family)`` unconstrained channels; losses and inference
turn them into a distribution with :func:`tfuq.distributions.make_distribution`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from tfuq.distributions import FAMILIES, SCALE_EPS, check_family, params_size

__all__ = ["DistributionHead"]

#: Spatial rank -> convolution layer of the head.
_CONV_LAYERS: dict[int, type[keras.layers.Layer]] = {
    2: keras.layers.Conv2D,
    3: keras.layers.Conv3D,
}


def _raw_scale(scale: float) -> float:
    """Inverse of ``softplus(raw) + SCALE_EPS``."""
    return math.log(math.expm1(scale - SCALE_EPS))


@keras.saving.register_keras_serializable(package="tfuq")
class DistributionHead(keras.layers.Layer):
    """Convolution to the unconstrained parameter channels of a distribution family.

    The bias starts at loc 0, raw scale such that ``softplus(raw) + eps =
    init_scale`` (in normalised target units) and raw power 0 (beta = 2,
    a Gaussian, by the family's shift), so the first likelihood is moderate.
    The head computes in float32 by default, even under a mixed-precision
    policy, so that scales and likelihoods keep their precision; pass
    ``dtype`` to override.

    Args:
        family: One of ``tfuq.distributions.FAMILIES`` (``"normal"``,
            ``"laplace"``, ``"generalized_normal"``, ``"point"``).
        rank: Spatial rank, 2 or 3. Default 3.
        kernel_size: Odd int >= 1, the convolution's size per axis ("same"
            padding). Default 1.
        init_scale: Initial scale (sigma, b or alpha) when the features are
            0, > SCALE_EPS. Default 0.5.
        kernel_initializer: Keras initializer of the kernel. Default None:
            ``VarianceScaling(0.1, "fan_in", "truncated_normal")``, small
            enough that on unit-variance features the initial scales stay
            within a factor ~2-3 of ``init_scale`` and beta near 2.
        **kwargs: Base layer arguments (``name``, ``dtype``; dtype defaults
            to ``"float32"``).

    Input shape:
        ``(B, *spatial, C)`` with ``rank`` spatial axes.

    Output shape:
        ``(B, *spatial, params_size(family))``: channel order as in
        ``tfuq.distributions.FAMILIES[family]`` (loc, scale, power).

    Raises:
        ValueError: unknown family, bad rank, kernel size or init_scale, or an
            input of the wrong rank.

    Example:
        >>> x = keras.Input((32, 32, 32, 16))
        >>> params = DistributionHead("generalized_normal", rank=3)(x)
        >>> params.shape
        (None, 32, 32, 32, 3)
    """

    def __init__(
        self,
        family: str,
        rank: int = 3,
        kernel_size: int = 1,
        init_scale: float = 0.5,
        kernel_initializer: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.family = check_family(family)
        if rank not in _CONV_LAYERS:
            raise ValueError(
                f"DistributionHead convolves 2D or 3D images. Expected rank in "
                f"{sorted(_CONV_LAYERS)}. Received: rank={rank!r}"
            )
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
            raise ValueError(f"Expected an int kernel_size. Received: kernel_size={kernel_size!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Expected an odd kernel_size >= 1. Received: kernel_size={kernel_size!r}")
        if not float(init_scale) > SCALE_EPS:
            raise ValueError(f"Expected init_scale > {SCALE_EPS}. Received: init_scale={init_scale!r}")
        self.rank = rank
        self.kernel_size = kernel_size
        self.init_scale = float(init_scale)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.VarianceScaling(
                scale=0.1, mode="fan_in", distribution="truncated_normal"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = _CONV_LAYERS[rank](
            filters=params_size(family),
            kernel_size=kernel_size,
            padding="same",
            kernel_initializer=self.kernel_initializer,
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv",
        )

    def initial_bias(self) -> np.ndarray:
        """Bias the head starts from: ``[0, raw(init_scale), 0]`` per the family's channels."""
        values = {"loc": 0.0, "scale": _raw_scale(self.init_scale), "power": 0.0}
        return np.array([values[name] for name in FAMILIES[self.family]], dtype="float64")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Build the convolution and set its initial bias."""
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"DistributionHead(rank={self.rank}) expects inputs (B, *spatial, C) of rank "
                f"{self.rank + 2}. Received: input_shape={tuple(input_shape)}"
            )
        if input_shape[-1] is None:
            raise ValueError(
                f"DistributionHead needs a known channel axis. Received: input_shape={tuple(input_shape)}"
            )
        self.conv.build(input_shape)
        self.conv.bias.assign(self.initial_bias().astype(self.conv.bias.dtype))

    def call(self, inputs: Any) -> Any:
        """Return the unconstrained parameter channels."""
        return self.conv(inputs)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``input_shape[:-1] + (params_size(family),)``."""
        return (*tuple(input_shape)[:-1], params_size(self.family))

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument."""
        return {
            **super().get_config(),
            "family": self.family,
            "rank": self.rank,
            "kernel_size": self.kernel_size,
            "init_scale": self.init_scale,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
