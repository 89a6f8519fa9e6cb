"""Concrete dropout: a learned dropout rate on the input of a wrapped Dense/Conv layer.

``ConcreteDropout(layer)`` (element-wise) and ``ConcreteSpatialDropout2D/3D
(layer)`` (channel-wise) drop the *input* of ``layer`` with a relaxed
Bernoulli mask whose drop probability p is a trainable weight, and add the
variational regulariser of ``layer``'s kernel and of p with ``add_loss``.
Dropout is active when ``training`` is true or when MC sampling is switched
on (``mc_active``, see :mod:`tfuq.layers.mc_sampling`); otherwise the wrapper
is exactly ``layer``.

Mathematical details:
    p = sigmoid(p_logit) is the DROP probability. With u ~ U(0, 1) and
    temperature t, the relaxed drop mask is
    ``z = sigmoid((log p - log(1 - p) + log u - log(1 - u)) / t)``
    (``log p - log(1 - p) = p_logit`` exactly, so no epsilon is needed on p),
    and the input becomes ``x * (1 - z) / (1 - p)``. The noise has the
    input's shape (dense variant) or ``(B, 1, .., 1, C)`` (spatial variants).

    Regulariser (Gal et al. 2017 eq. 3; Zhao et al. eq. 4-6), with W the
    kernel of ``layer`` and K the number of input channels of ``layer``:
    ``weight_regularizer * sum(W^2) / (1 - p)
    + dropout_regularizer * K * (p log p + (1 - p) log(1 - p))``.
    The second term is minus K times the Bernoulli entropy; it pulls p
    towards 0.5 while the first (and the data term) pull it towards 0. Gal
    et al. set ``weight_regularizer = l^2 / N`` and ``dropout_regularizer =
    2 / N`` for N training examples and prior length-scale l.

Reference:
    Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017, arXiv:1705.07832.
    Zhao, Meyerand & Birn, "Bayesian conditional GAN for MRI brain image
    synthesis", 2020, eq. 4-6 (t = 0.1, weight 1e-6, dropout 1e-5).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import keras
from keras import ops

from tfuq.checks import check_seed
from tfuq.layers.mc_sampling import dropout_active
from tfuq.layers.replica_noise import replica_rows

__all__ = [
    "ConcreteDropout",
    "ConcreteSpatialDropout2D",
    "ConcreteSpatialDropout3D",
    "concrete_dropout_mask",
    "concrete_dropout_regularizer",
]

#: Keeps the uniform noise away from 0 and 1 (computed in float32).
_NOISE_EPS = 1e-7


def concrete_dropout_mask(p_logit: Any, uniform: Any, temperature: float) -> Any:
    """Relaxed (concrete) drop mask ``z`` in (0, 1) from noise ``u``.

    Args:
        p_logit: Logit of the drop probability, scalar.
        uniform: Noise u in (0, 1), any shape.
        temperature: t > 0; smaller is closer to a hard Bernoulli mask.

    Returns:
        Tensor of ``uniform``'s shape:
        ``sigmoid((p_logit + log u - log(1 - u)) / t)``.
    """
    u = ops.convert_to_tensor(uniform)
    logit = ops.cast(p_logit, u.dtype)
    return ops.sigmoid((logit + ops.log(u) - ops.log1p(-u)) / temperature)


def concrete_dropout_regularizer(
    kernel: Any,
    p_logit: Any,
    input_channels: int,
    weight_regularizer: float,
    dropout_regularizer: float,
) -> Any:
    """Concrete-dropout regulariser of one layer (see the module docstring).

    Args:
        kernel: Kernel W of the layer the dropout feeds, any shape.
        p_logit: Logit of the drop probability p, scalar.
        input_channels: K, the number of input channels of that layer.
        weight_regularizer: Coefficient of ``sum(W^2) / (1 - p)``.
        dropout_regularizer: Coefficient of ``K (p log p + (1 - p) log(1 - p))``.

    Returns:
        Scalar tensor in ``kernel``'s dtype.
    """
    kernel = ops.convert_to_tensor(kernel)
    logit = ops.cast(p_logit, kernel.dtype)
    p = ops.sigmoid(logit)
    log_p, log_q = ops.log_sigmoid(logit), ops.log_sigmoid(-logit)
    weight_term = weight_regularizer * ops.sum(ops.square(kernel)) / ops.sigmoid(-logit)
    entropy_term = dropout_regularizer * input_channels * (p * log_p + (1.0 - p) * log_q)
    return weight_term + entropy_term


def _logit(probability: float) -> float:
    return math.log(probability) - math.log1p(-probability)


class _ConcreteDropoutBase(keras.layers.Wrapper):
    """Shared body; ``_spatial_rank`` None = element-wise, 2/3 = channel-wise."""

    _spatial_rank: int | None = None
    _default_temperature = 0.1

    def __init__(
        self,
        layer: keras.layers.Layer,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        init_min: float = 0.1,
        init_max: float = 0.1,
        temperature: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(layer, **kwargs)
        temperature = self._default_temperature if temperature is None else temperature
        for name, value in (
            ("weight_regularizer", weight_regularizer),
            ("dropout_regularizer", dropout_regularizer),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"Expected {name} >= 0. Received: {name}={value!r}")
        if not (isinstance(init_min, (int, float)) and isinstance(init_max, (int, float))) or not (
            0 < init_min <= init_max < 1
        ):
            raise ValueError(
                "init_min and init_max bound the initial drop probability. Expected "
                f"0 < init_min <= init_max < 1. Received: init_min={init_min!r}, "
                f"init_max={init_max!r}"
            )
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(f"Expected a number temperature. Received: temperature={temperature!r}")
        if not temperature > 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={temperature!r}")
        check_seed(seed)
        self.weight_regularizer = float(weight_regularizer)
        self.dropout_regularizer = float(dropout_regularizer)
        self.init_min = float(init_min)
        self.init_max = float(init_max)
        self.temperature = float(temperature)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.mc_active = False
        self.input_channels: int | None = None

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Build the wrapped layer and the ``p_logit`` weight."""
        if self._spatial_rank is not None and len(input_shape) != self._spatial_rank + 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs (B, *spatial, C) of rank "
                f"{self._spatial_rank + 2}. Received: input_shape={tuple(input_shape)}"
            )
        if input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel axis. Received: "
                f"input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)
        if getattr(self.layer, "kernel", None) is None:
            raise ValueError(
                f"{type(self).__name__} regularises the kernel of the layer it wraps. Expected "
                f"a layer with a `kernel` weight (Dense, Conv*). Received: layer={self.layer!r}"
            )
        self.input_channels = int(input_shape[-1])
        self.p_logit = self.add_weight(
            name="p_logit",
            shape=(),
            initializer=keras.initializers.RandomUniform(
                _logit(self.init_min), _logit(self.init_max), seed=self.seed
            ),
            dtype="float32",
            trainable=True,
            autocast=False,  # p stays float32 under mixed precision
        )

    @property
    def p(self) -> Any:
        """Current drop probability ``sigmoid(p_logit)``, a scalar tensor."""
        return ops.sigmoid(ops.convert_to_tensor(self.p_logit))

    @property
    def dropout_rate(self) -> float:
        """Current drop probability as a Python float."""
        return float(ops.convert_to_numpy(self.p))

    def regularization(self) -> Any:
        """This layer's concrete-dropout regulariser for the current weights (float32).

        ``p_logit`` is always read in float32. Called inside ``call`` under a
        mixed-precision policy, Keras autocasts the wrapped kernel to the
        compute dtype, so ``sum(W^2)`` then uses the rounded kernel.
        """
        return concrete_dropout_regularizer(
            ops.cast(self.layer.kernel, "float32"),
            ops.cast(self.p_logit, "float32"),
            self.input_channels,
            self.weight_regularizer,
            self.dropout_regularizer,
        )

    def noise_shape(self, inputs: Any) -> tuple[Any, ...]:
        """Mask shape: the input's, or ``(B, 1, .., 1, C)`` channel-wise."""
        shape = ops.shape(inputs)
        if self._spatial_rank is None:
            return tuple(shape)
        return (shape[0], *([1] * self._spatial_rank), shape[-1])

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Drop the input (training or MC on), apply the wrapped layer, add the regulariser."""
        self.add_loss(self.regularization())
        x = inputs
        if dropout_active(self, training):
            uniform = functools.partial(
                keras.random.uniform,
                minval=_NOISE_EPS,
                maxval=1.0 - _NOISE_EPS,
                dtype="float32",
                seed=self.seed_generator,
            )
            u = replica_rows(uniform, self.noise_shape(inputs))  # a replica's rows of the global noise
            logit = ops.cast(self.p_logit, "float32")
            drop = concrete_dropout_mask(logit, u, self.temperature)
            scale = (1.0 - drop) / ops.sigmoid(-logit)
            x = inputs * ops.cast(scale, inputs.dtype)
        return self.layer(x)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> Any:
        """The wrapped layer's output shape."""
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        """Return every constructor argument (the wrapped layer serialised).

        The wrapped layer is stored without its ``build_config`` so that, on
        loading, it is built inside this wrapper's build (same weight paths
        as the original, ``<wrapper>/<layer>/kernel``).
        """
        config = super().get_config()
        config["layer"] = {k: v for k, v in config["layer"].items() if k != "build_config"}
        return {
            **config,
            "weight_regularizer": self.weight_regularizer,
            "dropout_regularizer": self.dropout_regularizer,
            "init_min": self.init_min,
            "init_max": self.init_max,
            "temperature": self.temperature,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="tfuq")
