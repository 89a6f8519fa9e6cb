"""tfuq train on a tiny phantom: each regression network, outputs, logs, resume rules, NaN stop."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from training_setup import NETWORKS

from tfuq.config import load_config
from tfuq.errors import UserError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tfuq.stages.train import run_training  # noqa: E402


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_one_training_step_per_regression_network(network: str, tiny_config) -> None:
    config = tiny_config(*NETWORKS[network], "TRAINING.max_iter=1")
    result = run_training(config)
    assert (result.start_step, result.final_step, result.stopped) == (0, 1, "max_iter")
    model_dir = config.model_dir
    (row,) = rows(model_dir / "logs" / "training.csv")
    assert row["step"] == "1" and np.isfinite(float(row["loss"]))
    assert (model_dir / "checkpoints" / "ckpt-1.index").is_file()
    import tfuq.networks  # noqa: F401  (registers the classes the file names)

    loaded = keras.saving.load_model(model_dir / "model.keras")
    network_model = result.trainer.network
    shapes = [tuple(s.shape[1:]) for s in network_model.inputs]
    x = [np.random.default_rng(k).normal(size=(1, *s)).astype("float32") for k, s in enumerate(shapes)]
    x = x if len(x) > 1 else x[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(network_model(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_short_run_loss_falls_on_the_phantom(tiny_config) -> None:
    config = tiny_config("TRAINING.max_iter=40", "TRAINING.lr=0.003", "UNCERTAINTY.dropout=none")
    run_training(config)
    losses = [float(r["loss"]) for r in rows(config.model_dir / "logs" / "training.csv")]
    assert len(losses) == 40
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.3 * abs(first), (first, last)


def test_logs_terms_validation_tensorboard_and_outputs(tiny_config) -> None:
    config = tiny_config(
        "TRAINING.max_iter=4",
        "TRAINING.save_every_n=2",
        "TRAINING.log_every_n=2",
        "TRAINING.tensorboard_every_n=1",
        "TRAINING.validation_every_n=2",
        "TRAINING.exclude_fraction_for_validation=0.34",
        "UNCERTAINTY.dropout=concrete",
        "NETWORK.decay=0.001",
    )
    run_training(config)
    model_dir = config.model_dir
    logged = rows(model_dir / "logs" / "training.csv")
    assert [r["step"] for r in logged] == ["1", "2", "4"]
    assert list(logged[0]) == ["step", "loss", "nll", "dropout_kl", "weight_penalty", "lr"]
    for r in logged:
        terms = float(r["nll"]) + float(r["dropout_kl"]) + float(r["weight_penalty"])
        assert float(r["loss"]) == pytest.approx(terms, rel=1e-5)
        assert float(r["dropout_kl"]) != 0 and float(r["weight_penalty"]) > 0
        assert float(r["lr"]) == pytest.approx(1e-3)
    validation = rows(model_dir / "logs" / "validation.csv")
    assert [r["step"] for r in validation] == ["2", "4"]
    best = json.loads((model_dir / "checkpoints" / "best" / "best.json").read_text())
    losses = {int(r["step"]): float(r["val_loss"]) for r in validation}
    assert best["step"] == min(losses, key=losses.get)
    assert best["val_loss"] == pytest.approx(min(losses.values()), rel=1e-6)
    assert Path(best["checkpoint"] + ".index").is_file()

    tags: dict[str, set[str]] = {}
    for event_file in (model_dir / "logs" / "tensorboard").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(value.metadata.plugin_data.plugin_name)
    for tag in ("train/loss", "train/nll", "train/lr", "validation/loss"):
        assert "scalars" in tags[tag], tag
    for tag in ("input", "target", "mean", "std"):
        assert "images" in tags[f"mid_slice/{tag}"], tag

    record = json.loads((model_dir / "normalisation.json").read_text())
    assert record["target"] == {
        "section": "CT",
        "method": "window",
        "offset": -1024.0,
        "scale": 4095.0,
        "per_subject": False,
    }
    assert record["inputs"]["MR"]["method"] == "percentile" and record["inputs"]["MR"]["per_subject"]
    again = load_config(model_dir / "training_config.ini")
    assert again.to_ini() == config.to_ini()
    assert {p.name for p in (model_dir / "checkpoints").glob("*.index")} == {"ckpt-2.index", "ckpt-4.index"}


def test_pooled_zscore_target_normalisation_is_stored_and_used(tiny_config, phantom_cache: Path) -> None:
    config = tiny_config("CT.intensity_normalisation=zscore", "TRAINING.max_iter=1")
    run_training(config)
    record = json.loads((config.model_dir / "normalisation.json").read_text())["target"]
    folder = next(phantom_cache.glob("wholebody-n3-*"))
    cts = [np.asarray(nib.load(p).dataobj, np.float64) for p in sorted(folder.glob("*_ct.nii.gz"))]
    pooled = np.concatenate([c.ravel() for c in cts])
    assert record["method"] == "zscore"
    assert record["offset"] == pytest.approx(pooled.mean(), rel=1e-9)
    assert record["scale"] == pytest.approx(pooled.std(), rel=1e-9)


def test_starting_iter_rules(tiny_config) -> None:
    config = tiny_config("TRAINING.max_iter=2", "TRAINING.save_every_n=1")
    run_training(config)
    ckpt = config.model_dir / "checkpoints"
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    with pytest.raises(UserError, match=r"starting_iter = 0: .* refusing to overwrite"):
        run_training(tiny_config("TRAINING.max_iter=3", "TRAINING.starting_iter=0"))
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == before
    with pytest.raises(UserError, match=r"starting_iter = 7: no checkpoint of that step .*found: 1, 2"):
        run_training(tiny_config("TRAINING.max_iter=3", "TRAINING.starting_iter=7"))
    first_run = rows(config.model_dir / "logs" / "training.csv")
    result = run_training(tiny_config("TRAINING.max_iter=3", "TRAINING.starting_iter=1"))
    assert (result.start_step, result.final_step) == (1, 3)
    assert int(result.trainer.optimizer.iterations.numpy()) == 3
    resumed = rows(config.model_dir / "logs" / "training.csv")
    assert [r["step"] for r in resumed] == ["1", "2", "3"]
    assert resumed[1]["loss"] == first_run[1]["loss"]  # step 2 again from checkpoint 1: the same loss
    done = run_training(tiny_config("TRAINING.max_iter=3", "TRAINING.lr=0.0005"))
    assert (done.start_step, done.final_step, done.stopped) == (3, 3, "already_trained")
    assert float(done.trainer.optimizer.learning_rate) == pytest.approx(
        0.0005
    )  # the config's, not the checkpoint's


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config) -> None:
    config = tiny_config(
        "TRAINING.max_iter=30", "TRAINING.save_every_n=1", "TRAINING.optimiser=sgd", "TRAINING.lr=1e6"
    )
    with pytest.raises(UserError, match=r"training stopped at step (\d+): the loss is not finite") as info:
        run_training(config)
    message = str(info.value)
    assert "\n" not in message and "lower [TRAINING] lr" in message
    bad = int(message.split("step ")[1].split(":")[0])
    kept = int(message.split("last good checkpoint (step ")[1].split(")")[0])
    assert kept == bad - 1
    reader = tf.train.load_checkpoint(str(config.model_dir / "checkpoints" / f"ckpt-{kept}"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name
    assert not (config.model_dir / "checkpoints" / f"ckpt-{bad}.index").exists()
    assert not (config.model_dir / "model.keras").exists()
    logged = rows(config.model_dir / "logs" / "training.csv")
    assert int(logged[-1]["step"]) == bad and not np.isfinite(float(logged[-1]["loss"]))
    stored = load_config(config.model_dir / "training_config.ini")  # written when the run started
    assert stored.to_ini() == config.to_ini()
    assert not (config.model_dir / ".tfuq.lock").exists()  # released on the error


@pytest.mark.parametrize(
    ("policy", "compute"), [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")]
)
def test_mixed_precision_trains_with_a_float32_head_and_restores_the_policy(
    policy: str, compute: str, tiny_config
) -> None:
    result = run_training(tiny_config(f"SYSTEM.mixed_precision={policy}", "TRAINING.max_iter=1"))
    network = result.trainer.network
    convs = [layer for layer in network._flatten_layers() if isinstance(layer, keras.layers.Conv3D)]
    assert convs and all(layer.compute_dtype == compute for layer in convs[:-1])
    assert all(v.dtype == "float32" for v in network.trainable_variables)
    x = np.zeros((1, 16, 16, 16, 1), "float32")
    assert keras.ops.convert_to_numpy(network(x)).dtype == np.float32
    assert keras.config.dtype_policy().name == "float32"
    scaled = isinstance(result.trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    (row,) = rows(result.model_dir / "logs" / "training.csv")
    assert np.isfinite(float(row["loss"]))


def test_config_problems_are_one_line_errors(tiny_config) -> None:
    with pytest.raises(UserError, match=r"\[TRAINING\] optimiser: weight_decay is the decoupled decay"):
        run_training(tiny_config("TRAINING.weight_decay=0.01"))
    with pytest.raises(UserError, match=r"deep_supervision: training does not supervise"):
        run_training(tiny_config(*NETWORKS["multires"], "NETWORK.deep_supervision=true"))
    with pytest.raises(UserError, match=r"batch_size = 3: the global batch must split evenly over 2"):
        from tfuq.training.strategy import replica_batch_size

        replica_batch_size(3, 2)


def gan_config(tiny_ini: Path):
    text = tiny_ini.read_text().replace(
        "[REGRESSION]\nimage = MR\noutput = CT\nmask = BODY\n",
        "[GAN]\nconditioning = MR\nimage = CT\nmask = BODY\n",
    )
    gan_ini = tiny_ini.with_name("gan.ini")
    gan_ini.write_text(text)
    overrides = ["NETWORK.name=pix2pix", "NETWORK.depth=3", "NETWORK.base_filters=4", "TRAINING.max_iter=1"]
    overrides += ["MR.spatial_window_size=24, 24, 1", "CT.spatial_window_size=24, 24, 1"]
    overrides += ["NETWORK.volume_padding_size=4"]  # the 24 x 16 slices padded to the 24 x 24 window
    return load_config(gan_ini, overrides)


@pytest.mark.slow
def test_gan_configs_train_through_the_same_job(tiny_ini: Path) -> None:
    config = gan_config(tiny_ini)
    result = run_training(config)
    assert result.final_step == 1 and hasattr(result.trainer, "generator")
    assert (config.model_dir / "model.keras").is_file()
    assert (config.model_dir / "checkpoints" / "ckpt-1.index").is_file()


def test_loss_choice_follows_loss_type_and_nll_beta(tiny_config) -> None:
    from tfuq.losses import L1Loss, L2Loss, NLLLoss
    from tfuq.training.build import make_loss

    assert isinstance(make_loss(tiny_config("TRAINING.loss_type=l1")), L1Loss)
    assert isinstance(make_loss(tiny_config("TRAINING.loss_type=l2")), L2Loss)
    plain = make_loss(tiny_config())
    assert isinstance(plain, NLLLoss) and plain.beta == 0.0
    assert make_loss(tiny_config("TRAINING.nll_beta=0.5")).beta == 0.5


def listing(folder: Path) -> dict[str, str]:
    """Relative path -> content hash of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


