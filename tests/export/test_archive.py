from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfuq.calibration import MomentRecalibration
from tfuq.data.normalisation import NormalisationParams
from tfuq.distributions import constrain
from tfuq.export import export_saved_model, input_names, output_names
from tfuq.export.archive import ASSETS_EXTRA, EXPORT_METADATA
from tfuq.inference import decompose, mc_predict_volume, seeded_generators, to_target_units
from tfuq.layers import mc_sampling
from tfuq.networks import MultiRes, UNet

T = 16
SEED = 7
UNITS = NormalisationParams("window", -1024.0, 4095.0)
WINDOW = (8, 8, 8)


def _unet(rank: int = 3, family: str = "normal") -> UNet:
    keras.utils.set_random_seed(0)  # reproducible weights, so every assertion below is repeatable
    shape = (*WINDOW[:rank], 1)
    return UNet(shape, family=family, depth=1, base_filters=4, dropout={"kind": "mc", "rate": 0.3, "seed": 3})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _unet()
    path = tmp_path_factory.mktemp("export") / "1"
    export_saved_model(
        model,
        path,
        family="normal",
        mc_samples=T,
        seed=SEED,
        units=(UNITS.offset, UNITS.scale),
        assets={"config.ini": "[SYSTEM]\n"},
    )
    return model, path


def _windows(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *WINDOW, 1)).astype(np.float32)


def _replay(model, x: np.ndarray, samples: int, seed: int | None) -> dict[str, np.ndarray]:
    """Eager reference: `samples` MC passes with the seeded streams, batch decomposition, target units."""
    forward = tf.function(lambda v: model(v, training=False))  # traced below, with MC on
    with mc_sampling(model), seeded_generators(model, seed):
        passes = np.stack([forward(x).numpy() for _ in range(samples)])
    return passes, to_target_units(decompose("normal", passes), UNITS)


def test_first_request_replays_the_seeded_eager_passes_exactly(exported):
    # Same seed streams and the same call sequence (one pass of the whole batch per loop
    # iteration) draw the same dropout masks, so the SavedModel must equal the eager
    # decomposition to float32 round-off: a test that cannot pass by MC luck.
    model, path = exported
    x = _windows()
    _, expected = _replay(model, x, T, SEED)
    out = tf.saved_model.load(str(path)).signatures["serving_default"](windows=tf.constant(x))
    assert sorted(out) == sorted(output_names("normal", recalibrated=False))
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].numpy(), value, rtol=1e-5, atol=1e-5 * UNITS.scale, err_msg=key)
    assert float(np.mean(expected["epistemic_std"])) > 1.0  # the dropout really is active


def test_mc_maps_agree_with_eager_mc_within_mc_noise(exported):
    # Independent streams (no replay): the SavedModel's predict_mc, the eager decomposition of T passes
    # and mc_predict_volume (tfuq's whole-volume MC; one window, so no blending) estimate the same
    # quantities. Their MC standard errors come from the T = 300 eager passes, and two independent
    # estimates differ with standard deviation sqrt(2) SE:
    # - per voxel, the mean and the aleatoric variance are averages over passes: SE = sd_t/sqrt(T)
    #   of mu_t and of v_t; we allow |z| <= 5.5 (two-sided 4e-8 per voxel for a normal z, < 1e-4
    #   over 512 voxels x 2 maps; over 12 weight initialisations we measured max |z| <= 4.4);
    # - the epistemic variance is compared pooled over the voxels, E = mean_t q_t with
    #   q_t = mean_v (mu_t - m)^2, so SE = sd_t(q_t)/sqrt(T) (m treated as known, an O(1/T) error);
    #   we allow |z| <= 4. Per voxel its SE would rest on a fourth moment estimated from the same
    #   passes, which misses rare masks (a ReLU voxel nonzero in 2 of 300 passes gave z = 12.8);
    #   the exact-replay test above checks the epistemic map voxel by voxel instead.
    model, path = exported
    samples = 300
    x = _windows(1, seed=3)
    passes, _ = _replay(model, x, samples, seed=11)
    named = constrain("normal", passes.astype(np.float64))
    mu, var = named["loc"].numpy()[:, 0], named["scale"].numpy()[:, 0] ** 2
    q = ((mu - mu.mean(0)) ** 2).reshape(samples, -1).mean(1)
    reference = {"mean": mu.mean(0), "aleatoric_var": var.mean(0), "epistemic_var": q.mean()}
    se = {
        "mean": mu.std(0) / np.sqrt(samples),
        "aleatoric_var": var.std(0) / np.sqrt(samples),
        "epistemic_var": q.std() / np.sqrt(samples),
    }
    served = tf.saved_model.load(str(path)).signatures["predict_mc"](
        windows=tf.constant(x), mc_samples=tf.constant(samples)
    )
    s = UNITS.scale
    volume = mc_predict_volume(model, x[0], "normal", mc_samples=samples, window=WINDOW, batch_size=8, seed=5)
    estimates = {
        "savedmodel": {
            "mean": (served["mean"].numpy()[0] - UNITS.offset) / s,
            "epistemic_var": np.mean((served["epistemic_std"].numpy()[0] / s) ** 2),
            "aleatoric_var": (served["aleatoric_std"].numpy()[0] / s) ** 2,
        },
        "mc_predict_volume": {**volume, "epistemic_var": np.mean(volume["epistemic_var"])},
    }
    for name, estimate in estimates.items():
        for key, error in se.items():
            limit = 4.0 if key == "epistemic_var" else 5.5
            # plus float32 round-off, where every pass gives the same value (SE = 0)
            bound = limit * np.sqrt(2.0) * error + 1e-5 * np.abs(reference[key]) + 1e-9
            ratio = np.abs(estimate[key] - reference[key]) / bound
            assert np.max(ratio) <= 1.0, f"{name} {key}: max |diff| / bound = {np.max(ratio):.2f}"
    assert np.sqrt(reference["epistemic_var"]) > 1e-3  # the dropout really varies the mean


