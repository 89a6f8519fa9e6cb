"""BatchNormalization folded into the convolution before it: the same function, fewer passes."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfuq.inference.folding import fold_batch_norm
from tfuq.inference.mc import seeded_generators
from tfuq.layers import iter_layers, mc_sampling
from tfuq.networks import HighRes3DNet, MultiRes
from tfuq.networks.unet import UNet


def _randomise_batch_norms(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(scale=0.3, size=n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, size=n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 2.0, size=n).astype("float32"))
            layer.beta.assign(rng.normal(scale=0.5, size=n).astype("float32"))


def _count(model: keras.Model, kind: type) -> int:
    """Layers of ``kind`` in the graph (nested models included; not inside a folded pair)."""
    return sum(
        _count(layer, kind) if isinstance(layer, keras.Model) else isinstance(layer, kind)
        for layer in model.layers
    )


def _networks() -> list[tuple[str, keras.Model, int]]:
    keras.utils.set_random_seed(0)
    mc = {"kind": "mc", "rate": 0.3}
    # HighRes3DNet: the stem conv, the 2nd norm of each of 3 blocks and the 1^3 conv before the head
    # fold; the 3 block-input norms stay (the shortcut reads the block input too)
    highres = HighRes3DNet((12, 12, 12, 1), family="normal", base_filters=4, blocks_per_stack=1, dropout=mc)
    unet = UNet((16, 16, 1), family="normal", depth=2, base_filters=4, dropout=mc)
    multires = MultiRes(
        (16, 16, 16, 1),
        family="normal",
        base_filters=4,
        branch_filters=(4, 4, 4),
        blocks_per_stack=1,
        dropout=mc,
    )
    return [("highres3dnet", highres, 3), ("unet", unet, 0), ("multires", multires, None)]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_folded_network_equals_the_network(index: int) -> None:
    """Oracle: the unfolded network, deterministic and MC with the same seeded masks."""
    name, model, left = _networks()[index]
    _randomise_batch_norms(model)
    folded = fold_batch_norm(model)
    assert _count(folded, keras.layers.BatchNormalization) < _count(model, keras.layers.BatchNormalization)
    if left is not None:
        assert _count(folded, keras.layers.BatchNormalization) == left
    rng = np.random.default_rng(1)
    x = [rng.normal(size=(2, *(int(d) for d in t.shape[1:]))).astype("float32") for t in model.inputs]
    x = x if len(x) > 1 else x[0]
    for mode in ("deterministic", "mc"):
        outs = []
        for net in (model, folded):
            if mode == "mc":
                with (
                    seeded_generators(model, 5),
                    mc_sampling(model),
                ):  # the folded graph shares the dropout layers
                    outs.append(keras.tree.flatten(net(x, training=False)))
            else:
                outs.append(keras.tree.flatten(net(x, training=False)))
        for a, b in zip(*outs):
            a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
            np.testing.assert_allclose(
                b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()), err_msg=f"{name} {mode}"
            )


def test_folded_pairs_follow_the_live_weights() -> None:
    _, model, _ = _networks()[0]
    folded = fold_batch_norm(model)
    x = np.random.default_rng(2).normal(size=(1, 12, 12, 12, 1)).astype("float32")
    _randomise_batch_norms(model, seed=3)  # after folding: the folded graph must see the new statistics
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-4, atol=1e-4
    )


def test_nothing_to_fold_returns_the_model() -> None:
    x = keras.Input((8, 8, 1))
    plain = keras.Model(x, keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 3, activation="relu")(x)))
    assert fold_batch_norm(plain) is plain  # the activation sits between them
    shared = keras.layers.Conv2D(2, 1)(x)
    two_readers = keras.Model(x, keras.layers.Add()([keras.layers.BatchNormalization()(shared), shared]))
    assert fold_batch_norm(two_readers) is two_readers