class ConcreteDropout(_ConcreteDropoutBase):
    """Element-wise concrete dropout on the input of ``layer`` (e.g. Dense).

    The mask has the input's shape; see the module docstring for the
    equations. Weights: ``p_logit`` (plus the wrapped layer's). ``p`` /
    ``dropout_rate`` give the current drop probability.

    Args:
        layer: A Keras layer with a ``kernel`` weight (Dense, Conv*,
            Conv*Transpose) whose input is dropped and whose kernel is
            regularised.
        weight_regularizer: Coefficient of ``sum(W^2) / (1 - p)``, >= 0.
            Default 1e-6.
        dropout_regularizer: Coefficient of ``K (p log p + (1-p) log(1-p))``,
            >= 0. Default 1e-5.
        init_min: Lower bound of the initial drop probability, in (0, 1).
            Default 0.1.
        init_max: Upper bound of the initial drop probability, in
            [init_min, 1). Default 0.1 (p_logit is drawn uniformly between
            the two logits).
        temperature: Concrete temperature t > 0. Default 0.1.
        seed: Seed of the layer's own ``keras.random.SeedGenerator`` (and of
            the p_logit initializer). Default None.
        **kwargs: Base layer arguments.

    Input shape:
        ``layer``'s input ``(B, ..., K)``; output is ``layer``'s output.

    Raises:
        ValueError: a bad argument, or a wrapped layer without ``kernel``.

    Example:
        >>> h = ConcreteDropout(keras.layers.Dense(32), seed=0)(keras.Input((8,)))
    """