def test_predict_params_is_one_deterministic_pass(exported):
    model, path = exported
    x = _windows(2)
    signature = tf.saved_model.load(str(path)).signatures["predict_params"]
    a, b = signature(windows=tf.constant(x)), signature(windows=tf.constant(x))
    expected = model(x, training=False).numpy()
    np.testing.assert_array_equal(a["params"].numpy(), b["params"].numpy())
    np.testing.assert_allclose(a["params"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(a["loc"].numpy(), expected[..., 0] * UNITS.scale + UNITS.offset, rtol=1e-5)
    scale = np.logaddexp(0.0, expected[..., 1]) + 1e-5
    np.testing.assert_allclose(a["scale"].numpy(), scale * UNITS.scale, rtol=1e-5)


def test_requests_continue_the_streams(exported):
    _, path = exported
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    x = tf.constant(_windows(1))
    first, second = signature(windows=x)["mean"].numpy(), signature(windows=x)["mean"].numpy()
    assert not np.array_equal(first, second)


def test_assets_extra_describe_the_export(exported):
    _, path = exported
    assert (path / ASSETS_EXTRA / "config.ini").read_text() == "[SYSTEM]\n"
    meta = json.loads((path / ASSETS_EXTRA / EXPORT_METADATA).read_text())
    assert meta["family"] == "normal" and meta["mc_samples"] == T and meta["seed"] == SEED
    assert meta["inputs"] == {"windows": [None, 8, 8, 8, 1]}
    assert meta["units"] == {"offset": UNITS.offset, "scale": UNITS.scale}
    assert meta["recalibration"]["kind"] == "none"
    assert meta["signatures"] == ["serving_default", "predict_mc", "predict_params"]
    assert meta["stochastic_layers"] > 0


_TF_ONLY = textwrap.dedent(
    """
    import json, sys
    BLOCKED = ("keras", "tfuq", "tf_keras", "tensorflow_probability")
    for name in BLOCKED:  # `import tensorflow` would otherwise load Keras for tf.keras
        sys.modules[name] = None
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(sys.argv[1])
    x = tf.constant(np.load(sys.argv[2]))
    maps = {k: v.numpy() for k, v in loaded.signatures["serving_default"](windows=x).items()}
    params = loaded.signatures["predict_params"](windows=x)["params"].numpy()
    np.savez(sys.argv[3], params=params, **maps)
    loaded_modules = sorted(
        k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in BLOCKED
    )
    print(json.dumps({"blocked_loaded": loaded_modules, "signatures": sorted(loaded.signatures)}))
    """
)


def test_loads_and_answers_in_a_process_with_tensorflow_only(exported, tmp_path):
    model, path = exported
    x = _windows(2, seed=4)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "serve.py"
    script.write_text(_TF_ONLY)
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        timeout=180,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["blocked_loaded"] == []  # neither keras nor tfuq was imported
    assert report["signatures"] == ["predict_mc", "predict_params", "serving_default"]
    answers = np.load(tmp_path / "out.npz")
    _, expected = _replay(model, x, T, SEED)  # a fresh process starts from the exported streams
    for key, value in expected.items():
        np.testing.assert_allclose(answers[key], value, rtol=1e-5, atol=1e-5 * UNITS.scale, err_msg=key)
    np.testing.assert_allclose(answers["params"], model(x, training=False).numpy(), atol=1e-6)


def test_saved_model_cli_lists_the_serving_signatures(exported):
    _, path = exported
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    for name in ("serving_default", "predict_params", "predict_mc"):
        assert f"signature_def['{name}']" in text, name
        method = re.search(rf"signature_def\['{name}'\]:.*?Method name is: (\S+)", text, re.S).group(1)
        assert method == "tensorflow/serving/predict"
    default = text.split("signature_def['serving_default']")[1].split("Method name")[0]
    assert "inputs['windows']" in default and "shape: (-1, 8, 8, 8, 1)" in default
    for output in ("mean", "epistemic_std", "aleatoric_std", "total_std"):
        assert f"outputs['{output}']" in default
    assert "inputs['mc_samples']" in text.split("signature_def['predict_mc']")[1].split("Method name")[0]


def test_recalibrated_export_outputs_the_interval(tmp_path):
    model = _unet(rank=2, family="laplace")
    rec = MomentRecalibration(kind="sigma_scaling", aleatoric_scale=2.0)
    export_saved_model(model, tmp_path / "m", family="laplace", mc_samples=4, seed=0, recalibration=rec)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype(np.float32)  # a 2D model
    out = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"](windows=tf.constant(x))
    assert sorted(out) == sorted(output_names("laplace", recalibrated=True))
    with mc_sampling(model), seeded_generators(model, 0):
        passes = np.stack([model(x, training=False).numpy() for _ in range(4)])
    d = decompose("laplace", passes)
    total = np.sqrt(d["epistemic_var"] + 4.0 * d["aleatoric_var"])
    np.testing.assert_allclose(out["total_std"].numpy(), total, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["upper95"].numpy(), d["mean"] + 1.959964 * total, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # building MultiRes takes ~10 s on the shared CPUs
def test_multires_levels_are_named_inputs(tmp_path):
    model = MultiRes(
        (8, 8, 8, 1),
        family="generalized_normal",
        factors=(1, 2),
        base_filters=2,
        blocks_per_stack=1,
        branch_filters=(4, 4, 4),
        dropout={"kind": "mc", "rate": 0.5, "seed": 1},
    )
    names = input_names((1, 2))
    assert names == ["windows", "windows_x2"]
    export_saved_model(model, tmp_path / "m", family="generalized_normal", mc_samples=3, names=names)
    signature = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == names
    x = _windows(1)
    out = signature(windows=tf.constant(x), windows_x2=tf.constant(x))
    assert sorted(out) == sorted(output_names("generalized_normal", recalibrated=False))
    assert out["beta"].shape == (1, *WINDOW)


def test_refusals(tmp_path):
    model = _unet()
    with pytest.raises(ValueError, match="head channels"):
        export_saved_model(model, tmp_path / "a", family="generalized_normal", mc_samples=2)
    with pytest.raises(ValueError, match="mc_samples"):
        export_saved_model(model, tmp_path / "b", family="normal", mc_samples=0)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "file").write_text("x")
    with pytest.raises(ValueError, match="empty folder"):
        export_saved_model(model, tmp_path / "c", family="normal", mc_samples=2)
    with pytest.raises(ValueError, match="one input name per model input"):
        export_saved_model(model, tmp_path / "d", family="normal", mc_samples=2, names=["a", "b"])


def test_a_network_with_a_deterministic_prefix_serves_the_seeded_eager_passes(tmp_path):
    """Head-placed dropout: the export runs the prefix once and the suffix T times, BN folded.

    Oracle: the eager passes of the whole (unfolded) network with the same seeded streams.
    """
    from tfuq.inference.prefix import split_at_stochastic
    from tfuq.networks import HighRes3DNet

    keras.utils.set_random_seed(1)
    model = HighRes3DNet(
        (*WINDOW, 1), family="normal", base_filters=4, blocks_per_stack=1, dropout={"kind": "mc", "rate": 0.5}
    )
    rng = np.random.default_rng(4)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(scale=0.3, size=layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2, size=layer.moving_variance.shape).astype("float32")
            )
    assert split_at_stochastic(model) is not None
    path = tmp_path / "1"
    export_saved_model(
        model, path, family="normal", mc_samples=T, seed=SEED, units=(UNITS.offset, UNITS.scale)
    )
    x = _windows()
    _, expected = _replay(model, x, T, SEED)
    out = tf.saved_model.load(str(path)).signatures["serving_default"](windows=tf.constant(x))
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].numpy(), value, rtol=1e-4, atol=1e-4 * UNITS.scale, err_msg=key)
    assert float(np.mean(expected["epistemic_std"])) > 1.0
