"""Turn a plain Keras U-Net into an uncertainty-aware tfuq model and fine-tune it on the phantom.

A deterministic 2D U-Net (as a Keras user would write it) is saved, imported
with ``tfuq.import_keras`` (normal head, concrete dropout: the hidden weights
are kept, the last convolution becomes a ``DistributionHead``), fine-tuned
for a few epochs on axial MR -> CT slices of the built-in whole-body phantom
with tfuq's Gaussian NLL, and then asked for MC uncertainty on a held-out
subject, whose true CT noise level the phantom knows. After so short a fit
the residual error is still well above the noise, and the aleatoric std
(which absorbs everything the inputs cannot explain) is accordingly larger.

Run: .venv/bin/python examples/import_keras_model.py   (about a minute on 2 CPU cores)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np

import tfuq
from tfuq.data.normalisation import denormalise, denormalise_std, fit_normalisation, normalise
from tfuq.data.phantom import make_subject
from tfuq.data.phantom.spec import PhantomSpec
from tfuq.inference import decompose
from tfuq.layers import mc_sampling
from tfuq.losses import NLLLoss

SHAPE = (64, 48, 32)  # phantom volume; axial slices are 64 x 48
CT = fit_normalisation(np.zeros(1), "window", window=(-1024.0, 3071.0))


def plain_unet() -> keras.Model:
    """A small deterministic 2D U-Net with a linear one-channel output."""
    inputs = keras.Input((SHAPE[0], SHAPE[1], 1), name="mr")
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    b = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(keras.layers.MaxPooling2D()(a))
    b = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(b)
    h = keras.layers.Concatenate()([keras.layers.UpSampling2D()(b), a])
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    return keras.Model(inputs, keras.layers.Conv2D(1, 1)(h), name="plain_unet")


def slices(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axial slices (Z, H, W, 1) of normalised MR, [CT, body mask] targets, and the true CT noise std."""
    subject = make_subject(PhantomSpec(kind="wholebody", shape=SHAPE, seed=0), index)
    mr = subject.images["mr"]
    mr = normalise(mr, fit_normalisation(mr, "percentile"))
    ct = normalise(subject.images["ct"], CT)
    mask = subject.mask.astype(np.float32)

    def to_slices(volume: np.ndarray) -> np.ndarray:
        return np.moveaxis(volume, 2, 0)[..., np.newaxis].astype(np.float32)

    target = np.concatenate([to_slices(ct), to_slices(mask)], axis=-1)
    return to_slices(mr), target, np.moveaxis(subject.noise_std["ct"], 2, 0)


def main() -> None:
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp))


def run(folder: Path) -> None:
    """Save, import, fine-tune, predict, save and reload, all inside ``folder``."""
    plain_unet().save(folder / "plain_unet.keras")
    source = folder / "plain_unet.keras"
    model = tfuq.import_keras(source, head="normal", dropout="concrete", rate=0.1, seed=0)
    print(f"imported: {len(model.layers)} layers, output channels {model.output.shape[-1]}")
    train = [slices(i) for i in range(3)]
    x = np.concatenate([t[0] for t in train])
    y = np.concatenate([t[1] for t in train])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=NLLLoss("normal"))
    history = model.fit(x, y, batch_size=8, epochs=60, verbose=0).history["loss"]
    print(f"fine-tuned 60 epochs on {len(x)} slices: NLL {history[0]:.3f} -> {history[-1]:.3f}")

    x_test, y_test, noise = slices(3)
    with mc_sampling(model):
        passes = np.stack([model.predict(x_test, batch_size=16, verbose=0) for _ in range(10)])
    maps = {k: np.asarray(v) for k, v in decompose("normal", passes).items()}
    body = y_test[..., 1] > 0
    mean_hu = denormalise(maps["mean"], CT)
    truth_hu = denormalise(y_test[..., 0], CT)
    aleatoric = denormalise_std(np.sqrt(maps["aleatoric_var"]), CT)
    epistemic = denormalise_std(np.sqrt(maps["epistemic_var"]), CT)
    print(f"held-out subject, inside the body: MAE {np.abs(mean_hu - truth_hu)[body].mean():.1f} HU")
    print(f"  mean aleatoric std {aleatoric[body].mean():.1f} HU (true CT noise {noise[body].mean():.1f} HU)")
    print(f"  mean epistemic std {epistemic[body].mean():.1f} HU")
    model.save(folder / "uq_unet.keras")
    reloaded = tfuq.load_model(folder / "uq_unet.keras")  # safe_mode on, tfuq layers registered
    same = np.array_equal(reloaded.predict(x_test[:2], verbose=0), model.predict(x_test[:2], verbose=0))
    print(f"saved and reloaded with tfuq.load_model: identical deterministic output: {same}")


if __name__ == "__main__":
    main()
