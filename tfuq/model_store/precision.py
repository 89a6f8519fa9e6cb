"""Inference precision: ``[INFERENCE] precision = auto | float32 | bfloat16``.

``auto`` (the default) is the precision the model was trained in: the
training policy is stored with the model (``[SYSTEM] mixed_precision`` in the
model_dir's ``training_config.ini``), and a model trained under
``mixed_bfloat16`` is run in bfloat16, any other in float32
(:func:`resolve_precision`).

A trained network is stored with float32 weights whatever the training
policy. For ``bfloat16`` inference :func:`with_precision` rebuilds it from its
config under Keras's ``mixed_bfloat16`` policy (convolutions and activations
in bfloat16, variables float32) and copies the weights in; the
:class:`~tfuq.layers.DistributionHead` keeps computing in float32 (its own
policy), so the distribution parameters, the MC moments and everything
downstream stay float32. On CPUs with AVX512-BF16 / AMX the oneDNN bfloat16
convolutions are the speed-up (``tfuq bench infer`` prints it); bfloat16 keeps
8 bits of mantissa, so maps differ from float32 by about ``2^-8`` of the
activations' scale (the tolerance is tested in
``tests/model_store/test_precision.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["PRECISIONS", "resolve_precision", "with_precision"]

#: Values of ``[INFERENCE] precision``.
PRECISIONS = ("float32", "bfloat16")


def resolve_precision(config: Any, model_dir: PathLike | None = None) -> str:
    """The precision ``[INFERENCE] precision`` asks for, with ``auto`` resolved.

    Args:
        config: A loaded :class:`~tfuq.config.Config`.
        model_dir: The trained model's folder; its stored training config gives
            the training policy. None (or a folder without one): ``config``'s
            own ``[SYSTEM] mixed_precision``.

    Returns:
        One of :data:`PRECISIONS`.
    """
    requested = config.inference.precision
    if requested != "auto":
        return requested
    from tfuq.model_store.contract import load_stored_config

    stored = load_stored_config(Path(model_dir)) if model_dir is not None else None
    policy = (stored or config).system.mixed_precision
    return "bfloat16" if policy == "mixed_bfloat16" else "float32"


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """``model`` computing in ``precision`` (the same object for float32).

    Args:
        model: A built network (a tfuq network class or any Keras model whose
            ``from_config`` rebuilds it).
        precision: One of :data:`PRECISIONS`.

    Returns:
        keras.Model with the same weights; for ``"bfloat16"`` a new model whose
        layers compute in bfloat16 (except those with their own float32 policy,
        such as the distribution head).

    Raises:
        ValueError: an unknown precision.
        UserError: the model cannot be rebuilt under the bfloat16 policy.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}. Received: {precision!r}")
    if precision == "float32":
        return model
    config = dict(model.get_config())
    config.pop("dtype", None)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        clone = type(model).from_config(config)
        shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
        dummies = [np.zeros((1, *(d or 32 for d in shape[1:])), "float32") for shape in shapes]
        clone(dummies if len(dummies) > 1 else dummies[0], training=False)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise UserError(
            f"[INFERENCE] precision = bfloat16: {model.name} cannot be rebuilt in bfloat16 ({error}); "
            "use float32"
        ) from None
    finally:
        keras.config.set_dtype_policy(previous)
    leaves = [
        layer for layer in clone._flatten_layers() if not list(layer._flatten_layers(include_self=False))
    ]
    if not any(layer.weights and layer.compute_dtype == "bfloat16" for layer in leaves):
        raise UserError(
            f"[INFERENCE] precision = bfloat16: no layer of {model.name} computes in bfloat16 "
            "(its layers fix their own dtype); use float32"
        )
    clone.set_weights(model.get_weights())
    return clone
