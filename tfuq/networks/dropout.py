"""Epistemic dropout of a network: its settings and the plan that places the layers.

A network's dropout is described once by a :class:`DropoutSpec` (the
[UNCERTAINTY] keys) and handed out layer by layer by a :class:`DropoutPlan`,
so every dropout layer gets its own reproducible seed (``seed + n`` for the
n-th layer built).

Placement convention: a plan acts on the *input* of a convolution. ``"mc"``
inserts an MC spatial (channel) dropout layer before the convolution;
``"concrete"`` wraps the convolution in a concrete spatial dropout layer, which
drops the convolution's input with a learned rate and regularises its kernel;
``"none"`` leaves the convolution alone.

Reference:
    Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016,
    arXiv:1506.02142. Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017,
    arXiv:1705.07832.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras

from tfuq.checks import check_seed
from tfuq.layers import (
    ConcreteSpatialDropout2D,
    ConcreteSpatialDropout3D,
    MCSpatialDropout2D,
    MCSpatialDropout3D,
)

__all__ = ["DROPOUT_KINDS", "DropoutPlan", "DropoutSpec"]

#: Epistemic dropout kinds ([UNCERTAINTY] dropout).
DROPOUT_KINDS = ("mc", "concrete", "none")
#: Spatial rank -> (MC spatial dropout, concrete spatial dropout) classes.
_DROPOUT_LAYERS: dict[int, tuple[type[keras.layers.Layer], type[keras.layers.Layer]]] = {
    2: (MCSpatialDropout2D, ConcreteSpatialDropout2D),
    3: (MCSpatialDropout3D, ConcreteSpatialDropout3D),
}


@dataclasses.dataclass(frozen=True)
class DropoutSpec:
    """Settings of a network's epistemic dropout (the [UNCERTAINTY] keys).

    Args:
        kind: ``"mc"`` (MC spatial dropout), ``"concrete"`` (concrete spatial
            dropout with a learned rate) or ``"none"``.
        rate: Drop probability of MC dropout, in [0, 1). Default 0.2.
        temperature: Concrete relaxation temperature > 0. Default 0.1.
        weight_regularizer: Concrete-dropout weight regulariser >= 0. Default 1e-6.
        dropout_regularizer: Concrete-dropout rate regulariser >= 0. Default 1e-5.
        init_range: Initial concrete drop probability range (min, max), in
            (0, 1). Default (0.1, 0.1).
        seed: Base seed; the n-th dropout layer of a network gets ``seed + n``.
            None draws unseeded masks.

    Raises:
        ValueError: a setting out of range.
    """

    kind: str = "none"
    rate: float = 0.2
    temperature: float = 0.1
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5
    init_range: tuple[float, float] = (0.1, 0.1)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in DROPOUT_KINDS:
            raise ValueError(f"Expected dropout kind in {DROPOUT_KINDS}. Received: kind={self.kind!r}")
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"Expected 0 <= rate < 1 (a drop probability). Received: rate={self.rate!r}")
        if not self.temperature > 0:
            raise ValueError(f"Expected temperature > 0. Received: temperature={self.temperature!r}")
        low, high = (float(v) for v in self.init_range)
        if not 0.0 < low <= high < 1.0:
            raise ValueError(
                f"Expected 0 < init_range[0] <= init_range[1] < 1. Received: init_range={self.init_range!r}"
            )
        object.__setattr__(self, "init_range", (low, high))
        check_seed(self.seed)

    @classmethod
    def from_value(cls, value: DropoutSpec | Mapping[str, Any] | str | None) -> DropoutSpec:
        """Accept a spec, its dict (``to_dict``), a kind name, or None (no dropout)."""
        if value is None:
            return cls()
        if isinstance(value, DropoutSpec):
            return value
        if isinstance(value, str):
            return cls(kind=value)
        if isinstance(value, Mapping):
            return cls(**{k: tuple(v) if k == "init_range" else v for k, v in value.items()})
        raise ValueError(f"Expected a DropoutSpec, dict, kind name or None. Received: dropout={value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every setting (for ``get_config``)."""
        out = dataclasses.asdict(self)
        out["init_range"] = list(self.init_range)
        return out


class DropoutPlan:
    """Hands out the dropout layers of one network, seeded in build order.

    Args:
        spec: The network's dropout settings.
        rank: Spatial rank (2 or 3) of the layers to make.
        rate: Overrides ``spec.rate`` for this plan (e.g. 0.5 for MultiRes).
    """

    def __init__(self, spec: DropoutSpec, rank: int, rate: float | None = None) -> None:
        if rank not in _DROPOUT_LAYERS:
            raise ValueError(f"Expected a spatial rank in {sorted(_DROPOUT_LAYERS)}. Received: rank={rank!r}")
        self.spec = spec
        self.rank = rank
        self.rate = spec.rate if rate is None else float(rate)
        self.count = 0

    @property
    def active(self) -> bool:
        """True unless the kind is ``"none"`` (or an MC rate of 0)."""
        return self.spec.kind == "concrete" or (self.spec.kind == "mc" and self.rate > 0)

    def _seed(self) -> int | None:
        seed = None if self.spec.seed is None else self.spec.seed + self.count
        self.count += 1
        return seed

    def apply(self, x: Any, layer: keras.layers.Layer, name: str) -> Any:
        """Apply ``layer`` to ``x`` with this plan's dropout on its input.

        Args:
            x: Input tensor of ``layer``.
            layer: A layer with a ``kernel`` (convolution) for concrete dropout.
            name: Name of the dropout layer (``<name>_mc`` or ``<name>_concrete``).

        Returns:
            The layer's output.
        """
        if not self.active:
            return layer(x)
        if self.spec.kind == "mc":
            drop = _DROPOUT_LAYERS[self.rank][0](self.rate, seed=self._seed(), name=f"{name}_mc")
            return layer(drop(x))
        wrapper = _DROPOUT_LAYERS[self.rank][1](
            layer,
            weight_regularizer=self.spec.weight_regularizer,
            dropout_regularizer=self.spec.dropout_regularizer,
            init_min=self.spec.init_range[0],
            init_max=self.spec.init_range[1],
            temperature=self.spec.temperature,
            seed=self._seed(),
            name=f"{name}_concrete",
        )
        return wrapper(x)

    def drop(self, x: Any, name: str) -> Any:
        """MC channel dropout on ``x`` when the kind is ``"mc"`` (identity otherwise).

        Used where the dropped tensor is not the input of one convolution
        (e.g. pix2pix's decoder before its skip concatenation).
        """
        if self.spec.kind != "mc" or self.rate == 0:
            return x
        return _DROPOUT_LAYERS[self.rank][0](self.rate, seed=self._seed(), name=f"{name}_mc")(x)
