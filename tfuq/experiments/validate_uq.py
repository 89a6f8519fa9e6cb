"""``tfuq validate-uq CONFIG``: the papers' uncertainty checks, run on the trained model.

The experiments of Reinhold et al. (ISBI 2020, section 3), on held-out
subjects (the Inference phase, else Validation, at most ``[EVALUATION]
uq_subjects``), predicted as ``tfuq infer`` does with T = ``[EVALUATION]
uq_mc_samples`` (default ``[UNCERTAINTY] mc_samples``); stds in target units:

1. input noise sweep: Gaussian noise of each std in ``[EVALUATION]
   noise_levels`` added to the *normalised* inputs (so a level is a fraction
   of each input's normalisation span, the same for every modality); the mean
   aleatoric std inside the mask must rise;
2. training-set size sweep: a model per size in ``[EVALUATION] size_sweep``,
   trained from scratch on nested subsets of the Training subjects with the
   same configuration in a temporary model_dir (deleted afterwards; kept in
   ``<save_csv_dir>/size_sweep/seed<seed>-n<size>`` with ``size_sweep_keep``), for
   ``size_sweep_iter`` iterations, or, with ``size_sweep_patience``, until
   the loss on the Validation subjects stops falling (Reinhold: "until the
   validation loss plateaued"; the best-validation weights are scored),
   with the prior terms of the dropout objective (concrete-dropout
   regularisers, weight decay) scaled by N / n as Gal's derivation has it
   (``size_sweep_members`` > 1: that many networks per size, differing only in
   their seed, scored as one deep ensemble); the
   mean epistemic std on the held-out subjects, averaged over
   ``size_sweep_repeats`` repeats (each with its own nested subsets and
   seed), must fall; ``validate_uq.json`` records every model (``size_sweep.models``:
   its subjects, each network's seed, stop step and reason, per held-out
   subject mean epistemic and aleatoric std) and a bootstrapped 95 %
   interval per size (:func:`size_sweep_intervals`, Reinhold's Fig. 1
   shading) with ``size_sweep_separated``, whether the fall exceeds it,
   and each model's value on its own first Training subject(s)
   (``training_epistemic_std``): the in-sample reference without which a
   flat sweep cannot be told from a model that finds no subject new;
3. synthetic anomaly: ``anomaly_trials`` zero cubes of side ``anomaly_size``
   (input units) at seeded random places inside the mask where at least
   ``anomaly_min_changed`` of the cube's input is away from zero (not where
   zeroing changes nothing: air, gas); epistemic std inside against outside the cube (ratio,
   AUROC);
4. on data with a true-noise section (``[REGRESSION] noise_std``, the
   phantom): the estimated aleatoric std of the clean inputs against it
   (ratio of means, Spearman inside the mask).

``validate_uq.json`` and the plots go to ``[EVALUATION] save_csv_dir``
(:func:`tfuq.evaluation.write_validation`). When an expected direction fails
(the noise sweep does not rise, the size sweep does not fall, AUROC <= 0.5,
ratio <= 1, Spearman <= 0), :class:`UQValidationError` -- a
:class:`~tfuq.errors.UserError` -- names the failures in one line after the
files are written, so ``tfuq validate-uq`` exits with code 2.

Reference:
    Reinhold, Carass, Prince et al., "Validating uncertainty in medical image
    translation", ISBI 2020, arXiv:2002.04639.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfuq.config import Config, ConfigError
from tfuq.config.sections import INFERENCE, TRAINING, VALIDATION
from tfuq.data.dataset import all_subject_ids
from tfuq.data.sources import resolve_sources
from tfuq.data.split import EXCLUDED, read_split, write_split
from tfuq.errors import UserError
from tfuq.evaluation.validation import (
    aleatoric_vs_noise,
    anomaly_scores,
    bootstrap_mean_interval,
    insert_anomaly,
    nested_subsets,
    noise_sweep_inputs,
    validation_summary,
)
from tfuq.experiments.validate_uq_report import VALIDATION_FILES, write_validation
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR
from tfuq.inference.prediction import (
    PredictionSettings,
    check_windows,
    predict_subject,
    prediction_settings,
)
from tfuq.inference.subject_inputs import SubjectInputs, load_inference_subject
from tfuq.model_store.precision import resolve_precision, with_precision
from tfuq.model_store.trained import TrainedModel, load_members, load_trained_model

if TYPE_CHECKING:
    from tfuq.stages.train import TrainingResult

__all__ = [
    "UQValidationError",
    "held_out_subjects",
    "run_validation",
    "size_sweep_config",
    "size_sweep_intervals",
    "train_size_sweep_model",
    "validate_uq",
]

_LOG = logging.getLogger(__name__)
_MAX_PLOT_VOXELS = 200_000


class UQValidationError(UserError):
    """An expected direction of the uncertainty checks failed (exit code 2, one line)."""


def validate_uq(config: Config) -> None:
    """The ``tfuq validate-uq`` stage: see :func:`run_validation`."""
    run_validation(config)


def _std(maps: Mapping[str, np.ndarray], key: str, scale: float) -> np.ndarray:
    return np.sqrt(np.maximum(maps[key], 0.0)) * scale


def held_out_subjects(config: Config, sources: Mapping[str, Any]) -> list[SubjectInputs]:
    """The subjects validate-uq scores: Inference (else Validation) subjects with a target.

    At most ``[EVALUATION] uq_subjects`` of them, in the split's order, loaded
    as ``tfuq infer`` loads them (with their target, mask and noise map).

    Raises:
        UserError: no split file, or no such subject.
    """
    from tfuq.inference.subject_inputs import find_inference_subjects

    split_file = Path(config.system.dataset_split_file)
    if not split_file.exists():
        raise UserError(f"no dataset split file {split_file}; run tfuq train first")
    split = read_split(split_file)
    found = find_inference_subjects(config, sources)
    with_target = {i: f for i, f in found.items() if config.target_section in f}
    for phase in (INFERENCE, VALIDATION):
        ids = [i for i in with_target if split.get(i) == phase]
        if ids:
            break
    if not ids:
        raise UserError(f"{split_file}: no Inference or Validation subject with a target for validate-uq")
    if config.evaluation.uq_subjects:
        ids = ids[: config.evaluation.uq_subjects]
    return [load_inference_subject(config, i, with_target[i], sources, need_target=True) for i in ids]


def _subject_loader(config: Config, sources: Mapping[str, Any]) -> Callable[[str], SubjectInputs]:
    """Load any subject by id as ``tfuq infer`` does, each once (the size sweep's Training subjects)."""
    from tfuq.inference.subject_inputs import find_inference_subjects

    found = find_inference_subjects(config, sources)
    loaded: dict[str, SubjectInputs] = {}

    def load(subject: str) -> SubjectInputs:
        if subject not in loaded:
            loaded[subject] = load_inference_subject(config, subject, found[subject], sources)
        return loaded[subject]

    return load


def _region(subject: SubjectInputs) -> np.ndarray:
    return subject.mask if subject.mask is not None and subject.mask.any() else np.ones(subject.shape, bool)


def _noise_sweep(
    members: Sequence[TrainedModel],
    subjects: Sequence[SubjectInputs],
    settings: PredictionSettings,
    config: Config,
) -> tuple[list[float], list[float], dict[str, dict[str, np.ndarray]]]:
    """Mean aleatoric std (mask, whole image) per noise level, and the clean maps per subject."""
    levels = list(config.evaluation.noise_levels)
    scale = members[0].target_normalisation.scale
    inside = np.zeros((len(levels), len(subjects)))
    image = np.zeros_like(inside)
    clean: dict[str, dict[str, np.ndarray]] = {}
    for j, subject in enumerate(subjects):
        noisy = noise_sweep_inputs(subject.normalised(), levels, seed=config.system.seed + j)
        for i, (level, inputs) in enumerate(zip(levels, noisy)):
            maps = predict_subject(members, inputs, settings)
            std = _std(maps, ALEATORIC_VAR, scale)
            inside[i, j], image[i, j] = float(std[_region(subject)].mean()), float(std.mean())
            if level == 0.0:
                clean[subject.id] = maps
            _LOG.info("noise sweep %s: level %g -> mean aleatoric std %.4g", subject.id, level, inside[i, j])
    return inside.mean(axis=1).tolist(), image.mean(axis=1).tolist(), clean


def _anomalies(
    members: Sequence[TrainedModel],
    subjects: Sequence[SubjectInputs],
    settings: PredictionSettings,
    config: Config,
) -> list[dict[str, float]]:
    scale = members[0].target_normalisation.scale
    trials = []
    for k in range(config.evaluation.anomaly_trials):
        subject = subjects[k % len(subjects)]
        side = config.evaluation.anomaly_size or max(2, round(min(subject.shape) / 6))
        side = min(side, min(subject.shape))
        raw, cube, center = insert_anomaly(
            subject.raw,
            _region(subject),
            side,
            seed=config.system.seed + k,
            min_changed=config.evaluation.anomaly_min_changed,
        )
        maps = predict_subject(members, subject.normalised(raw), settings)
        scores = anomaly_scores(_std(maps, EPISTEMIC_VAR, scale), cube, _region(subject))
        trials.append({**scores, "subject": subject.id, "center": list(center), "side": side})
        _LOG.info("anomaly %d in %s at %s: AUROC %.3f, ratio %.3f", k, subject.id, center, scores["auroc"],
                  scores["ratio"])  # fmt: skip
    return trials


def size_sweep_config(
    config: Config, model_dir: Path, *, seed: int | None = None, prior_scale: float = 1.0
) -> Config:
    """One size-sweep model's configuration: same settings, its own model_dir and split.

    It trains for at most ``[EVALUATION] size_sweep_iter`` iterations; with
    ``size_sweep_patience`` it validates every ``[TRAINING]
    validation_every_n`` iterations and stops after that many validations
    without a lower validation loss (Reinhold: "trained until the validation
    loss plateaued"), counting from ``size_sweep_min_iter`` iterations.

    ``prior_scale`` multiplies the prior terms of the dropout objective:
    the concrete-dropout regularisers and the weight decay. In Gal's
    derivation they are ``l^2 / (tau N)`` and ``2 / (tau N)`` for N training
    points, so a model trained on ``n`` of the ``N`` subjects takes
    ``prior_scale = N / n`` (configured values are those of the full set).

    Reference:
        Gal, Hron & Kendall, "Concrete Dropout", NeurIPS 2017,
        arXiv:1705.07832 (regularisers of section 3).
    """
    if not prior_scale > 0:
        raise ValueError(f"prior_scale must be > 0. Received: prior_scale={prior_scale!r}")
    system = dataclasses.replace(
        config.system,
        model_dir=str(model_dir),
        dataset_split_file=str(model_dir / "dataset_split.csv"),
        seed=config.system.seed if seed is None else seed,
    )
    patience = config.evaluation.size_sweep_patience
    training = dataclasses.replace(
        config.training,
        max_iter=config.evaluation.size_sweep_iter,
        starting_iter=-1,
        save_every_n=0,
        tensorboard_every_n=0,
        validation_every_n=config.training.validation_every_n if patience else -1,
        early_stopping_patience=patience,
        early_stopping_start=config.evaluation.size_sweep_min_iter,
        convergence_window=0,
        weight_decay=config.training.weight_decay * prior_scale,
    )
    uncertainty = dataclasses.replace(
        config.uncertainty,
        weight_regularizer=config.uncertainty.weight_regularizer * prior_scale,
        dropout_regularizer=config.uncertainty.dropout_regularizer * prior_scale,
    )
    return dataclasses.replace(config, system=system, training=training, uncertainty=uncertainty)


@dataclasses.dataclass(frozen=True)
class _SizeSweep:
    """The size sweep's result: per size the mean over repeats, its interval, every model's record."""

    sizes: list[int]
    values: list[float]
    intervals: list[tuple[float, float] | None] | None
    intervals_over: str | None
    models: list[dict[str, Any]]
    training_values: list[float] = dataclasses.field(default_factory=list)


def size_sweep_intervals(
    values: np.ndarray, per_subject: Sequence[Mapping[str, float]], *, seed: int
) -> tuple[list[tuple[float, float] | None] | None, str | None]:
    """95 % bootstrap intervals of the size sweep's points (Reinhold Fig. 1's shading).

    With several repeats each size's interval resamples its repeats' values
    (the spread of retraining on other subsets with other seeds); with one
    repeat it resamples the held-out subjects' values of the one model per
    size (:func:`tfuq.evaluation.bootstrap_mean_interval`).

    Args:
        values: Shape (repeats, sizes): each model's mean held-out epistemic std.
        per_subject: With one repeat, per size the model's mean epistemic std
            per held-out subject.
        seed: Seed of the resampling.

    Returns:
        ``(intervals, over)``: one ``(low, high)`` per size and "repeats" or
        "held-out subjects"; ``(None, None)`` with one repeat and one subject.
    """
    if values.shape[0] >= 2:
        return [bootstrap_mean_interval(values[:, k], seed=seed) for k in range(values.shape[1])], "repeats"
    if per_subject and min(len(v) for v in per_subject) >= 2:
        intervals = [bootstrap_mean_interval(list(v.values()), seed=seed) for v in per_subject]
        return intervals, "held-out subjects"
    return None, None


def _size_sweep_subjects(
    config: Config, subjects: Sequence[SubjectInputs], split: Mapping[str, str]
) -> tuple[list[int], list[str], dict[str, str]]:
    """The sweep's sizes, the Training subjects it draws from, and the held ones with their phase.

    Checked before any experiment runs, so a bad size sweep is refused before validate-uq
    spends minutes or writes anything.

    Raises:
        ConfigError: sizes that do not rise or exceed the Training subjects; stopping on the
            validation loss without Validation subjects or validations.
    """
    sizes = list(config.evaluation.size_sweep)
    if len(sizes) < 2:
        return sizes, [], {}
    train_ids = sorted(i for i, p in split.items() if p == TRAINING)
    if sizes[-1] > len(train_ids) or any(b <= a for a, b in itertools.pairwise(sizes)):
        raise ConfigError(
            f"{config.path}: [EVALUATION] size_sweep: expected rising sizes of at most {len(train_ids)} "
            f"(the Training subjects), got {', '.join(map(str, sizes))}"
        )
    held = {s.id: INFERENCE for s in subjects}
    if config.evaluation.size_sweep_patience:
        valid_ids = sorted(i for i, p in split.items() if p == VALIDATION and i not in held)
        if not valid_ids or config.training.validation_every_n <= 0:
            raise ConfigError(
                f"{config.path}: [EVALUATION] size_sweep_patience: expected Validation subjects and "
                f"[TRAINING] validation_every_n > 0 to stop on the validation loss, got "
                f"{len(valid_ids)} Validation subject(s) and validation_every_n = "
                f"{config.training.validation_every_n}; set size_sweep_patience = 0 for fixed iterations"
            )
        if config.evaluation.size_sweep_min_iter >= config.evaluation.size_sweep_iter:
            raise ConfigError(
                f"{config.path}: [EVALUATION] size_sweep_min_iter: expected fewer than size_sweep_iter = "
                f"{config.evaluation.size_sweep_iter} iterations (no validation would count), got "
                f"{config.evaluation.size_sweep_min_iter}"
            )
        held = {**held, **{i: VALIDATION for i in valid_ids}}
    return sizes, train_ids, held


def _size_sweep(
    config: Config,
    subjects: Sequence[SubjectInputs],
    settings: PredictionSettings,
    plan: tuple[list[int], list[str], dict[str, str]],
    training_subject: Callable[[str], SubjectInputs],
) -> _SizeSweep:
    sizes, train_ids, held = plan
    if len(sizes) < 2:
        _LOG.info("[EVALUATION] size_sweep has fewer than 2 sizes: no training-set size sweep")
        return _SizeSweep([], [], None, None, [])
    repeats = config.evaluation.size_sweep_repeats
    values, training = np.zeros((repeats, len(sizes))), np.zeros((repeats, len(sizes)))
    records = []
    for r in range(repeats):
        seed = config.system.seed + r
        for k, subset in enumerate(nested_subsets(train_ids, sizes, seed=seed)):
            record = _sweep_model(
                config, subset, held, subjects, settings, seed, num_train=len(train_ids),
                training_subject=training_subject,
            )  # fmt: skip
            records.append({"repeat": r + 1, **record})
            values[r, k] = float(np.mean(list(record["mean_epistemic_std"].values())))
            training[r, k] = float(np.mean(list(record["training_epistemic_std"].values())))
            _LOG.info(
                "size sweep (repeat %d): %d subject(s) -> mean held-out epistemic std %.4g",
                r + 1,
                len(subset),
                values[r, k],
            )
    per_subject = [r["mean_epistemic_std"] for r in records] if repeats == 1 else []
    intervals, over = size_sweep_intervals(values, per_subject, seed=config.system.seed)
    for size, value, ci in zip(sizes, values.mean(axis=0), intervals or [None] * len(sizes), strict=True):
        if ci is not None:
            _LOG.info("size sweep: %d subject(s): %.4g, 95%% interval over %s %.4g-%.4g", size, value, over,
                      ci[0], ci[1])  # fmt: skip
    return _SizeSweep(
        sizes, values.mean(axis=0).tolist(), intervals, over, records, training.mean(axis=0).tolist()
    )


def train_size_sweep_model(
    config: Config,
    subset: Sequence[str],
    held: Mapping[str, str],
    folder: Path,
    *,
    seed: int,
    num_train: int,
) -> tuple[TrainedModel, TrainingResult]:
    """Train one size-sweep model on ``subset`` in ``folder`` and load the weights it is scored with.

    The model is trained as ``tfuq validate-uq`` trains every size-sweep
    model (:func:`size_sweep_config`): ``config``'s settings, the prior terms
    scaled by ``num_train / len(subset)``, stopped on the validation loss
    when ``[EVALUATION] size_sweep_patience`` is set, in which case the
    best-validation weights are loaded.

    Args:
        config: The full model's configuration.
        subset: The Training subjects of this model.
        held: The other subjects of its split and their phase (the held-out
            subjects; the Validation subjects it stops on); every other
            subject is listed as Excluded.
        folder: An empty or new folder: the model's model_dir.
        seed: Its ``[SYSTEM] seed``.
        num_train: The number of Training subjects of the full model.

    Returns:
        The loaded model and the training run's result (stop step and reason).
    """
    from tfuq.stages.train import run_training

    everyone = dict.fromkeys(all_subject_ids(config, resolve_sources(config)), EXCLUDED)
    write_split(folder / "dataset_split.csv", {**everyone, **held, **{i: TRAINING for i in subset}})
    _LOG.info(
        "size sweep: training on %d subject(s) for %d iterations",
        len(subset),
        config.evaluation.size_sweep_iter,
    )
    sweep_config = size_sweep_config(config, folder, seed=seed, prior_scale=num_train / len(subset))
    result = run_training(sweep_config)
    _LOG.info("size sweep: %d subject(s) stopped at step %d (%s)", len(subset), result.final_step,
              result.stopped)  # fmt: skip
    member = load_trained_model(folder, best=bool(sweep_config.training.early_stopping_patience))
    model = with_precision(member.model, resolve_precision(config, folder))
    return dataclasses.replace(member, model=model), result


def _sweep_model(
    config: Config,
    subset: Sequence[str],
    held: Mapping[str, str],
    subjects: Sequence[SubjectInputs],
    settings: PredictionSettings,
    seed: int,
    *,
    num_train: int,
    training_subject: Callable[[str], SubjectInputs],
) -> dict[str, Any]:
    """Train one size-sweep model (``size_sweep_members`` networks) and score it on ``subjects``.

    It is also scored on as many of its own Training subjects (the first of
    ``subset``, the same ones at every size of a repeat, since the subsets are
    nested; loaded by ``training_subject``): a model that is no more certain
    on a subject it was trained on than on an unseen one has no data gap for
    a larger training set to close.

    With several members they differ only in their seed (initial weights,
    window draws, dropout masks), ``seed + m * size_sweep_repeats`` for member
    ``m``, and are scored as one deep ensemble (law of total variance over
    members and MC samples, as ``tfuq infer`` combines ``[UNCERTAINTY]
    ensemble``).

    Returns:
        Its record in ``validate_uq.json``: ``size``, ``subjects`` (its
        Training subjects), ``seed`` (of its nested subsets), ``members``
        (per network: ``seed``, ``final_step``, ``stopped``, ``model_dir`` of
        the kept copy or None and, with several members, its own
        ``mean_epistemic_std`` and ``training_epistemic_std`` per subject),
        and the mean epistemic and aleatoric std inside each held-out subject's mask (``mean_epistemic_std``,
        ``mean_aleatoric_std``: subject -> target units), and
        ``training_epistemic_std``, the same on its own Training subjects.
    """
    ev = config.evaluation
    seeds = [seed + m * ev.size_sweep_repeats for m in range(ev.size_sweep_members)]
    with tempfile.TemporaryDirectory(prefix=f"tfuq-size-sweep-{len(subset)}-") as tmp:
        members, records = [], []
        for member_seed in seeds:
            folder = Path(tmp) / f"seed{member_seed}"
            member, result = train_size_sweep_model(
                config, subset, held, folder, seed=member_seed, num_train=num_train
            )
            members.append(member)
            records.append({"seed": member_seed, "final_step": result.final_step, "stopped": result.stopped})
        members = check_windows(members, settings)
        epistemic, aleatoric, seen = {}, {}, {}
        for s in subjects:
            epistemic[s.id], aleatoric[s.id], alone = _score_sweep_model(members, s, settings)
            for record, value in zip(records, alone, strict=False):
                record.setdefault("mean_epistemic_std", {})[s.id] = value
            _LOG.info("size sweep: %d subject(s), %s: mean epistemic std %.4g, mean aleatoric std %.4g%s",
                      len(subset), s.id, epistemic[s.id], aleatoric[s.id], _each(alone))  # fmt: skip
        for i in subset[: len(subjects)]:  # as many of its own Training subjects as held-out ones
            seen[i], _, alone = _score_sweep_model(members, training_subject(i), settings)
            for record, value in zip(records, alone, strict=False):
                record.setdefault("training_epistemic_std", {})[i] = value
            _LOG.info("size sweep: %d subject(s), %s (a Training subject): mean epistemic std %.4g%s",
                      len(subset), i, seen[i], _each(alone))  # fmt: skip
        held_mean, seen_mean = np.mean(list(epistemic.values())), np.mean(list(seen.values()))
        _LOG.info("size sweep: %d subject(s): mean epistemic std held-out / on its Training subjects %.3g",
                  len(subset), held_mean / seen_mean if seen_mean > 0 else float("nan"))  # fmt: skip
        for member, record in zip(members, records, strict=True):
            record["model_dir"] = None
            if ev.size_sweep_keep:
                record["model_dir"] = _keep_sweep_model(config, member, size=len(subset), seed=record["seed"])
    return {
        "size": len(subset),
        "subjects": list(subset),
        "seed": seed,
        "members": records,
        "mean_epistemic_std": epistemic,
        "mean_aleatoric_std": aleatoric,
        "training_epistemic_std": seen,
    }


def _score_sweep_model(
    members: Sequence[TrainedModel], subject: SubjectInputs, settings: PredictionSettings
) -> tuple[float, float, list[float]]:
    """Mean epistemic and aleatoric std of a sweep model in ``subject``'s mask (target units).

    Returns:
        ``(epistemic, aleatoric, alone)``: the members as one ensemble, and
        with several members each network's own mean epistemic std ([] with one).
    """
    scale = members[0].target_normalisation.scale  # the maps are in the first member's units
    maps = predict_subject(members, subject.normalised(), settings)
    region = _region(subject)
    epistemic = float(_std(maps, EPISTEMIC_VAR, scale)[region].mean())
    aleatoric = float(_std(maps, ALEATORIC_VAR, scale)[region].mean())
    alone = []
    if len(members) > 1:  # each network alone: how much of the spread is the seed's
        for member in members:
            maps = predict_subject([member], subject.normalised(), settings)
            alone.append(float(_std(maps, EPISTEMIC_VAR, scale)[region].mean()))
    return epistemic, aleatoric, alone


def _each(alone: Sequence[float]) -> str:
    return f"; each network alone {', '.join(f'{v:.4g}' for v in alone)}" if alone else ""


def _sweep_model_dir(config: Config) -> Path:
    return Path(config.evaluation.save_csv_dir) / "size_sweep"


def _keep_sweep_model(config: Config, member: TrainedModel, *, seed: int, size: int) -> str:
    """Copy a scored size-sweep model to ``<save_csv_dir>/size_sweep/seed<seed>-n<size>``.

    The copy is a model_dir ``tfuq infer`` reads (``--set SYSTEM.model_dir=``):
    ``model.keras`` holds the weights the sweep scored (the best-validation
    ones when it stopped on the validation loss), beside the split, the
    normalisation and the training configuration; checkpoints are left out.
    It is written under a temporary name and renamed, so a folder of that
    name is always whole.
    """
    final = _sweep_model_dir(config) / f"seed{seed}-n{size}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(member.model_dir, partial, ignore=shutil.ignore_patterns("checkpoints"))
    member.model.save(partial / "model.keras")
    if final.exists():  # run_validation refused earlier unless [EVALUATION] overwrite
        shutil.rmtree(final)
    partial.rename(final)
    return str(final)


def _noise_check(
    config: Config,
    subjects: Sequence[SubjectInputs],
    clean: Mapping[str, Mapping[str, np.ndarray]],
    scale: float,
) -> tuple[dict[str, float] | None, tuple[np.ndarray, np.ndarray] | None]:
    pairs = [
        (_std(clean[s.id], ALEATORIC_VAR, scale)[_region(s)], s.noise_std[_region(s)])
        for s in subjects
        if s.noise_std is not None and s.id in clean
    ]
    if not pairs:
        return None, None
    estimate = np.concatenate([p[0] for p in pairs])
    truth = np.concatenate([p[1] for p in pairs])
    scores = aleatoric_vs_noise(estimate, truth)
    if estimate.size > _MAX_PLOT_VOXELS:
        keep = np.random.default_rng(config.system.seed).choice(
            estimate.size, _MAX_PLOT_VOXELS, replace=False
        )
        estimate, truth = estimate[keep], truth[keep]
    return scores, (estimate, truth)


def run_validation(config: Config) -> dict[str, Any]:
    """Run the checks, write validate_uq.json and plots, and fail on a wrong direction.

    Returns:
        The summary written (:func:`tfuq.evaluation.validation_summary` plus
        ``subjects``, ``mc_samples``, ``size_sweep_iter``, ``paths`` and
        ``size_sweep.models``, one record per size-sweep model).

    Raises:
        UQValidationError: an expected direction failed (after writing).
        UserError: no trained model or held-out subject, existing outputs
            (``validate_uq.json``, kept size-sweep models) without
            ``[EVALUATION] overwrite``, bad data.
        ConfigError: a size sweep larger than the Training phase.
    """
    ev = config.evaluation
    out_dir = Path(ev.save_csv_dir)
    json_path = out_dir / VALIDATION_FILES["json"]
    if json_path.exists() and not ev.overwrite:
        raise UserError(
            f"{json_path}: already exists; refusing to overwrite: set [EVALUATION] overwrite = true"
        )
    if len(ev.noise_levels) < 2:
        raise ConfigError(f"{config.path}: [EVALUATION] noise_levels: expected at least 2 rising levels")
    kept = _sweep_model_dir(config)
    if ev.size_sweep_keep and kept.exists() and not ev.overwrite:
        raise UserError(f"{kept}: already exists; refusing to overwrite: set [EVALUATION] overwrite = true")
    members = load_members(config)
    settings = prediction_settings(config, mc_samples=ev.uq_mc_samples or None)
    members = check_windows(members, settings)
    sources = resolve_sources(config)
    subjects = held_out_subjects(config, sources)
    sweep_plan = _size_sweep_subjects(config, subjects, read_split(config.system.dataset_split_file))
    scale = members[0].target_normalisation.scale
    _LOG.info("validate-uq on %s with T = %d", ", ".join(s.id for s in subjects), settings.mc_samples)
    noise_inside, noise_image, clean = _noise_sweep(members, subjects, settings, config)
    if not clean:
        clean = {s.id: predict_subject(members, s.normalised(), settings) for s in subjects}
    trials = _anomalies(members, subjects, settings, config)
    sweep = _size_sweep(config, subjects, settings, sweep_plan, _subject_loader(config, sources))
    noise_scores, sample = _noise_check(config, subjects, clean, scale)
    summary = validation_summary(
        noise_levels=ev.noise_levels,
        noise_aleatoric=noise_inside,
        sizes=sweep.sizes or [0, 1],
        size_epistemic=sweep.values or [1.0, 0.0],
        anomaly_trials=trials,
        aleatoric_noise=noise_scores,
        noise_aleatoric_image=noise_image,
        size_intervals=sweep.intervals,
        size_intervals_over=sweep.intervals_over,
        required=ev.required_checks,
    )
    if not sweep.sizes:  # no sweep run: nothing to check
        summary["size_sweep"] = {"sizes": [], "mean_epistemic_std": []}
        summary["size_sweep_monotonic"] = None
    summary["size_sweep"]["models"] = sweep.models
    if sweep.sizes:  # the same models on their own Training subjects: the gap a larger set could close
        summary["size_sweep"]["training_mean_epistemic_std"] = sweep.training_values
    summary.update(
        {
            "subjects": [s.id for s in subjects],
            "mc_samples": settings.mc_samples,
            "size_sweep_iter": ev.size_sweep_iter,
            "noise_levels_units": "normalised input units (fraction of each input's normalisation scale)",
        }
    )
    units = _units(config)
    paths = write_validation(out_dir, summary, aleatoric_sample=sample, units=units, overwrite=ev.overwrite)
    summary["paths"] = {name: str(p) for name, p in paths.items()}
    if summary["failures"]:
        raise UQValidationError(
            f"validate-uq: {len(summary['failures'])} expected direction(s) failed: "
            f"{'; '.join(summary['failures'])} (see {paths['json']})"
        )
    for text in summary["failures_reported"]:
        _LOG.warning("validate-uq: %s (reported; not in [EVALUATION] required_checks)", text)
    _LOG.info("validate-uq: every required direction holds (see %s)", paths["json"])
    return summary


def _units(config: Config) -> str:
    from tfuq.stages.evaluate import evaluation_units

    return evaluation_units(config)
