"""Checkpoints of a training run: model, optimiser(s), step and random state; resume rules.

:class:`TrainingCheckpoints` keeps ``<model_dir>/checkpoints/ckpt-<step>``
files written by ``tf.train.CheckpointManager`` (the last
``[TRAINING] max_checkpoints`` are kept). A checkpoint holds every variable
of the trainer (network weights, BatchNorm statistics, trainer state), each
optimiser with its slots and iteration count, the step, and the state of the
network's dropout random generators, so a resumed run continues the same
random streams. TensorFlow writes the checkpoint files first and then
replaces the small ``checkpoint`` index file, so a run killed while saving
resumes from the previous complete checkpoint.

It works for any ``keras.Model`` trainer: the optimisers are the model's
``optimizer`` and any other ``keras.optimizers.Optimizer`` attribute (e.g. a
GAN's generator and discriminator optimisers).

:func:`resolve_start` applies ``[TRAINING] starting_iter`` (NiftyNet's
meaning): ``-1`` resumes from the latest checkpoint when there is one,
``0`` starts from scratch and refuses to run over existing checkpoints,
``k > 0`` resumes from the checkpoint of step k.

Multi-worker runs: every worker saves (TensorFlow may need all of them for
distributed variables) but only the chief writes into ``model_dir``; the
others write to a temporary folder that is deleted on :meth:`close`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfuq.atomic import atomic_path
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "TrainingCheckpoints",
    "checkpoint_steps",
    "resolve_start",
    "save_network",
    "trainer_optimizers",
    "trainer_rng_states",
]

_PREFIX = "ckpt"
_STEP = re.compile(rf"^{_PREFIX}-(\d+)$")


def trainer_optimizers(trainer: keras.Model) -> list[keras.optimizers.Optimizer]:
    """The trainer's optimisers: ``trainer.optimizer`` and every other optimiser attribute."""
    found: list[keras.optimizers.Optimizer] = []
    candidates = [getattr(trainer, "optimizer", None), *vars(trainer).values()]
    for value in candidates:
        if isinstance(value, keras.optimizers.Optimizer) and all(value is not f for f in found):
            found.append(value)
    return found


def trainer_rng_states(trainer: keras.Model) -> list[Any]:
    """State variables of every ``keras.random.SeedGenerator`` the trainer's layers own."""
    return [v for v in trainer.variables if v.path.endswith("seed_generator_state")]


def checkpoint_steps(directory: PathLike) -> list[int]:
    """Steps of the complete checkpoints listed in ``directory``'s index, ascending."""
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return []
    steps = []
    for path in state.all_model_checkpoint_paths:
        match = _STEP.match(Path(path).name)
        if match and Path(path + ".index").exists():
            steps.append(int(match.group(1)))
    return sorted(set(steps))


def resolve_start(starting_iter: int, available: list[int], directory: PathLike) -> int:
    """The step to resume from (0 = from scratch) according to ``[TRAINING] starting_iter``.

    Args:
        starting_iter: ``-1`` (latest if any), ``0`` (scratch) or a step.
        available: Steps of the existing checkpoints.
        directory: Checkpoint folder, for messages.

    Returns:
        int: the step whose checkpoint to restore, or 0.

    Raises:
        UserError: ``0`` over existing checkpoints (nothing is overwritten),
            or a step without a checkpoint.

    Example:
        >>> resolve_start(-1, [100, 200], "ckpts")
        200
    """
    if starting_iter == -1:
        return max(available, default=0)
    if starting_iter == 0:
        if available:
            raise UserError(
                f"[TRAINING] starting_iter = 0: {directory} already holds checkpoints (steps "
                f"{', '.join(map(str, available))}); refusing to overwrite them: set starting_iter = -1 to "
                "resume, or use another [SYSTEM] model_dir"
            )
        return 0
    if starting_iter not in available:
        found = ", ".join(map(str, available)) or "none"
        raise UserError(
            f"[TRAINING] starting_iter = {starting_iter}: no checkpoint of that step in {directory} "
            f"(found: {found})"
        )
    return starting_iter


class TrainingCheckpoints:
    """Save and restore a trainer's full training state (see the module notes).

    Args:
        trainer: The ``keras.Model`` trained by ``fit`` (built, compiled).
        directory: ``<model_dir>/checkpoints``.
        max_to_keep: Recent checkpoints kept (>= 1).
        chief: Write into ``directory`` (False: a temporary folder).

    Example:
        >>> ckpts = TrainingCheckpoints(trainer, model_dir / "checkpoints", max_to_keep=5)  # doctest: +SKIP
        >>> ckpts.save(500)  # doctest: +SKIP
    """

    def __init__(self, trainer: keras.Model, directory: PathLike, *, max_to_keep: int, chief: bool = True):
        if max_to_keep < 1:
            raise ValueError(f"Expected max_to_keep >= 1. Received: max_to_keep={max_to_keep}")
        self.directory = Path(directory)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(
            model=trainer,
            optimizers=trainer_optimizers(trainer),
            step=self.step,
            rng=trainer_rng_states(trainer),
        )
        self._scratch = None if chief else Path(tempfile.mkdtemp(prefix="tfuq-worker-ckpt-"))
        write_dir = self.directory if chief else self._scratch
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(write_dir), max_to_keep=max_to_keep, checkpoint_name=_PREFIX
        )
        self.last_saved: int | None = None

    @property
    def steps(self) -> list[int]:
        """Steps of the complete checkpoints in :attr:`directory`."""
        return checkpoint_steps(self.directory)

    def path_of(self, step: int) -> str:
        """Checkpoint prefix of ``step`` in :attr:`directory`."""
        return str(self.directory / f"{_PREFIX}-{step}")

    def save(self, step: int) -> str:
        """Write the state at ``step`` (once per step); returns the checkpoint prefix."""
        if self.last_saved == step:
            return self.path_of(step)
        self.step.assign(step)
        path = self.manager.save(checkpoint_number=step)
        self.last_saved = step
        return path

    def restore(self, step: int) -> int:
        """Load the checkpoint of ``step`` into the trainer, optimisers and RNG states.

        Variables that do not exist yet (optimiser slots before the first
        step) are restored when they are created.

        Raises:
            UserError: no readable checkpoint of that step.
        """
        path = self.path_of(step)
        try:
            self.checkpoint.restore(path).assert_nontrivial_match()
        except (tf.errors.OpError, ValueError, AssertionError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"{path}: cannot restore this checkpoint into the configured model ({first}); was it written "
                "with other [NETWORK] settings? Use another [SYSTEM] model_dir for a new model"
            ) from None
        self.last_saved = int(self.step.numpy())
        return self.last_saved

    def close(self) -> None:
        """Remove a non-chief worker's temporary folder."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def save_network(network: keras.Model, path: PathLike) -> Path:
    """Save ``network`` as a ``.keras`` file atomically (replacing an older one)."""
    with atomic_path(path, overwrite=True) as tmp:
        network.save(tmp)
    return Path(path)
