"""Training checkpoints: contents (weights, optimiser slots, step, dropout RNG), retention, resume rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfuq.errors import UserError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tfuq.training.checkpoints import (  # noqa: E402
    TrainingCheckpoints,
    checkpoint_steps,
    resolve_start,
    save_network,
    trainer_optimizers,
    trainer_rng_states,
)


def make_model(seed: int = 0, compile: bool = True) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    hidden = keras.layers.Dropout(0.5, seed=3)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(0.01))
    return model


def train_steps(model: keras.Model, n: int) -> None:
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(8, 4)
    for _ in range(n):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - 1.0))
        model.optimizer.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        )


def state(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v) for v in [*model.variables, *model.optimizer.variables]]


def test_resolve_start_follows_starting_iter() -> None:
    assert resolve_start(-1, [], "c") == 0
    assert resolve_start(-1, [5, 10], "c") == 10
    assert resolve_start(0, [], "c") == 0
    assert resolve_start(5, [5, 10], "c") == 5
    with pytest.raises(
        UserError, match=r"starting_iter = 0: c already holds checkpoints \(steps 5, 10\); refusing"
    ):
        resolve_start(0, [5, 10], "c")
    with pytest.raises(
        UserError, match=r"starting_iter = 7: no checkpoint of that step in c \(found: none\)"
    ):
        resolve_start(7, [], "c")


def test_restore_brings_back_weights_optimiser_step_and_dropout_rng(tmp_path: Path) -> None:
    model = make_model()
    assert len(trainer_rng_states(model)) == 1  # the Dropout layer's seed generator
    ckpts = TrainingCheckpoints(model, tmp_path / "ckpt", max_to_keep=3)
    train_steps(model, 3)
    ckpts.save(3)
    saved = state(model)
    train_steps(model, 2)
    assert not all(np.array_equal(a, b) for a, b in zip(saved, state(model)))
    assert ckpts.restore(3) == 3
    for a, b in zip(saved, state(model)):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 3

    fresh = make_model(seed=1)  # other initial weights, optimiser not built yet
    again = TrainingCheckpoints(fresh, tmp_path / "ckpt", max_to_keep=3)
    assert again.restore(3) == 3 and int(fresh.optimizer.iterations.numpy()) == 3
    fresh.optimizer.build(fresh.trainable_variables)  # slots are restored when created
    for a, b in zip(saved, state(fresh)):
        np.testing.assert_array_equal(a, b)
    train_steps(model, 1)
    train_steps(fresh, 1)  # same state, same dropout masks: the same next step
    for a, b in zip(state(model), state(fresh)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_retention_incomplete_checkpoints_and_worker_scratch(tmp_path: Path) -> None:
    model = make_model()
    ckpts = TrainingCheckpoints(model, tmp_path / "ckpt", max_to_keep=2)
    for step in (1, 2, 3, 4):
        ckpts.save(step)
    assert ckpts.steps == [3, 4] == checkpoint_steps(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "ckpt-4.index").unlink()  # e.g. killed while writing
    assert checkpoint_steps(tmp_path / "ckpt") == [3]
    assert checkpoint_steps(tmp_path / "none") == []
    with pytest.raises(UserError, match=r"ckpt-7: cannot restore this checkpoint"):
        ckpts.restore(7)

    worker = TrainingCheckpoints(model, tmp_path / "ckpt", max_to_keep=2, chief=False)
    worker.save(9)
    assert checkpoint_steps(tmp_path / "ckpt") == [3]
    scratch = worker._scratch
    assert scratch is not None and checkpoint_steps(scratch) == [9]
    worker.close()
    assert not scratch.exists()


def test_trainer_optimizers_finds_every_optimiser_attribute() -> None:
    model = make_model()
    model.discriminator_optimizer = keras.optimizers.SGD(0.1)
    found = trainer_optimizers(model)
    assert found[0] is model.optimizer and found[1] is model.discriminator_optimizer and len(found) == 2


def test_save_network_is_atomic_and_replaces(tmp_path: Path) -> None:
    model = make_model(compile=False)  # a trainer's network: not compiled itself
    path = save_network(model, tmp_path / "model.keras")
    save_network(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    loaded = keras.saving.load_model(path)
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def damage(prefix: Path, how: str) -> None:
    data = next(prefix.parent.glob(prefix.name + ".data-*"))
    content = data.read_bytes()
    if how == "truncate":
        data.write_bytes(content[: len(content) // 2])
    else:  # flip the bytes of the second half: TensorFlow's checksum catches it
        data.write_bytes(content[: len(content) // 2] + bytes(b ^ 0xFF for b in content[len(content) // 2 :]))


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_intact_one(how: str, tmp_path: Path) -> None:
    from tfuq.training.checkpoints import choose_start, set_aside_damaged, verify_checkpoint

    model = make_model()
    ckpts = TrainingCheckpoints(model, tmp_path / "ckpt", max_to_keep=5)
    for step in (2, 4, 6):
        train_steps(model, 2)
        ckpts.save(step)
    assert verify_checkpoint(tmp_path / "ckpt" / "ckpt-6") is None
    damage(tmp_path / "ckpt" / "ckpt-6", how)
    problem = verify_checkpoint(tmp_path / "ckpt" / "ckpt-6")
    assert problem and ("Checksum does not match" in problem if how == "garble" else True)
    assert choose_start(-1, tmp_path / "ckpt") == (4, {6: problem})
    with pytest.raises(
        UserError, match=r"ckpt-6: this checkpoint is damaged \(.*\); set \[TRAINING\] starting_iter"
    ):
        choose_start(6, tmp_path / "ckpt")
    assert choose_start(2, tmp_path / "ckpt") == (2, {})

    folder = set_aside_damaged(tmp_path / "ckpt", [6])
    assert folder is not None and folder.parent == tmp_path / "ckpt" and folder.name.startswith("damaged-")
    assert sorted(p.name for p in folder.iterdir()) == ["ckpt-6.data-00000-of-00001", "ckpt-6.index"]
    assert checkpoint_steps(tmp_path / "ckpt") == [2, 4]
    again = TrainingCheckpoints(make_model(seed=1), tmp_path / "ckpt", max_to_keep=5)
    assert again.restore(4) == 4 and again.manager.latest_checkpoint.endswith("ckpt-4")
    again.save(6)  # the resumed run writes step 6 again
    assert checkpoint_steps(tmp_path / "ckpt") == [2, 4, 6]

    for step in (2, 4, 6):
        damage(tmp_path / "ckpt" / f"ckpt-{step}", how)
    with pytest.raises(UserError, match=r"every checkpoint is damaged \(ckpt-6: .*\); restore them"):
        choose_start(-1, tmp_path / "ckpt")
    assert choose_start(-1, tmp_path / "none") == (0, {})


def test_what_an_interrupted_save_leaves_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorflow.python.ops import gen_io_ops

    from tfuq.training.checkpoints import remove_interrupted_saves

    model = make_model()
    folder = tmp_path / "ckpt"
    ckpts = TrainingCheckpoints(model, folder, max_to_keep=5)
    ckpts.save(1)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for SIGKILL after the shards, before their merge

    monkeypatch.setattr(gen_io_ops, "merge_v2_checkpoints", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpts.save(2)
    monkeypatch.undo()
    assert (folder / "ckpt-2_temp").is_dir() and checkpoint_steps(folder) == [1]
    (folder / "checkpoint.tmp0123456789abcdef0123456789abcdef").write_text("half an index")
    (folder / "ckpt-3.index").write_bytes(b"merged, never listed")
    (folder / "ckpt-3.data-00000-of-00001").write_bytes(b"merged, never listed")
    (folder / "best").mkdir()
    (folder / "notes.txt").write_text("a user's file")
    removed = remove_interrupted_saves(folder)
    assert sorted(p.name for p in removed) == [
        "checkpoint.tmp0123456789abcdef0123456789abcdef",
        "ckpt-2_temp",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
    ]
    assert sorted(p.name for p in folder.iterdir()) == [
        "best",
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
        "notes.txt",
    ]
    assert remove_interrupted_saves(tmp_path / "missing") == []
