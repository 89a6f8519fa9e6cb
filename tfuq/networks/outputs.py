"""What a network's outputs hold: the distribution parameters, whatever the network returns."""

from __future__ import annotations

from typing import Any

__all__ = ["head_params"]


def head_params(outputs: Any) -> Any:
    """The distribution-parameter tensor of a network's outputs.

    Args:
        outputs: A tensor; a dict with a ``"params"`` entry (MultiRes with
            deep supervision); or a list/tuple whose last entry is the final
            prediction (UP-GAN returning every phase).

    Returns:
        The ``(B, *spatial, P)`` tensor.

    Raises:
        ValueError: a dict without ``"params"``.
    """
    if isinstance(outputs, dict):
        if "params" not in outputs:
            raise ValueError(f"Expected a 'params' output. Received: outputs with keys {sorted(outputs)}")
        return outputs["params"]
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    return outputs