#: What a kill during writes leaves (tfuq's temporary names), and a user's look-alikes that stay.
TEMPS = [
    ".model.keras.k3j9xqa_.tmp.keras",
    "logs/.training.csv.ab12cd34.tmp.csv",
    "checkpoints/ckpt-9_temp/part-00000-of-00001.index",
    "checkpoints/checkpoint.tmp0123456789abcdef0123456789abcdef",
    "checkpoints/best/.best.json.zz99yy88.tmp.json",
]
LOOKALIKES = ["notes.tmp", ".model.keras.tmp", "logs/ckpt-9_temp.txt", "checkpoints/readme.txt"]


def test_a_trained_model_dir_is_a_contract(tiny_config, caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config("TRAINING.max_iter=2", "TRAINING.save_every_n=1")
    run_training(config)
    model_dir = config.model_dir
    before = listing(model_dir)

    with pytest.raises(UserError) as info:  # another architecture: refused, nothing written
        run_training(
            tiny_config("TRAINING.max_iter=3", "NETWORK.base_filters=8", "UNCERTAINTY.family=laplace")
        )
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{model_dir}: holds a model trained with another")
    assert "([NETWORK] base_filters 4 -> 8, [UNCERTAINTY] family normal -> laplace);" in message
    assert "tfuq train --overwrite" in message
    assert listing(model_dir) == before

    # continuing (longer, other periods) is allowed and logged; a kill's temporary files go, the
    # look-alikes stay; a CSV damaged by two runs at once is repaired, not a crash
    for name in TEMPS + LOOKALIKES:
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / name).write_text("left")
    with (model_dir / "logs" / "training.csv").open("a") as handle:
        handle.write("step,loss,nll,lr\n1,9,9,0.001\n3,0.5")
    more = tiny_config("TRAINING.max_iter=3", "TRAINING.save_every_n=2", "TRAINING.log_every_n=1")
    with caplog.at_level(logging.INFO):
        result = run_training(more)
    assert (result.start_step, result.final_step) == (2, 3)
    assert "with a changed setting: [TRAINING] max_iter 2 -> 3" in caplog.text
    assert "with a changed setting: [TRAINING] save_every_n 1 -> 2" in caplog.text
    assert "removed what writes interrupted by a kill left in" in caplog.text
    assert [r["step"] for r in rows(model_dir / "logs" / "training.csv")] == ["1", "2", "3"]
    assert rows(model_dir / "logs" / "training.csv")[0]["loss"] != "9"  # the damaged run's row went
    assert not any((model_dir / name).exists() for name in TEMPS)
    assert not (model_dir / "checkpoints" / "ckpt-9_temp").exists()
    assert all((model_dir / name).read_text() == "left" for name in LOOKALIKES)
    assert load_config(model_dir / "training_config.ini").training.max_iter == 3


