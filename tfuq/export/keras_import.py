"""Turn a user's Keras image-to-image model into a tfuq one.

:func:`import_keras` rebuilds a deterministic image-to-image model
(functional or sequential, 2D or 3D) as an uncertainty-aware one:

- the final convolution (after dropping trailing activation layers such as
  a sigmoid) is replaced by a :class:`~tfuq.layers.DistributionHead` with
  ``params_size(head)`` channels; when the final convolution was a linear
  one-channel convolution with an odd kernel, the head's loc channel starts
  from its weights, so the imported model initially predicts the same mean;
- channel dropout follows every convolution block except the output: it is
  placed on the input of each convolution fed (through any layers) by an
  earlier convolution, tfuq's own convention
  (:class:`tfuq.networks.DropoutSpec`), so ``"concrete"`` dropout can wrap
  that convolution and learn its rate; ``"mc"`` dropout also drops the
  head's input (the last block's output). Convolutions that see the raw
  image are not preceded by dropout;
- every other layer is copied with its weights (BatchNormalization moving
  statistics included); the original model is left untouched.

The dropout layers obey :func:`tfuq.layers.mc_sampling` (BatchNorm stays in
inference mode during MC sampling). Nested sub-models are copied whole,
without dropout inside them; shared layers and layers called more than once
are refused.

Reference:
    Gal & Ghahramani, ICML 2016, arXiv:1506.02142 (MC dropout); Gal, Hron &
    Kendall, NeurIPS 2017, arXiv:1705.07832 (concrete dropout); Kendall &
    Gal, NeurIPS 2017, arXiv:1703.04977 (heteroscedastic heads).
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from tfuq.distributions import FAMILIES
from tfuq.errors import UserError
from tfuq.layers import DistributionHead, iter_layers
from tfuq.model_store.keras_file import load_model
from tfuq.networks.dropout import DROPOUT_KINDS, DropoutPlan, DropoutSpec
from tfuq.typing import PathLike

__all__ = ["HEADS", "import_keras"]

_LOG = logging.getLogger(__name__)
#: Distribution heads a model can be imported with.
HEADS = tuple(name for name in FAMILIES if name != "point")
#: Spatial rank -> convolutions that open a block (and can carry concrete dropout).
_CONVOLUTIONS: dict[int, tuple[type, ...]] = {
    2: (keras.layers.Conv2D, keras.layers.Conv2DTranspose),
    3: (keras.layers.Conv3D, keras.layers.Conv3DTranspose),
}
#: Element-wise layers dropped when they follow the final convolution.
_TRAILING = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
)


def _functional_view(model: keras.Model) -> keras.Model:
    """An uncompiled functional model over the same layers (Sequential models included)."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise UserError(
            f"model {model.name!r}: expected a built functional or sequential model with an Input; "
            "subclassed models cannot be imported."
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(
            f"model {model.name!r}: expected one image input and one image output, "
            f"got {len(inputs)} input(s) and {len(outputs)} output(s)."
        )
    return keras.Model(inputs, outputs, name=model.name)


