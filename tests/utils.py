"""Shared test helpers built only on public Keras API.

``run_layer_test`` exercises a layer class the way a user would: build, call,
shapes, config round trip, ``.keras`` save/load in a functional model, named
weights. ``assert_keras_roundtrip`` saves and reloads any model and checks
that its outputs are unchanged. Import as ``from utils import ...`` (the tests
folder is on ``sys.path`` through pytest's rootdir conftest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

__all__ = ["assert_keras_roundtrip", "load_example", "predict_windows", "run_layer_test"]

#: The repository's ``examples`` folder (scripts, not a package).
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _outputs(model: keras.Model, inputs: Any) -> list[np.ndarray]:
    result = model(inputs, training=False)
    return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(result)]


def assert_keras_roundtrip(
    model: keras.Model,
    inputs: Any,
    tmp_path: Path,
    *,
    atol: float = 0.0,
    filename: str = "model.keras",
) -> keras.Model:
    """Save ``model`` as ``.keras``, reload it, and check identical outputs on ``inputs``.

    The model is called with ``training=False`` (MC sampling must be off), so
    stochastic layers are deterministic. Also checks that the reloaded model
    has the same weight paths and values.

    Args:
        model: A built Keras model using registered (serialisable) objects.
        inputs: Inputs for ``model(inputs)``.
        tmp_path: Folder for the file (pytest ``tmp_path``).
        atol: Absolute tolerance; 0 demands bit-identical outputs.
        filename: File name inside ``tmp_path``.

    Returns:
        keras.Model: the reloaded model.
    """
    path = Path(tmp_path) / filename
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    expected, actual = _outputs(model, inputs), _outputs(loaded, inputs)
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        assert e.shape == a.shape and e.dtype == a.dtype
        np.testing.assert_allclose(a, e, rtol=0, atol=atol)
    return loaded


def _config_json(layer: keras.layers.Layer) -> str:
    """The layer config as canonical JSON (serialisable, comparable)."""
    return json.dumps(keras.saving.serialize_keras_object(layer)["config"], sort_keys=True)


def run_layer_test(
    layer_cls: type[keras.layers.Layer],
    init_kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    expected_output_shape: tuple[int, ...],
    tmp_path: Path,
    *,
    input_dtype: str = "float32",
    expected_output_dtype: str | None = None,
    expected_weight_names: set[str] | None = None,
    seed: int = 0,
) -> keras.layers.Layer:
    """Build, call, check shapes, config and ``.keras`` round trips of one layer.

    Checks, in order: the eager output shape (and dtype); ``compute_output_shape``
    with and without a known batch size; that every weight has an explicit,
    unique name (and, if given, exactly ``expected_weight_names``); that
    ``from_config(get_config())`` rebuilds a layer with the same JSON config
    and works on a symbolic ``keras.Input``; that a functional model around the
    layer saves to ``.keras`` and reloads with identical outputs
    (deterministic mode: ``training=False``, MC sampling off).

    Args:
        layer_cls: The layer class (registered with Keras serialisation).
        init_kwargs: Constructor arguments, used once.
        input_shape: Full input shape including the batch size.
        expected_output_shape: Full output shape including the batch size.
        tmp_path: Folder for the ``.keras`` file.
        input_dtype: Dtype of the test input.
        expected_output_dtype: If given, the output's dtype.
        expected_weight_names: If given, the set of ``weight.name`` values.
        seed: Seed of the random test input.

    Returns:
        keras.layers.Layer: the built layer, for further checks.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=input_shape).astype(input_dtype)
    layer = layer_cls(**init_kwargs)

    y = layer(x)
    assert tuple(y.shape) == tuple(expected_output_shape), (tuple(y.shape), expected_output_shape)
    if expected_output_dtype is not None:
        assert keras.backend.standardize_dtype(y.dtype) == expected_output_dtype
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(expected_output_shape)
    symbolic_shape = (None, *input_shape[1:])
    assert tuple(layer.compute_output_shape(symbolic_shape)) == (None, *expected_output_shape[1:])

    names = [w.name for w in layer.weights]
    assert all(name and not name.startswith("variable") for name in names), names
    paths = [w.path for w in layer.weights]
    assert len(set(paths)) == len(paths), paths
    if expected_weight_names is not None:
        assert set(names) == set(expected_weight_names), names

    config = layer.get_config()
    clone = layer_cls.from_config(json.loads(json.dumps(config)))
    symbolic = clone(keras.Input(shape=input_shape[1:], dtype=input_dtype))
    assert tuple(symbolic.shape) == (None, *expected_output_shape[1:])
    assert _config_json(clone) == _config_json(layer)

    inputs = keras.Input(shape=input_shape[1:], dtype=input_dtype)
    model = keras.Model(inputs, layer(inputs))
    assert_keras_roundtrip(model, x, tmp_path, filename=f"{layer.name}.keras")
    return layer


def raw_scale(scale: Any) -> np.ndarray:
    """NumPy oracle of the head channel giving ``scale``: inverse of softplus(raw) + 1e-5.

    Written independently of :func:`tfuq.distributions.unconstrain` so tests
    of the library can use it as an oracle.
    """
    s = np.asarray(scale, dtype=np.float64) - 1e-5
    return s + np.log(-np.expm1(-s))


def raw_beta(beta: Any) -> np.ndarray:
    """NumPy oracle of the head channel giving generalized-normal shape ``beta``.

    Inverse of ``0.1 + 9.9 * sigmoid(raw + log(1.9 / 8))``.
    """
    u = (np.asarray(beta, dtype=np.float64) - 0.1) / 9.9
    return np.log(u / (1.0 - u)) - np.log((2.0 - 0.1) / (10.0 - 2.0))


def load_example(name: str) -> Any:
    """Import ``examples/<name>.py`` as a module (its ``main`` is not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tfuq_example_{name}", EXAMPLES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predict_windows(volume: Any, fn: Any, window: Any, *, batch_size: int = 4, **options: Any) -> np.ndarray:
    """A plain predictor ``(B, *window, C) -> (B, *window, K)`` through the window engine.

    Blended in float64 for a float64 volume, else float32; ``batch_size`` is the engine's
    ``windows_per_call``, ``pad_mode`` its ``padding_mode``.
    """
    from tfuq.inference.engine import blend_windows

    if "pad_mode" in options:
        options["padding_mode"] = options.pop("pad_mode")
    dtype = np.float64 if np.asarray(volume).dtype == np.float64 else np.float32
    maps = blend_windows(
        volume, lambda xs: {"y": fn(xs[0])}, window, windows_per_call=batch_size, dtype=dtype, **options
    )
    return maps["y"]
