"""Tests for tfuq.networks.factory and tfuq.networks.summary (models built from INI files)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tfuq.config import ConfigError, load_config
from tfuq.layers import ConcreteSpatialDropout2D, MCSpatialDropout3D
from tfuq.model_store import build_network
from tfuq.networks import UPGAN, HighRes3DNet, MultiRes, PatchDiscriminator, Pix2PixGenerator, UNet
from tfuq.networks.factory import build_discriminators, build_model, input_geometry
from tfuq.networks.summary import summarize

REPO_ROOT = Path(__file__).resolve().parents[2]
APPLICATION = REPO_ROOT / "applications" / "wholebody_mr2ct.ini"


def write_config(
    tmp_path, network, *, window="16, 16, 1", uncertainty="", sections=("MR",), app="REGRESSION"
):
    """An INI on the phantom (no data is read to build a model)."""
    sources = "".join(
        f"[{name}]\npath_to_search = phantom:\nspatial_window_size = {window}\n" for name in (*sections, "CT")
    )
    keys = ("image", "output") if app == "REGRESSION" else ("conditioning", "image")
    text = (
        f"{sources}[NETWORK]\n{textwrap.dedent(network)}\n[UNCERTAINTY]\n{textwrap.dedent(uncertainty)}\n"
        f"[{app}]\n{keys[0]} = {', '.join(sections)}\n{keys[1]} = CT\n"
    )
    path = tmp_path / "net.ini"
    path.write_text(text)
    return load_config(path)


CASES = [
    # [NETWORK] keys, window, [UNCERTAINTY] keys, expected class, input shape, output channels
    ("name = unet\ndepth = 2\nbase_filters = 4", "16, 16, 1", "family = normal", UNet, (16, 16, 1), 2),
    ("name = unet\ndepth = 1\nbase_filters = 4", "8, 8", "family = none", UNet, (8, 8, 1), 1),
    (
        "name = unet\nspatial_mode = 2.5d\ndepth = 1\nbase_filters = 4",
        "8, 8, 4",
        "family = laplace",
        UNet,
        (8, 8, 4, 1),
        2,
    ),
    (
        "name = highres3dnet\nbase_filters = 4\nblocks_per_stack = 1",
        "8, 8, 8",
        "family = generalized_normal",
        HighRes3DNet,
        (8, 8, 8, 1),
        3,
    ),
    (
        "name = pix2pix\ndepth = 3\nbase_filters = 4",
        "32, 32, 1",
        "dropout = concrete",
        Pix2PixGenerator,
        (32, 32, 1),
        2,
    ),
    (
        "name = upgan\ndepth = 1\nbase_filters = 4\nnum_phases = 2",
        "8, 8, 1",
        "family = generalized_normal",
        UPGAN,
        (8, 8, 1),
        3,
    ),
]


@pytest.mark.parametrize(("network", "window", "uncertainty", "cls", "shape", "channels"), CASES)
def test_build_model_from_config(tmp_path, network, window, uncertainty, cls, shape, channels):
    model = build_model(write_config(tmp_path, network, window=window, uncertainty=uncertainty))
    assert type(model) is cls
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, *shape[:-1], channels)


def test_multires_from_config_takes_one_input_per_level(tmp_path):
    config = write_config(
        tmp_path,
        "name = multires\nbase_filters = 4\nblocks_per_stack = 1\n"
        "branch_filters = 4, 4, 4\nmultires_factors = 1, 2",
        window="8, 8, 8",
        uncertainty="dropout = mc\ndropout_rate = 0.5",
        sections=("MR", "PD"),
    )
    model = build_model(config)
    assert isinstance(model, MultiRes) and model.factors == (1, 2)
    assert [tuple(s) for s in model.input_shape] == [(None, 8, 8, 8, 2)] * 2
    drops = [layer for net in model.subnets for layer in net.layers if isinstance(layer, MCSpatialDropout3D)]
    assert drops and all(d.rate == 0.5 for d in drops)


@pytest.mark.parametrize(("layers", "blocks"), [("head", False), ("all", True)])
def test_dropout_layers_reaches_highres3dnet_and_multires(tmp_path, layers, blocks):
    for network in (
        "name = highres3dnet",
        "name = multires\nbranch_filters = 4, 4, 4\nmultires_factors = 1, 2",
    ):
        config = write_config(
            tmp_path,
            f"{network}\nbase_filters = 4\nblocks_per_stack = 1",
            window="8, 8, 8",
            uncertainty=f"dropout = mc\ndropout_layers = {layers}",
        )
        model = build_model(config)
        nets = model.subnets if isinstance(model, MultiRes) else [model]
        drops = [layer for net in nets for layer in net.layers if isinstance(layer, MCSpatialDropout3D)]
        assert model.dropout_blocks is blocks and len(drops) == len(nets) * (7 if blocks else 1)


def test_uncertainty_settings_reach_the_layers(tmp_path):
    config = write_config(
        tmp_path,
        "name = pix2pix\ndepth = 4\nbase_filters = 2",
        window="16, 16, 1",
        uncertainty="dropout = concrete\nconcrete_temperature = 0.2\nconcrete_init_range = 0.2, 0.3",
    )
    model = build_model(config)
    wrappers = [layer for layer in model.layers if isinstance(layer, ConcreteSpatialDropout2D)]
    # depth 4: transposed convs 2 and 3 exist below the outermost, so two wrapped layers
    assert len(wrappers) == 2
    assert all(w.temperature == 0.2 and (w.init_min, w.init_max) == (0.2, 0.3) for w in wrappers)
    assert all(w.seed is not None for w in wrappers)


def test_discriminators(tmp_path):
    pix = write_config(tmp_path, "name = pix2pix\ndepth = 3\nbase_filters = 4", window="32, 32, 1", app="GAN")
    (d,) = build_discriminators(pix)
    assert isinstance(d, PatchDiscriminator) and len(d.inputs) == 2 and d.output_shape == (None, 2, 2, 1)
    up = write_config(tmp_path, "name = upgan\nnum_phases = 3", window="32, 32, 1", app="GAN")
    assert [len(d.inputs) for d in build_discriminators(up)] == [1, 1, 1]
    with pytest.raises(ConfigError, match="has no discriminator"):
        build_discriminators(write_config(tmp_path, "name = unet"))


@pytest.mark.parametrize(
    ("network", "window", "uncertainty", "error", "match"),
    [
        ("name = keras:model.keras", "16, 16, 1", "", ConfigError, "read from its file by tfuq.model_store"),
        ("name = unet", "20, 16, 1", "", ConfigError, r"\[NETWORK\] name = unet: .*axis 0 .* 16 or 24"),
        ("name = unet\nspatial_mode = 2d", "16, 16, 4", "", ConfigError, "2d needs a window"),
        ("name = highres3dnet\nspatial_mode = 2.5d", "16, 16, 4", "", ConfigError, "2.5d slabs are for"),
        ("name = multires", "16, 16, 1", "", ConfigError, "ratio - 1"),
        ("name = upgan", "16, 16, 1", "family = none", ConfigError, "scale"),
        ("name = pix2pix", "16, 16, 1", "", ConfigError, "multiple of 256"),
    ],
)
def test_config_errors_are_one_line(tmp_path, network, window, uncertainty, error, match):
    config = write_config(tmp_path, network, window=window, uncertainty=uncertainty)
    with pytest.raises(error, match=match) as info:
        build_model(config)
    assert "\n" not in str(info.value) and str(config.path) in str(info.value)


def test_input_windows_must_exist_and_agree(tmp_path):
    config = write_config(tmp_path, "name = unet", sections=("MR", "PD"))
    assert input_geometry(config).channels == 2
    path = config.path
    path.write_text(
        path.read_text().replace(
            "[PD]\npath_to_search = phantom:\nspatial_window_size = 16, 16, 1",
            "[PD]\npath_to_search = phantom:\nspatial_window_size = 8, 8, 1",
        )
    )
    with pytest.raises(ConfigError, match="share one window"):
        build_model(load_config(path))
    path.write_text(path.read_text().replace("spatial_window_size = 8, 8, 1", ""))
    with pytest.raises(ConfigError, match=r"\[PD\] spatial_window_size"):
        build_model(load_config(path))


def test_summary_ends_with_the_parameter_count(tmp_path):
    config = write_config(
        tmp_path, "name = upgan\ndepth = 1\nbase_filters = 4\nnum_phases = 2", window="32, 32, 1"
    )
    text = summarize(config)
    last = text.splitlines()[-1]
    assert last == f"parameters: {build_model(config).count_params()}"
    assert text.count("discriminator_") >= 2 and "Total params" in text


def test_application_ini_matches_klaser():
    config = load_config(APPLICATION)
    assert config.network.name == "multires" and config.network.batch_size == 1
    assert config.uncertainty.family == "normal" and config.uncertainty.dropout == "mc"
    assert config.uncertainty.dropout_rate == 0.5 and config.uncertainty.mc_samples == 20
    assert config.training.optimiser == "adam"
    assert config.sources["MR"].spatial_window_size == (80, 80, 80)
    assert config.sources["MR"].path_to_search == (str((REPO_ROOT / "data" / "wholebody").resolve()),)
    # every setting carries a comment naming the paper section it comes from (or "not stated")
    lines = APPLICATION.read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if "=" in line and not line.startswith("#")]
    assert len(keys) > 30
    for i in keys:
        assert lines[i - 1].startswith("# Sec. ") or lines[i - 1].startswith("# not stated"), lines[i]
    # Table 1: MultiResunc 2.61M, MultiRes (no uncertainty) 2.54M, within 5%
    count = int(summarize(config).splitlines()[-1].split(": ")[1])
    assert abs(count / 2.61e6 - 1) < 0.05
    point = load_config(APPLICATION, ["UNCERTAINTY.family=none"])
    count = int(summarize(point).splitlines()[-1].split(": ")[1])
    assert abs(count / 2.54e6 - 1) < 0.05


def test_built_model_runs(tmp_path):
    config = write_config(tmp_path, "name = unet\ndepth = 1\nbase_filters = 4", window="8, 8, 8")
    model = build_model(config)
    y = model(np.zeros((1, 8, 8, 8, 1), "float32"))
    assert tuple(y.shape) == (1, 8, 8, 8, 2)
    assert isinstance(model, keras.Model)


def test_keras_user_model_through_import_keras(tmp_path):
    import keras

    from tfuq import import_keras
    from tfuq.distributions import params_size

    x = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    plain = keras.Model(x, keras.layers.Conv2D(1, 1)(h))
    imported = import_keras(plain, head="normal", dropout="mc", rate=0.1, seed=0)
    imported.save(tmp_path / "mine.keras")
    config = write_config(tmp_path, f"name = keras:{tmp_path / 'mine.keras'}", window="16, 16, 1")
    model = build_network(config)
    assert model.outputs[0].shape[-1] == params_size("normal")
    x_in = np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(model(x_in), imported(x_in), rtol=1e-6, atol=1e-6)
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(ConfigError, match="outputs 1 channels; a 'normal' head needs 2"):
        build_network(write_config(tmp_path, f"name = keras:{tmp_path / 'plain.keras'}", window="16, 16, 1"))
    with pytest.raises(ConfigError, match="takes windows"):
        build_network(write_config(tmp_path, f"name = keras:{tmp_path / 'mine.keras'}", window="32, 32, 1"))
    with pytest.raises(ConfigError, match="no Keras model file at"):
        build_network(write_config(tmp_path, "name = keras:model.keras", window="16, 16, 1"))
