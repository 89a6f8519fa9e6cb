"""[INFERENCE] precision = bfloat16: the network rebuilt in bfloat16 with the same weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfuq.errors import UserError
from tfuq.layers import DistributionHead
from tfuq.model_store.precision import with_precision
from tfuq.networks.unet import UNet


def _unet(family: str = "normal") -> UNet:
    keras.utils.set_random_seed(0)
    return UNet(
        image_shape=(32, 32, 1), family=family, depth=2, base_filters=8, dropout={"kind": "mc", "rate": 0.1}
    )


def test_float32_is_the_same_model_and_bfloat16_a_copy_with_float32_head_and_variables() -> None:
    model = _unet()
    assert with_precision(model, "float32") is model
    fast = with_precision(model, "bfloat16")
    assert fast is not model and model.compute_dtype == "float32"  # the original is untouched
    layers = list(fast._flatten_layers())
    assert any(layer.compute_dtype == "bfloat16" for layer in layers)
    heads = [layer for layer in layers if isinstance(layer, DistributionHead)]
    assert heads and all(head.compute_dtype == "float32" for head in heads)
    assert all(v.dtype == "float32" for v in fast.weights)
    for a, b in zip(model.get_weights(), fast.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="precision"):
        with_precision(model, "float16")


def test_bfloat16_outputs_are_float32_and_within_the_bfloat16_tolerance_of_float32() -> None:
    # oracle: the float32 network; bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 per
    # operation): a few layers deep the outputs stay within 1 % (RMS) and 3 % (worst voxel) of
    # their own size
    model = _unet()
    fast = with_precision(model, "bfloat16")
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype("float32")
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    out = keras.ops.convert_to_numpy(fast(x, training=False))
    assert out.dtype == np.float32 and out.shape == ref.shape
    size = np.sqrt(np.mean(ref**2, axis=(0, 1, 2)))
    rms = np.sqrt(np.mean((out - ref) ** 2, axis=(0, 1, 2)))
    worst = np.abs(out - ref).max(axis=(0, 1, 2))
    assert np.all(rms <= 0.01 * size) and np.all(worst <= 0.03 * size), (rms, worst, size)
    assert np.any(out != ref)  # it did compute in bfloat16


def test_a_functional_model_whose_layers_fix_float32_is_refused_in_one_line() -> None:
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", dtype="float32")(inputs))
    with pytest.raises(UserError, match="precision = bfloat16"):
        with_precision(model, "bfloat16")


@pytest.mark.parametrize(
    "requested, trained, expected",
    [
        ("auto", "mixed_bfloat16", "bfloat16"),
        ("auto", "float32", "float32"),
        ("auto", "mixed_float16", "float32"),  # no float16 inference on CPU: float32
        ("auto", None, "float32"),  # a model_dir without a stored training config
        ("float32", "mixed_bfloat16", "float32"),  # an explicit value wins
        ("bfloat16", "float32", "bfloat16"),
    ],
)
def test_auto_precision_is_the_training_policy_stored_with_the_model(
    tmp_path, requested: str, trained: str | None, expected: str
) -> None:
    import sys
    from pathlib import Path

    from tfuq.config import load_config
    from tfuq.model_store.layout import CONFIG_FILE
    from tfuq.model_store.precision import resolve_precision

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from training_setup import TINY_INI

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    text = TINY_INI.format(model_dir=model_dir, cache_dir=tmp_path / "phantom")
    if trained is not None:
        stored = text.replace("seed = 0\n", f"seed = 0\nmixed_precision = {trained}\n", 1)
        (model_dir / CONFIG_FILE).write_text(stored)
    ini = tmp_path / "run.ini"
    ini.write_text(text)  # the running config says float32 training: auto must read the stored policy
    config = load_config(ini, [f"INFERENCE.precision={requested}"])
    assert resolve_precision(config, model_dir) == expected
    # without a model_dir (bench on a fresh network): the config's own policy
    bf16 = load_config(ini, [f"INFERENCE.precision={requested}", "SYSTEM.mixed_precision=mixed_bfloat16"])
    assert resolve_precision(bf16) == ("bfloat16" if requested in ("auto", "bfloat16") else "float32")
