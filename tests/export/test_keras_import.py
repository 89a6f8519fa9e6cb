from __future__ import annotations

import keras
import numpy as np
import pytest

import tfuq
from tfuq.cli import main
from tfuq.distributions import params_size
from tfuq.errors import UserError
from tfuq.export import import_keras
from tfuq.layers import (
    ConcreteSpatialDropout2D,
    ConcreteSpatialDropout3D,
    DistributionHead,
    MCSpatialDropout3D,
    iter_layers,
    mc_sampling,
    stochastic_layers,
)
from tfuq.model_store import load_model

HIDDEN = ("enc_conv", "enc_bn", "bottom_conv", "dec_conv")


def plain_unet(rank: int = 3, final_activation: str | None = None) -> keras.Model:
    """A small deterministic U-Net as a Keras user would write it (functional, one skip)."""
    keras.utils.set_random_seed(0)
    conv = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    pool = {2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}[rank]
    up = {2: keras.layers.UpSampling2D, 3: keras.layers.UpSampling3D}[rank]
    inputs = keras.Input((8,) * rank + (1,), name="mr")
    skip = conv(4, 3, padding="same", name="enc_conv")(inputs)
    skip = keras.layers.BatchNormalization(name="enc_bn")(skip)
    skip = keras.layers.ReLU(name="enc_relu")(skip)
    h = conv(8, 3, padding="same", activation="relu", name="bottom_conv")(pool(2, name="pool")(skip))
    h = keras.layers.Concatenate(name="skip")([up(2, name="up")(h), skip])
    h = conv(4, 3, padding="same", activation="relu", name="dec_conv")(h)
    out = conv(1, 1, name="final")(h)
    if final_activation:
        out = keras.layers.Activation(final_activation, name="final_activation")(out)
    model = keras.Model(inputs, out, name="plain_unet")
    bn = model.get_layer("enc_bn")  # non-trivial moving statistics, so copying them is checked
    bn.set_weights([w + 0.1 * (i + 1) for i, w in enumerate(bn.get_weights())])
    return model


def _x(rank: int = 3, n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *(8,) * rank, 1)).astype(np.float32)


@pytest.mark.parametrize("head", ["normal", "generalized_normal", "laplace"])
@pytest.mark.parametrize("dropout", ["mc", "concrete"])
def test_import_keeps_weights_and_outputs_head_channels(head, dropout):
    source = plain_unet()
    before = [w.numpy().copy() for w in source.weights]
    uq = import_keras(source, head=head, dropout=dropout, rate=0.3, seed=1)
    assert uq.output.shape == (None, 8, 8, 8, params_size(head))
    for name in HIDDEN:
        original = source.get_layer(name).get_weights()
        layer = next(lyr for lyr in iter_layers(uq) if lyr.name == name)
        assert layer is not source.get_layer(name)  # a copy
        for a, b in zip(original, layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(before, source.weights):  # the user's model is untouched
        np.testing.assert_array_equal(a, b.numpy())
    heads = [lyr for lyr in uq.layers if isinstance(lyr, DistributionHead)]
    assert len(heads) == 1 and heads[0].family == head


def test_loc_starts_from_the_final_convolution_and_dropout_sits_after_blocks():
    source = plain_unet()
    uq = import_keras(source, head="normal", dropout="mc", rate=0.3, seed=1)
    x = _x()
    # deterministic mean unchanged: hidden weights kept and the loc channel copied from the linear final conv
    np.testing.assert_allclose(uq(x, training=False).numpy()[..., 0], source(x).numpy()[..., 0], atol=1e-5)
    drops = [lyr.name for lyr in uq.layers if isinstance(lyr, MCSpatialDropout3D)]
    # after every convolution block (inputs of the convolutions fed by a block, and of the head),
    # never on the raw image and never after the output
    assert drops == ["bottom_conv_mc", "dec_conv_mc", "distribution_head_mc"]
    assert uq.layers[-1].name == "distribution_head"
    assert all(lyr.rate == 0.3 for lyr in stochastic_layers(uq))


def test_mc_samples_differ_and_deterministic_calls_do_not():
    uq = import_keras(plain_unet(), dropout="mc", rate=0.3, seed=2)
    x = _x()
    np.testing.assert_array_equal(uq(x, training=False).numpy(), uq(x, training=False).numpy())
    with mc_sampling(uq):
        samples = np.stack([uq(x, training=False).numpy() for _ in range(4)])
    assert np.std(samples[..., 0], axis=0).mean() > 0
    assert not np.array_equal(samples[0], samples[1])


def test_concrete_dropout_wraps_the_block_convolutions():
    uq = import_keras(plain_unet(rank=2), dropout="concrete", rate=0.25, seed=0)
    wrapped = [lyr for lyr in uq.layers if isinstance(lyr, ConcreteSpatialDropout2D)]
    assert [lyr.layer.name for lyr in wrapped] == ["bottom_conv", "dec_conv"]
    assert all(lyr.dropout_rate == pytest.approx(0.25, rel=1e-5) for lyr in wrapped)
    uq(_x(rank=2))
    assert len(uq.losses) == 2  # the concrete regularisers take part in training


def test_sequential_2d_with_sigmoid_output_and_none_dropout():
    keras.utils.set_random_seed(0)
    seq = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(1, 3, padding="same"),
            keras.layers.Activation("sigmoid"),
        ]
    )
    uq = import_keras(seq, head="laplace", dropout="none")
    assert uq.output.shape == (None, 8, 8, 2)
    assert not stochastic_layers(uq)
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 2)).astype(np.float32)
    logits = keras.Model(seq.inputs[0], seq.layers[2].output)(x).numpy()  # before the dropped sigmoid
    np.testing.assert_allclose(uq(x).numpy()[..., 0], logits[..., 0], atol=1e-5)