@keras.saving.register_keras_serializable(package="tfuq")
class ConcreteSpatialDropout2D(_ConcreteDropoutBase):
    """Channel-wise concrete dropout on the ``(B, H, W, C)`` input of ``layer``.

    Every pixel of a channel shares its mask value (noise ``(B, 1, 1, C)``).
    ``p`` / ``dropout_rate`` give the current drop probability.

    Args:
        layer: A Keras layer with a ``kernel`` weight (Dense, Conv*,
            Conv*Transpose) whose input is dropped and whose kernel is
            regularised.
        weight_regularizer: Coefficient of ``sum(W^2) / (1 - p)``, >= 0.
            Default 1e-6.
        dropout_regularizer: Coefficient of ``K (p log p + (1-p) log(1-p))``,
            >= 0. Default 1e-5.
        init_min: Lower bound of the initial drop probability, in (0, 1).
            Default 0.1.
        init_max: Upper bound of the initial drop probability, in
            [init_min, 1). Default 0.1 (p_logit is drawn uniformly between
            the two logits).
        temperature: Concrete temperature t > 0. Default 2/3.
        seed: Seed of the layer's own ``keras.random.SeedGenerator`` (and of
            the p_logit initializer). Default None.
        **kwargs: Base layer arguments.

    Input shape:
        ``(B, H, W, C)``; output is ``layer``'s output.

    Raises:
        ValueError: a bad argument, an input of rank != 4 or a layer without
            ``kernel``.

    Example:
        >>> conv = keras.layers.Conv2DTranspose(64, 4, strides=2, padding="same")
        >>> y = ConcreteSpatialDropout2D(conv, seed=0)(keras.Input((16, 16, 128)))
    """

    _spatial_rank = 2
    _default_temperature = 2.0 / 3.0


@keras.saving.register_keras_serializable(package="tfuq")
class ConcreteSpatialDropout3D(_ConcreteDropoutBase):
    """Channel-wise concrete dropout on the ``(B, D, H, W, C)`` input of ``layer``.

    Every voxel of a channel shares its mask value (noise ``(B, 1, 1, 1, C)``).
    ``p`` / ``dropout_rate`` give the current drop probability.

    Args:
        layer: A Keras layer with a ``kernel`` weight (Dense, Conv*,
            Conv*Transpose) whose input is dropped and whose kernel is
            regularised.
        weight_regularizer: Coefficient of ``sum(W^2) / (1 - p)``, >= 0.
            Default 1e-6.
        dropout_regularizer: Coefficient of ``K (p log p + (1-p) log(1-p))``,
            >= 0. Default 1e-5.
        init_min: Lower bound of the initial drop probability, in (0, 1).
            Default 0.1.
        init_max: Upper bound of the initial drop probability, in
            [init_min, 1). Default 0.1 (p_logit is drawn uniformly between
            the two logits).
        temperature: Concrete temperature t > 0. Default 2/3.
        seed: Seed of the layer's own ``keras.random.SeedGenerator`` (and of
            the p_logit initializer). Default None.
        **kwargs: Base layer arguments.

    Input shape:
        ``(B, D, H, W, C)``; output is ``layer``'s output.

    Raises:
        ValueError: a bad argument, an input of rank != 5 or a layer without
            ``kernel``.

    Example:
        >>> conv = keras.layers.Conv3D(16, 3, padding="same")
        >>> y = ConcreteSpatialDropout3D(conv, seed=0)(keras.Input((8, 8, 8, 4)))
    """

    _spatial_rank = 3
    _default_temperature = 2.0 / 3.0
