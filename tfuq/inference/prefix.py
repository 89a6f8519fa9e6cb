"""Shared deterministic prefix: compute what comes before the first stochastic layer once per window.

MC dropout inference runs a network T times per window, but only the layers
at or after a stochastic layer (MC or concrete dropout) differ between the
passes. With dropout only before the head (``[UNCERTAINTY] dropout_layers =
head``, the NiftyNet / Klaser placement) that is a few per cent of the work,
and recomputing the deterministic backbone T times makes the cost linear in
T for nothing. :func:`split_at_stochastic` cuts a functional Keras graph in
two:

* the **prefix**: every operation that depends on no stochastic layer, from
  the model inputs to the *cut tensors* (the deterministic tensors read by
  stochastic operations, skip connections included);
* the **suffix**: the rest, from the cut tensors to the model outputs.

``suffix(prefix(x)) == model(x)`` exactly (the same layer objects and
weights); the MC loop (:mod:`tfuq.inference.mc`) runs the prefix once per
window group and the suffix T times on the tiled cut tensors. The layers
are shared, so the MC switch (:func:`tfuq.layers.mc_sampling`) and the seeded
dropout streams act on the suffix as on the model, and the masks are drawn
in the same order: the maps equal those of the naive path for the same seed.

An operation is stochastic when it is, or contains, a layer with the MC
switch; an operation reading the output of a stochastic one is in the suffix
too. A model that is not a functional graph (no nodes), has no stochastic
layer, or whose first operation is already stochastic is not split (None).
"""

from __future__ import annotations

from typing import Any

import keras

from tfuq.layers import iter_layers, stochastic_layers

__all__ = ["graph_nodes", "split_at_stochastic"]


def graph_nodes(model: keras.Model) -> list[Any] | None:
    """The functional graph's nodes from the inputs to the outputs, or None for a subclassed model."""
    by_depth = getattr(model, "_nodes_by_depth", None)
    if not by_depth:
        return None
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def split_at_stochastic(model: keras.Model) -> tuple[keras.Model, keras.Model] | None:
    """Split ``model`` into a deterministic prefix and a stochastic suffix (see the module notes).

    Args:
        model: A Keras model (functional graph, possibly a subclass of one).

    Returns:
        ``(prefix, suffix)``: ``prefix`` maps the model input(s) to the list
        of cut tensors, ``suffix`` maps them (the tensor itself when there is
        one) to the model outputs; or None when there is nothing to share.
    """
    nodes = graph_nodes(model)
    stochastic = {id(layer) for layer in stochastic_layers(model)}
    if nodes is None or not stochastic:
        return None
    inputs = {id(t) for t in model.inputs}
    downstream: set[int] = set()  # ids of tensors that depend on a stochastic operation
    cut: dict[int, Any] = {}
    for node in nodes:
        operation = node.operation
        if isinstance(operation, keras.layers.InputLayer):
            continue
        reads = list(node.input_tensors)
        if any(id(layer) in stochastic for layer in iter_layers(operation)) or any(
            id(t) in downstream for t in reads
        ):
            for tensor in reads:
                if id(tensor) not in downstream:
                    cut.setdefault(id(tensor), tensor)
            downstream.update(id(t) for t in node.outputs)
    tensors = list(cut.values())
    if not tensors or all(id(t) in inputs for t in tensors):
        return None
    single = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    prefix = keras.Model(single, tensors, name=f"{model.name}_prefix")
    suffix = keras.Model(
        tensors[0] if len(tensors) == 1 else tensors, model.outputs, name=f"{model.name}_suffix"
    )
    return prefix, suffix