def test_save_load_round_trip(tmp_path):
    uq = import_keras(plain_unet(), head="generalized_normal", dropout="concrete", seed=3)
    path = tmp_path / "uq.keras"
    uq.save(path)
    loaded = load_model(path)
    x = _x()
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), uq(x, training=False).numpy())
    assert len([lyr for lyr in loaded.layers if isinstance(lyr, ConcreteSpatialDropout3D)]) == 2
    assert tfuq.load_model is load_model  # the top-level lazy name


def test_import_from_a_file_and_the_cli(tmp_path, capsys):
    plain_unet(final_activation="relu").save(tmp_path / "plain.keras")
    out = tmp_path / "uq.keras"
    with pytest.raises(SystemExit) as stop:
        main(["import-keras", str(tmp_path / "plain.keras"), str(out), "--head", "laplace", "--seed", "4"])
    assert stop.value.code == 0
    assert "wrote" in capsys.readouterr().out
    model = load_model(out)
    assert model.output.shape[-1] == 2
    assert len([lyr for lyr in model.layers if isinstance(lyr, MCSpatialDropout3D)]) == 3
    with pytest.raises(SystemExit) as stop:  # existing destination refused
        main(["import-keras", str(tmp_path / "plain.keras"), str(out)])
    assert stop.value.code == 2
    assert "already exists" in capsys.readouterr().err


def test_lambda_layers_are_refused(tmp_path):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(h))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match=r"Lambda layer\(s\) double; .*safe_mode"):
        load_model(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="Lambda layer 'double' refused"):
        import_keras(model)


def test_other_refusals(tmp_path):
    with pytest.raises(UserError, match="no such model file"):
        load_model(tmp_path / "missing.keras")
    (tmp_path / "model.h5").write_text("x")
    with pytest.raises(UserError, match=r"\.keras file"):
        load_model(tmp_path / "model.h5")
    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(UserError, match="not a readable"):
        load_model(tmp_path / "broken.keras")
    inputs = keras.Input((4,))
    dense = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(UserError, match="2D or 3D image inputs"):
        import_keras(dense)
    image = keras.Input((8, 8, 1))
    pooled = keras.Model(image, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(image)))
    with pytest.raises(UserError, match="convolution"):
        import_keras(pooled)
    shared = keras.layers.Conv2D(1, 3, padding="same", name="shared")
    twice = keras.Model(image, keras.layers.Conv2D(1, 1)(shared(shared(image))))
    with pytest.raises(UserError, match="more than once"):
        import_keras(twice)
    with pytest.raises(ValueError, match="head"):
        import_keras(plain_unet(), head="point")
    with pytest.raises(ValueError, match="rate"):
        import_keras(plain_unet(), rate=0.0)