def test_overwrite_starts_afresh_and_moves_the_model_aside(tiny_config) -> None:
    run_training(tiny_config("TRAINING.max_iter=3", "TRAINING.save_every_n=2"))
    model_dir = tiny_config().model_dir
    (model_dir / "notes.txt").write_text("a user's file")
    old = listing(model_dir)
    result = run_training(tiny_config("TRAINING.max_iter=1", "NETWORK.base_filters=8"), overwrite=True)
    assert (result.start_step, result.final_step) == (0, 1)
    (replaced,) = model_dir.glob("replaced-*")
    kept, now = listing(replaced), listing(model_dir)
    for name, digest in old.items():  # moved aside, or still in place (the split, a user's files)
        assert kept.get(name) == digest or now.get(name) == digest, name
    moved = {"model.keras", "training_config.ini", "checkpoints/ckpt-3.index", "logs/training.csv"}
    assert moved <= set(kept) and "notes.txt" in now
    assert load_config(model_dir / "training_config.ini").network.base_filters == 8
    assert [r["step"] for r in rows(model_dir / "logs" / "training.csv")] == ["1"]
    with pytest.raises(
        UserError, match=r"--overwrite starts afresh; it cannot resume from .*starting_iter = 1"
    ):
        run_training(tiny_config("TRAINING.starting_iter=1"), overwrite=True)


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    tiny_config, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_config("TRAINING.max_iter=4", "TRAINING.save_every_n=2")
    run_training(config)
    ckpt = config.model_dir / "checkpoints"
    first = rows(config.model_dir / "logs" / "training.csv")
    data = ckpt / "ckpt-4.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])  # truncated, e.g. a disk full or a bad copy
    with caplog.at_level(logging.WARNING):
        result = run_training(config)
    assert (result.start_step, result.final_step) == (2, 4)
    assert (
        "checkpoint 4 is damaged" in caplog.text
        and "resuming from the previous intact checkpoint (step 2)" in caplog.text
    )
    (damaged,) = ckpt.glob("damaged-*")
    assert sorted(p.name for p in damaged.iterdir()) == ["ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    again = rows(config.model_dir / "logs" / "training.csv")
    assert [r["step"] for r in again] == ["1", "2", "3", "4"]
    for a, b in zip(first, again):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-6, abs=1e-7)


def test_a_second_train_on_a_locked_model_dir_exits_2_in_one_line(
    tiny_ini: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lock_setup import start_holder

    from tfuq.cli import main

    holder = start_holder(tmp_path / "run")
    try:
        with pytest.raises(SystemExit) as stop:
            main(["train", str(tiny_ini)])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfuq: error:")]
        assert stop.value.code == 2 and len(errors) == 1
        assert f"another tfuq run is writing to this model_dir (pid {holder.pid} on " in errors[0]
        assert "'tfuq train holder.ini'" in errors[0]
        assert not (tmp_path / "run" / "training_config.ini").exists()
        # the refused run leaves nothing, not even its own log file
        assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == [".tfuq.lock"]
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with pytest.raises(SystemExit) as stop:
        main(["train", str(tiny_ini), "--overwrite", "--set", "TRAINING.starting_iter=2"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfuq: error:")]
    assert stop.value.code == 2 and errors == [
        "tfuq: error: --overwrite starts afresh; it cannot resume from [TRAINING] starting_iter = 2: "
        "drop one of the two"
    ]