def _producers(model: keras.Model) -> dict[int, keras.layers.Layer]:
    """id(output tensor) -> the layer that made it (each layer called once)."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        outputs = layer.output
        for tensor in keras.tree.flatten(outputs):
            found[id(tensor)] = layer
    return found


def _final_convolution(model: keras.Model, rank: int) -> keras.layers.Layer:
    """The convolution that makes the output, skipping trailing activation layers."""
    producers = _producers(model)
    layer = producers.get(id(model.outputs[0]))
    while isinstance(layer, _TRAILING):
        layer = producers.get(id(keras.tree.flatten(layer.input)[0]))
    if not isinstance(layer, _CONVOLUTIONS[rank]):
        found = "nothing" if layer is None else f"{type(layer).__name__} {layer.name!r}"
        raise UserError(
            f"model {model.name!r}: expected the output to come from a {rank}D convolution "
            f"(optionally followed by an activation), found {found}."
        )
    return layer


def _check_layers(model: keras.Model) -> None:
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.Lambda):
            raise UserError(
                f"model {model.name!r}: Lambda layer {layer.name!r} refused; tfuq keeps safe_mode on and "
                "cannot save or serve Lambda layers; replace it by a registered custom layer."
            )


def _head_like(final: keras.layers.Layer, head: str, rank: int, init_scale: float) -> tuple[Any, bool]:
    """A DistributionHead matching the final convolution, and whether its loc can start from it."""
    config = final.get_config()
    sizes = set(config["kernel_size"])
    kernel = next(iter(sizes)) if len(sizes) == 1 and next(iter(sizes)) % 2 == 1 else 1
    linear = config.get("activation") in (None, "linear")
    plain = all(s == 1 for s in config["strides"]) and all(d == 1 for d in config.get("dilation_rate", (1,)))
    copy = (
        not isinstance(final, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose))
        and config["filters"] == 1
        and linear
        and plain
        and config["use_bias"]
        and (kernel == 1 or config["padding"] == "same")
        and len(sizes) == 1
        and kernel == next(iter(sizes))
    )
    layer = DistributionHead(
        head, rank=rank, kernel_size=kernel, init_scale=init_scale, name="distribution_head"
    )
    return layer, copy


def import_keras(
    model_or_path: keras.Model | PathLike,
    head: str = "normal",
    dropout: str = "mc",
    rate: float = 0.2,
    *,
    seed: int | None = None,
    init_scale: float = 0.5,
) -> keras.Model:
    """Turn a deterministic Keras image-to-image model into an uncertainty-aware tfuq model.

    Args:
        model_or_path: A built functional or sequential Keras model, or a
            ``.keras`` file (read with :func:`tfuq.model_store.load_model`).
        head: ``"normal"``, ``"generalized_normal"`` or ``"laplace"``.
        dropout: ``"mc"`` (MC channel dropout at ``rate``), ``"concrete"``
            (learned rate, starting at ``rate``) or ``"none"``.
        rate: Drop probability in (0, 1). Default 0.2 (Reinhold et al.).
        seed: Base seed; the n-th dropout layer gets ``seed + n``. Default None.
        init_scale: Initial predicted scale of the head (normalised units).

    Returns:
        keras.Model: input as the original; output ``(B, *spatial,
        params_size(head))`` unconstrained head channels (train it with
        :class:`tfuq.losses.NLLLoss`; save it with ``model.save`` and load
        it back with :func:`tfuq.model_store.load_model`).

    Raises:
        UserError: a model that is not image-to-image, Lambda or shared
            layers, a missing or unreadable file.
        ValueError: unknown head or dropout kind, rate outside (0, 1).

    Example:
        >>> uq = tfuq.import_keras("their_unet.keras", head="normal", dropout="concrete")  # doctest: +SKIP
        >>> uq.save("their_unet_uq.keras")  # doctest: +SKIP
    """
    if head not in HEADS:
        raise ValueError(f"Expected head in {HEADS}. Received: head={head!r}")
    if dropout not in DROPOUT_KINDS:
        raise ValueError(f"Expected dropout in {DROPOUT_KINDS}. Received: dropout={dropout!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
        raise ValueError(f"Expected 0 < rate < 1 (a drop probability). Received: rate={rate!r}")
    source = (
        model_or_path if isinstance(model_or_path, keras.Model) else load_model(model_or_path, compile=False)
    )
    view = _functional_view(source)
    _check_layers(source)
    shape = tuple(view.inputs[0].shape)
    rank = len(shape) - 2
    if rank not in _CONVOLUTIONS:
        raise UserError(
            f"model {source.name!r}: expected 2D or 3D image inputs (B, *spatial, C), got {shape}."
        )
    final = _final_convolution(view, rank)
    spec = DropoutSpec(kind=dropout, rate=float(rate), init_range=(float(rate), float(rate)), seed=seed)
    plan = DropoutPlan(spec, rank)
    head_layer, copy_loc = _head_like(final, head, rank, init_scale)
    clones: dict[int, tuple[keras.layers.Layer, keras.layers.Layer]] = {}
    after_conv: dict[int, bool] = {}
    captured: list[Any] = []
    called: set[int] = set()

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer is final:
            return head_layer
        new = layer.__class__.from_config(layer.get_config())
        clones[id(new)] = (layer, new)
        return new

    def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if id(layer) in called:
            raise UserError(
                f"model {source.name!r}: layer {layer.name!r} is called more than once; shared layers "
                "cannot be imported."
            )
        called.add(id(layer))
        upstream = any(after_conv.get(id(t), False) for t in keras.tree.flatten((args, kwargs)))
        if layer is head_layer:
            x = plan.drop(args[0], name="distribution_head") if upstream else args[0]
            out = layer(x)
            captured.append(out)
        elif isinstance(layer, _CONVOLUTIONS[rank]) and upstream:
            out = plan.apply(args[0], layer, name=layer.name)
        else:
            out = layer(*args, **kwargs)
        is_conv = any(isinstance(sub, _CONVOLUTIONS[rank]) for sub in iter_layers(layer))
        for tensor in keras.tree.flatten(out):
            after_conv[id(tensor)] = upstream or is_conv
        return out

    names = [layer.name for layer in view.layers if isinstance(layer, keras.layers.InputLayer)]
    image = keras.Input(batch_shape=shape, dtype=view.inputs[0].dtype, name=(names or ["image"])[0])
    keras.models.clone_model(
        view, input_tensors=[image], clone_function=clone_function, call_function=call_function
    )
    model = keras.Model(image, captured[0], name=f"{source.name}_uq")
    for old, new in clones.values():
        new.set_weights(old.get_weights())
    if copy_loc:
        kernel, bias = (np.asarray(w) for w in final.get_weights())
        head_kernel, head_bias = (np.asarray(w) for w in head_layer.conv.get_weights())
        head_kernel[..., 0:1] = kernel
        head_bias[0] = bias[0]
        head_layer.conv.set_weights([head_kernel, head_bias])
    _LOG.info(
        "imported %s: %s head (%s), %s dropout on %d layer(s)",
        source.name,
        head,
        "loc from the final convolution" if copy_loc else "new head weights",
        dropout,
        plan.count,
    )
    return model
