"""Checkpoints of a training run: model, optimiser(s), step and random state; resume rules.

:class:`TrainingCheckpoints` keeps ``<model_dir>/checkpoints/ckpt-<step>``
files written by ``tf.train.CheckpointManager`` (the last
``[TRAINING] max_checkpoints`` are kept). A checkpoint holds every variable
of the trainer (network weights, BatchNorm statistics, trainer state), each
optimiser with its slots and iteration count, the step, and the state of the
network's dropout random generators, so a resumed run continues the same
random streams. TensorFlow writes the checkpoint files first (into ``ckpt-<step>_temp/``,
then merged into ``ckpt-<step>.index`` / ``.data-*``) and then replaces the
small ``checkpoint`` index file, so a run killed while saving resumes from the
previous complete checkpoint; :func:`remove_interrupted_saves` removes what
such a save left behind.

A checkpoint can still be damaged afterwards (a disk error, a truncated
copy): :func:`choose_start` reads every tensor of the checkpoint it would
resume from (:func:`verify_checkpoint`, TensorFlow's checksums) and, when
resuming from the latest (``starting_iter = -1``), falls back to the newest
intact one; :func:`set_aside_damaged` moves the damaged ones into
``damaged-<timestamp>/`` and drops them from the index.

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
import time
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
    "choose_start",
    "remove_interrupted_saves",
    "resolve_start",
    "save_network",
    "set_aside_damaged",
    "trainer_optimizers",
    "trainer_rng_states",
    "verify_checkpoint",
]

_PREFIX = "ckpt"
_STEP = re.compile(rf"^{_PREFIX}-(\d+)$")
#: The files of a checkpoint prefix: ``ckpt-<step>.index``, ``ckpt-<step>.data-<i>-of-<n>``.
_FILE = re.compile(rf"^{_PREFIX}-(\d+)\.(index|data-\d+-of-\d+)$")
#: What an interrupted save leaves: TensorFlow's shard folder and its temporary index-file name.
_TEMP_DIR = re.compile(rf"^{_PREFIX}-\d+_temp$")
_TEMP_STATE = re.compile(r"^checkpoint\.tmp[0-9a-f]{32}$")


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


def _step_of(path: str) -> int | None:
    match = _STEP.match(Path(path).name)
    return int(match.group(1)) if match else None


def verify_checkpoint(prefix: PathLike) -> str | None:
    """Read every tensor of a checkpoint (TensorFlow checks each one's checksum).

    Args:
        prefix: The checkpoint prefix (``.../ckpt-<step>``).

    Returns:
        None when it is intact, else the first line of what is wrong.
    """
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except Exception as err:  # OpError (checksum, format), IndexError (truncated), ...
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__
    return None


def choose_start(starting_iter: int, directory: PathLike) -> tuple[int, dict[int, str]]:
    """:func:`resolve_start` over the intact checkpoints of ``directory``.

    With ``starting_iter = -1`` a damaged latest checkpoint is skipped for the
    newest intact one (the caller warns and sets the damaged ones aside); a
    checkpoint asked for by its step must be intact.

    Args:
        starting_iter: ``[TRAINING] starting_iter``.
        directory: The checkpoint folder.

    Returns:
        The step to resume from (0 = from scratch), and the damaged checkpoints
        skipped, step -> problem.

    Raises:
        UserError: as :func:`resolve_start`; the checkpoint asked for is
            damaged; every checkpoint is damaged.
    """
    available = checkpoint_steps(directory)
    if starting_iter != -1:
        start = resolve_start(starting_iter, available, directory)
        problem = verify_checkpoint(Path(directory) / f"{_PREFIX}-{start}") if start else None
        if problem:
            intact = [s for s in available if s != start]
            raise UserError(
                f"{Path(directory) / f'{_PREFIX}-{start}'}: this checkpoint is damaged ({problem}); set "
                f"[TRAINING] starting_iter to another step ({', '.join(map(str, intact)) or 'none left'}) "
                "or -1 for the latest intact one"
            )
        return start, {}
    damaged: dict[int, str] = {}
    for step in reversed(available):
        problem = verify_checkpoint(Path(directory) / f"{_PREFIX}-{step}")
        if problem is None:
            return step, damaged
        damaged[step] = problem
    if damaged:
        newest = max(damaged)
        raise UserError(
            f"{directory}: every checkpoint is damaged (ckpt-{newest}: {damaged[newest]}); restore them from "
            "a copy, or start afresh with tfuq train --overwrite"
        )
    return 0, {}


def set_aside_damaged(directory: PathLike, steps: list[int]) -> Path | None:
    """Move the files of damaged checkpoints into ``<directory>/damaged-<timestamp>/``; unlist them.

    Args:
        directory: The checkpoint folder.
        steps: The damaged checkpoints' steps.

    Returns:
        The folder they went to (None when ``steps`` is empty).
    """
    folder_path = Path(directory)
    if not steps:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = folder_path / f"damaged-{stamp}", 1
    while target.exists():
        n += 1
        target = folder_path / f"damaged-{stamp}-{n}"
    target.mkdir(parents=True)
    for path in sorted(folder_path.iterdir()):
        match = _FILE.match(path.name)
        if match and int(match.group(1)) in steps:
            path.rename(target / path.name)
    state = tf.train.get_checkpoint_state(str(folder_path))
    if state is not None:
        paths = list(state.all_model_checkpoint_paths)
        stamps = list(state.all_model_checkpoint_timestamps)
        keep = [i for i, p in enumerate(paths) if _step_of(p) not in steps]
        times = [stamps[i] for i in keep] if len(stamps) == len(paths) else None
        if keep:
            tf.__internal__.train.update_checkpoint_state(
                save_dir=str(folder_path),
                model_checkpoint_path=paths[keep[-1]],
                all_model_checkpoint_paths=[paths[i] for i in keep],
                save_relative_paths=True,
                all_model_checkpoint_timestamps=times,
                last_preserved_timestamp=state.last_preserved_timestamp or None,
            )
        else:
            (folder_path / "checkpoint").rename(target / "checkpoint")
    return target


def remove_interrupted_saves(directory: PathLike) -> list[Path]:
    """Remove what saves killed half-way left in a checkpoint folder.

    That is TensorFlow's shard folders (``ckpt-<step>_temp/``), its temporary
    index-file names (``checkpoint.tmp<hex>``) and the files of a checkpoint
    newer than the newest the index lists (a save killed while merging its
    shards, before it was listed). Listed checkpoints, older files and
    everything else stay. Call it under the model_dir's lock.

    Args:
        directory: The checkpoint folder (not searched recursively).

    Returns:
        The paths removed.
    """
    folder_path = Path(directory)
    if not folder_path.is_dir():
        return []
    listed = checkpoint_steps(folder_path)
    newest = max(listed, default=-1)
    removed = []
    for path in sorted(folder_path.iterdir()):
        match = _FILE.match(path.name)
        orphan = match is not None and int(match.group(1)) > newest and path.is_file()
        if path.is_dir() and _TEMP_DIR.match(path.name):
            shutil.rmtree(path, ignore_errors=True)
        elif orphan or (path.is_file() and _TEMP_STATE.match(path.name)):
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    return removed


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
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as err:
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
