"""Switch Monte Carlo sampling on the stochastic layers of a model, not its BatchNorm.

Keras functional models pass only ``training`` and ``mask`` down to their
layers, so "sample at inference" cannot travel as a call argument, and
calling the model with ``training=True`` would also put BatchNormalization in
batch-statistics mode. tfuq's stochastic layers (MC and concrete dropout)
therefore read a plain attribute, ``mc_active``: a layer draws a fresh mask
when ``training`` is true *or* ``mc_active`` is true. :func:`set_mc_sampling`
and the :func:`mc_sampling` context manager set that attribute on every
stochastic layer in a model (nested models and wrappers included) and drop
the model's cached ``predict_function`` / ``train_function`` /
``test_function`` so ``model.predict`` retraces and sees the change.

The attribute is a Python value read when a function is *traced*: a
``tf.function`` or exported endpoint that wrapped the model before the switch
keeps the behaviour it was traced with. Switch first, then trace (or build a
new ``tf.function``). Any layer with a boolean ``mc_active`` attribute takes
part, so user layers can opt in.

Example:
    >>> with mc_sampling(model):
    ...     samples = [model.predict(x, verbose=0) for _ in range(20)]
    >>> model.predict(x, verbose=0)  # deterministic again
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras

__all__ = [
    "MC_ATTRIBUTE",
    "dropout_active",
    "iter_layers",
    "mc_sampling",
    "reset_compiled_functions",
    "set_mc_sampling",
    "stochastic_layers",
]

#: Name of the boolean attribute that switches MC sampling on a layer.
MC_ATTRIBUTE = "mc_active"


def dropout_active(layer: keras.layers.Layer, training: Any) -> bool:
    """True when ``layer`` should sample: ``training`` is true or MC sampling is on."""
    return bool(training) or bool(getattr(layer, MC_ATTRIBUTE, False))


def _children(value: Any, seen: set[int]) -> Iterator[keras.layers.Layer]:
    """Layers held by an attribute value (a layer or nested lists/tuples/dicts of them)."""
    if id(value) in seen:
        return
    if isinstance(value, keras.layers.Layer):
        yield value
    elif isinstance(value, (list, tuple)):
        seen.add(id(value))
        for item in value:
            yield from _children(item, seen)
    elif isinstance(value, dict):
        seen.add(id(value))
        for item in value.values():
            yield from _children(item, seen)


def iter_layers(root: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yield ``root`` and every layer it holds, depth first, each once.

    Walks layer attributes (sub-layers, lists and dicts of layers, a
    wrapper's inner layer, a model's layers), so nested models and custom
    blocks are covered.

    Args:
        root: A layer or model.

    Yields:
        keras.layers.Layer: each layer reachable from ``root``.
    """
    seen: set[int] = set()
    stack = [root]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        children = list(_children(list(vars(layer).values()), set()))
        stack.extend(reversed([child for child in children if id(child) not in seen]))


def stochastic_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """All layers in ``model`` that obey the MC switch (have an ``mc_active`` attribute)."""
    return [layer for layer in iter_layers(model) if isinstance(getattr(layer, MC_ATTRIBUTE, None), bool)]


def reset_compiled_functions(model: keras.layers.Layer) -> None:
    """Drop cached train/test/predict functions of ``model`` and nested models.

    ``model.predict`` / ``fit`` / ``evaluate`` then retrace with the current
    layer attributes.
    """
    for layer in iter_layers(model):
        if isinstance(layer, keras.Model):
            layer.train_function = None
            layer.test_function = None
            layer.predict_function = None


def set_mc_sampling(model: keras.layers.Layer, enabled: bool) -> list[keras.layers.Layer]:
    """Switch MC sampling on or off on every stochastic layer of ``model``.

    BatchNormalization and every other layer stay in inference mode; only
    layers with an ``mc_active`` attribute change. Cached compiled functions
    are reset so the change takes effect in ``predict``.

    Args:
        model: A Keras model or layer.
        enabled: True to draw a new dropout mask on every call.

    Returns:
        list: the layers switched (empty if the model has no stochastic layer).

    Raises:
        ValueError: ``enabled`` is not a bool.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"Expected enabled to be a bool. Received: enabled={enabled!r}")
    layers = stochastic_layers(model)
    for layer in layers:
        setattr(layer, MC_ATTRIBUTE, enabled)
    reset_compiled_functions(model)
    return layers


@contextlib.contextmanager
def mc_sampling(model: keras.layers.Layer, enabled: bool = True) -> Iterator[keras.layers.Layer]:
    """Context manager: MC sampling on (or off) inside the block, previous state restored after.

    Args:
        model: A Keras model or layer.
        enabled: State inside the block, default True.

    Yields:
        keras.layers.Layer: ``model``, for convenience.

    Example:
        >>> with mc_sampling(model):
        ...     a, b = model(x), model(x)  # two different dropout masks
    """
    layers = stochastic_layers(model)
    previous = [getattr(layer, MC_ATTRIBUTE) for layer in layers]
    set_mc_sampling(model, enabled)
    try:
        yield model
    finally:
        for layer, state in zip(layers, previous):
            setattr(layer, MC_ATTRIBUTE, state)
        reset_compiled_functions(model)
