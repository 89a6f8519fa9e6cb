"""tfuq validate-uq on the tiny phantom with analytic models whose uncertainty is known in closed form.

Oracles: the mean aleatoric std of ``scale = base + slope * x^2`` under the same seeded input noise,
Spearman (scipy) against the phantom's noise map, and the epistemic std of a two-member ensemble
``loc_b - loc_a = bump * (1 - x)^4`` inside and around the same zero cubes (Mann-Whitney AUROC)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from scipy import stats
from uq_job_setup import save_analytic_model, tiny_config
from utils import load_example

from tfuq.cli import main
from tfuq.data import fit_normalisation, load_volume, normalise, read_split, write_split
from tfuq.data.prepare import prepare_data
from tfuq.evaluation import bootstrap_mean_interval, insert_anomaly, noise_sweep_inputs
from tfuq.experiments.validate_uq import UQValidationError, run_validation


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("validate_job")
    config = tiny_config(tmp)
    prepare_data(config)
    split = read_split(config.system.dataset_split_file)
    subject = next(i for i, p in split.items() if p == "Inference")
    folder = next((tmp / "phantom").iterdir())
    volumes = {k: load_volume(folder / f"{subject}_{k}.nii.gz").array for k in ("mr", "mask", "noise_std")}
    return {"tmp": tmp, "split": split, "subject": subject, **volumes}


def _config(job: dict, name: str, overrides: tuple[str, ...] = ()):
    model_dir = job["tmp"] / name
    write_split(model_dir / "dataset_split.csv", job["split"], overwrite=True)
    return tiny_config(job["tmp"], ("UNCERTAINTY.mc_samples=1", *overrides), model_dir=model_dir)


def _run(config) -> tuple[dict, str]:
    try:
        run_validation(config)
        message = ""
    except UQValidationError as err:
        message = str(err)
    return json.loads((Path(config.evaluation.save_csv_dir) / "validate_uq.json").read_text()), message


#: A size sweep of trained U-Nets on 1 and 2 subjects, without anomalies.
_SWEEP = (
    "EVALUATION.size_sweep=1, 2",
    "EVALUATION.anomaly_trials=0",
    "INFERENCE.spatial_window_size=16, 16, 16",  # the trained U-Nets take their training window
)


def _training_subject(config, subject: str):
    """A Training subject loaded as ``tfuq infer`` loads any subject."""
    from tfuq.data.sources import resolve_sources
    from tfuq.inference.subject_inputs import find_inference_subjects, load_inference_subject

    sources = resolve_sources(config)
    return load_inference_subject(config, subject, find_inference_subjects(config, sources)[subject], sources)


def _normalised(mr: np.ndarray) -> tuple[np.ndarray, object]:
    params = fit_normalisation(mr, "percentile", cutoff=(0.01, 0.99))
    return normalise(mr.astype(np.float64), params), params


def test_noise_sweep_and_true_noise_against_the_analytic_aleatoric_std(job: dict) -> None:
    base, slope, levels = 0.01, 0.5, (0.0, 0.1, 0.2)
    save_analytic_model(job["tmp"] / "noise", base=base, slope=slope)
    overrides = ("EVALUATION.noise_levels=0, 0.1, 0.2", "EVALUATION.anomaly_trials=0")
    result, message = _run(_config(job, "noise", overrides))
    body = job["mask"] > 0
    x, _ = _normalised(job["mr"])
    noisy = noise_sweep_inputs(x[..., None].astype(np.float32), levels, seed=0)
    expected = [
        float(np.mean(4095.0 * (base + slope * v[..., 0].astype(np.float64) ** 2)[body])) for v in noisy
    ]
    np.testing.assert_allclose(result["noise_sweep"]["mean_aleatoric_std"], expected, rtol=1e-4)
    assert result["noise_sweep_monotonic"] is True and result["size_sweep_monotonic"] is None
    estimate = 4095.0 * (base + slope * x**2)
    rho = stats.spearmanr(estimate[body], job["noise_std"][body]).statistic
    assert result["aleatoric_vs_noise_spearman"] == pytest.approx(rho, abs=1e-3)
    ratio = np.mean(estimate[body]) / np.mean(job["noise_std"][body])
    assert result["aleatoric_vs_noise_ratio"] == pytest.approx(ratio, rel=1e-4)
    assert ("Spearman" in message) == (rho <= 0) and result["passed"] == (rho > 0)
    folder = Path(job["tmp"] / "noise" / "evaluation")
    assert all((folder / f).stat().st_size > 0 for f in ("uq_sweeps.png", "aleatoric_vs_noise.png"))


def test_anomaly_epistemic_of_an_analytic_ensemble(job: dict) -> None:
    bump, side, trials = 0.3, 4, 2
    save_analytic_model(job["tmp"] / "member_a", base=0.02)
    save_analytic_model(job["tmp"] / "member_b", base=0.02, bump=bump)
    overrides = (
        f"UNCERTAINTY.ensemble={job['tmp'] / 'member_b'}",
        "EVALUATION.noise_levels=0, 0.1",
        f"EVALUATION.anomaly_trials={trials}",
        f"EVALUATION.anomaly_size={side}",
    )
    result, message = _run(_config(job, "member_a", overrides))
    body = job["mask"] > 0
    _, params = _normalised(job["mr"])
    for k, trial in enumerate(result["anomaly"]["trials"]):
        raw, cube, center = insert_anomaly(job["mr"], body, side, seed=k)
        assert trial["center"] == list(center) and trial["side"] == side
        x = normalise(raw.astype(np.float64), params)
        epistemic = 4095.0 * bump * (1.0 - x) ** 4 / 2.0
        outside = body & ~cube
        assert trial["inside"] == pytest.approx(epistemic[cube].mean(), rel=1e-4)
        assert trial["outside"] == pytest.approx(epistemic[outside].mean(), rel=1e-4)
        u = stats.mannwhitneyu(epistemic[cube], epistemic[outside]).statistic
        assert trial["auroc"] == pytest.approx(u / (cube.sum() * outside.sum()), abs=1e-3)
    assert result["anomaly_auroc"] > 0.9 and result["anomaly_ratio"] > 1.0
    # The aleatoric std does not depend on the input: the noise sweep is flat, an expected direction fails.
    assert result["noise_sweep_monotonic"] is False
    assert message.startswith("validate-uq: ") and "noise sweep" in message and "\n" not in message


@pytest.fixture
def restore_logging():
    """The CLI reconfigures the ``tfuq`` logger (handlers on captured streams): put it back afterwards."""
    logger = logging.getLogger("tfuq")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.propagate, logger.level = saved[1], saved[2]


def test_failed_direction_exits_with_code_2(
    job: dict, capsys: pytest.CaptureFixture, restore_logging
) -> None:
    save_analytic_model(job["tmp"] / "flat", base=0.02)
    config = _config(job, "flat", ("EVALUATION.anomaly_trials=0",))
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "validate-uq",
                str(config.path),
                "--set",
                "UNCERTAINTY.mc_samples=1",
                "--set",
                "EVALUATION.anomaly_trials=0",
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tfuq: error: validate-uq: ") and "noise sweep" in err[-1]
    with pytest.raises(SystemExit) as again:  # the outputs are refused without overwrite
        main(["validate-uq", str(config.path), "--set", "UNCERTAINTY.mc_samples=1"])
    assert again.value.code == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_size_sweep_trains_a_model_per_nested_subset(job: dict, caplog: pytest.LogCaptureFixture) -> None:
    save_analytic_model(job["tmp"] / "sizes", base=0.02, slope=0.5)
    overrides = (*_SWEEP, "EVALUATION.size_sweep_iter=2", "EVALUATION.size_sweep_repeats=2")
    with caplog.at_level(logging.INFO, logger="tfuq"):
        result, _ = _run(_config(job, "sizes", overrides))
    assert caplog.text.count("size sweep: training on") == 4  # 2 sizes x 2 repeats
    sweep = result["size_sweep"]
    assert sweep["sizes"] == [1, 2] and len(sweep["mean_epistemic_std"]) == 2
    models = sweep["models"]
    assert [(m["repeat"], m["size"]) for m in models] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for k, size in enumerate(sweep["sizes"]):  # each size's value is the mean over the repeats
        per_repeat = [np.mean(list(m["mean_epistemic_std"].values())) for m in models if m["size"] == size]
        assert sweep["mean_epistemic_std"][k] == pytest.approx(np.mean(per_repeat))
    assert all(v > 0 for v in sweep["mean_epistemic_std"])  # trained U-Nets with MC dropout
    assert isinstance(result["size_sweep_monotonic"], bool)
    assert sweep["ci95_over"] == "repeats"  # each size's interval resamples its two repeats' values
    for size, ci in zip(sweep["sizes"], sweep["ci95"], strict=True):
        per_repeat = [np.mean(list(m["mean_epistemic_std"].values())) for m in models if m["size"] == size]
        assert ci == pytest.approx(list(bootstrap_mean_interval(per_repeat, seed=0)))
        assert ci == pytest.approx([min(per_repeat), max(per_repeat)])  # two values: their range


def test_size_sweep_keep_writes_the_scored_ensembles_and_their_records(
    job: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfuq.data.sources import resolve_sources
    from tfuq.errors import UserError
    from tfuq.experiments.validate_uq import held_out_subjects
    from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR
    from tfuq.inference.prediction import predict_subject, prediction_settings
    from tfuq.model_store.trained import load_trained_model

    save_analytic_model(job["tmp"] / "keep", base=0.02, slope=0.5)
    overrides = (
        *_SWEEP,
        "EVALUATION.size_sweep_iter=2",
        "EVALUATION.size_sweep_members=2",
        "EVALUATION.size_sweep_keep=true",
        "EVALUATION.noise_levels=0, 0.1",
    )
    config = _config(job, "keep", overrides)
    result, _ = _run(config)
    models = result["size_sweep"]["models"]
    train_ids = sorted(i for i, p in job["split"].items() if p == "Training")
    seed = config.system.seed
    assert [(m["repeat"], m["size"], m["seed"]) for m in models] == [(1, 1, seed), (1, 2, seed)]
    assert set(models[0]["subjects"]) < set(models[1]["subjects"]) <= set(train_ids)  # nested
    settings = prediction_settings(config)
    subjects = held_out_subjects(config, resolve_sources(config))
    # One repeat and one held-out subject: nothing to resample, so no interval and no separation verdict.
    assert len(subjects) == 1 and "ci95" not in result["size_sweep"]
    assert result["size_sweep_separated"] is None
    sweep = result["size_sweep"]
    for record, mean, own_mean in zip(
        models, sweep["mean_epistemic_std"], sweep["training_mean_epistemic_std"], strict=True
    ):
        assert mean == pytest.approx(np.mean(list(record["mean_epistemic_std"].values())))
        assert own_mean == pytest.approx(np.mean(list(record["training_epistemic_std"].values())))
        members = record["members"]
        assert [(m["seed"], m["final_step"], m["stopped"]) for m in members] == [
            (seed, 2, "max_iter"),
            (seed + 1, 2, "max_iter"),  # member m: seed + m * size_sweep_repeats
        ]
        for member in members:
            folder = Path(member["model_dir"])
            assert folder.name == f"seed{member['seed']}-n{record['size']}"
            assert not (folder / "checkpoints").exists() and not list(folder.parent.glob("*.partial"))
            split = read_split(folder / "dataset_split.csv")
            assert sorted(i for i, p in split.items() if p == "Training") == sorted(record["subjects"])
        # Oracle: the kept members, predicted again as one ensemble with the same seeded dropout
        # streams, give the recorded per-subject means, so they are the networks the sweep scored.
        ensemble = [load_trained_model(m["model_dir"]) for m in members]
        scale = ensemble[0].target_normalisation.scale
        for subject in subjects:
            maps = predict_subject(ensemble, subject.normalised(), settings)
            for key, name in ((EPISTEMIC_VAR, "mean_epistemic_std"), (ALEATORIC_VAR, "mean_aleatoric_std")):
                value = np.sqrt(np.maximum(maps[key], 0.0))[subject.mask].mean() * scale
                assert value == pytest.approx(record[name][subject.id], rel=1e-5)
        # ... and on its own first Training subject (the same at both sizes: the subsets are nested).
        own_id = record["subjects"][0]
        assert list(record["training_epistemic_std"]) == [own_id] and own_id == models[0]["subjects"][0]
        own = _training_subject(config, own_id)
        maps = predict_subject(ensemble, own.normalised(), settings)
        value = np.sqrt(np.maximum(maps[EPISTEMIC_VAR], 0.0))[own.mask].mean() * scale
        assert value == pytest.approx(record["training_epistemic_std"][own_id], rel=1e-5)
        for network, member in zip(ensemble, members, strict=True):
            alone = predict_subject([network], own.normalised(), settings)
            value = np.sqrt(np.maximum(alone[EPISTEMIC_VAR], 0.0))[own.mask].mean() * scale
            assert value == pytest.approx(member["training_epistemic_std"][own_id], rel=1e-5)
        for subject in subjects:
            for network, member in zip(ensemble, members, strict=True):  # each network alone
                alone = predict_subject([network], subject.normalised(), settings)
                value = np.sqrt(np.maximum(alone[EPISTEMIC_VAR], 0.0))[subject.mask].mean() * scale
                assert value == pytest.approx(member["mean_epistemic_std"][subject.id], rel=1e-5)
                assert not np.allclose(alone[EPISTEMIC_VAR], maps[EPISTEMIC_VAR])  # both members count
    assert all(v > 0 for record in models for v in record["mean_epistemic_std"].values())
    # examples/size_sweep_by_tissue.py reads the kept models and reprints validate-uq's values; the
    # voxel-weighted mean of its per-tissue rows is the body mean.
    argv = [str(config.path)]
    for override in ("UNCERTAINTY.mc_samples=1", *overrides):
        argv += ["--set", override]
    capsys.readouterr()
    assert load_example("size_sweep_by_tissue").main(argv) == 0
    blocks = capsys.readouterr().out.split("repeat ")[1:]
    assert len(blocks) == len(models)
    for block, record in zip(blocks, models, strict=True):
        head, *rows = block.strip().splitlines()
        shown, scored = (
            float(v) for v in re.search(r"epistemic mean ([\d.]+) \(validate-uq ([\d.]+)\)", head).groups()
        )
        assert shown == pytest.approx(scored, abs=0.051)
        assert scored == pytest.approx(record["mean_epistemic_std"][subjects[0].id], abs=0.051)
        voxels = np.array([int(r.split()[1]) for r in rows])
        tissue = np.array([float(r.split()[4]) for r in rows])
        assert voxels.sum() == subjects[0].mask.sum()
        assert np.dot(voxels, tissue) / voxels.sum() == pytest.approx(shown, abs=0.1)
    # The kept models are refused, before any work, unless [EVALUATION] overwrite.
    (Path(config.evaluation.save_csv_dir) / "validate_uq.json").unlink()
    with pytest.raises(UserError, match=r"size_sweep: already exists; refusing to overwrite"):
        run_validation(config)


def test_size_sweep_intervals_resample_repeats_else_held_out_subjects() -> None:
    from tfuq.experiments.validate_uq import size_sweep_intervals

    values = np.array([[3.0, 2.0, 1.0], [5.0, 2.0, 0.0]])  # 2 repeats x 3 sizes
    intervals, over = size_sweep_intervals(values, [], seed=0)
    assert over == "repeats" and intervals == [(3.0, 5.0), (2.0, 2.0), (0.0, 1.0)]  # two values: their range
    per_subject = [{"a": 4.0, "b": 6.0}, {"a": 1.0, "b": 2.0}]
    intervals, over = size_sweep_intervals(np.array([[5.0, 1.5]]), per_subject, seed=0)
    assert over == "held-out subjects" and intervals == [(4.0, 6.0), (1.0, 2.0)]
    assert size_sweep_intervals(np.array([[5.0, 1.5]]), [{"a": 5.0}, {"a": 1.5}], seed=0) == (None, None)


def test_size_sweep_config_stops_on_the_validation_loss_only_with_patience(job: dict) -> None:
    from tfuq.experiments.validate_uq import size_sweep_config

    fixed = size_sweep_config(
        _config(job, "cfg", ("EVALUATION.size_sweep_iter=7", "TRAINING.validation_every_n=3")),
        job["tmp"] / "a",
    )
    t = fixed.training
    assert (t.max_iter, t.validation_every_n, t.early_stopping_patience, t.starting_iter) == (7, -1, 0, -1)
    assert fixed.system.model_dir == str(job["tmp"] / "a")
    patient = size_sweep_config(
        _config(job, "cfg", ("EVALUATION.size_sweep_patience=2", "TRAINING.validation_every_n=3")),
        job["tmp"] / "b",
        seed=5,
    )
    t = patient.training
    assert (t.validation_every_n, t.early_stopping_patience, patient.system.seed) == (3, 2, 5)
    assert t.early_stopping_start == 0
    started = size_sweep_config(_config(job, "cfg", ("EVALUATION.size_sweep_min_iter=40",)), job["tmp"] / "d")
    assert started.training.early_stopping_start == 40
    # Gal: the prior terms are l^2 / (tau N) and 2 / (tau N): n of N subjects -> x N / n.
    base = _config(job, "cfg", ("TRAINING.weight_decay=0.01",))
    scaled = size_sweep_config(base, job["tmp"] / "c", prior_scale=4.0)
    assert scaled.training.weight_decay == pytest.approx(0.04)
    assert scaled.uncertainty.weight_regularizer == pytest.approx(4 * base.uncertainty.weight_regularizer)
    assert scaled.uncertainty.dropout_regularizer == pytest.approx(4 * base.uncertainty.dropout_regularizer)
    assert fixed.uncertainty == _config(job, "cfg").uncertainty  # prior_scale 1 changes nothing
    with pytest.raises(ValueError, match="prior_scale"):
        size_sweep_config(base, job["tmp"] / "c", prior_scale=0.0)


def test_size_sweep_patience_without_validation_is_a_config_error(job: dict) -> None:
    from tfuq.config import ConfigError

    save_analytic_model(job["tmp"] / "patience", base=0.02)
    overrides = (
        "EVALUATION.size_sweep=1, 2",
        "EVALUATION.size_sweep_patience=2",
        "EVALUATION.anomaly_trials=0",
        "EVALUATION.noise_levels=0, 0.1",
    )  # [TRAINING] validation_every_n is off in the tiny config
    with pytest.raises(ConfigError, match=r"size_sweep_patience: expected Validation subjects"):
        run_validation(_config(job, "patience", overrides))
    validating = (*overrides, "TRAINING.validation_every_n=2", "EVALUATION.size_sweep_iter=6")
    with pytest.raises(ConfigError, match=r"size_sweep_min_iter: expected fewer than size_sweep_iter = 6"):
        run_validation(_config(job, "patience", (*validating, "EVALUATION.size_sweep_min_iter=6")))


def test_load_trained_model_best_needs_a_best_validation_record(tmp_path: Path) -> None:
    from tfuq.errors import UserError
    from tfuq.model_store.trained import load_trained_model

    save_analytic_model(tmp_path / "m", base=0.02)
    with pytest.raises(UserError, match="best-validation record"):
        load_trained_model(tmp_path / "m", best=True)


@pytest.mark.slow
def test_size_sweep_with_patience_scores_the_best_validation_weights(
    job: dict, caplog: pytest.LogCaptureFixture
) -> None:
    save_analytic_model(job["tmp"] / "patient", base=0.02, slope=0.5)
    overrides = (
        *_SWEEP,
        "EVALUATION.size_sweep_iter=6",
        "EVALUATION.size_sweep_patience=1",
        "TRAINING.validation_every_n=2",
        "EVALUATION.noise_levels=0, 0.1",
    )
    with caplog.at_level(logging.INFO, logger="tfuq"):
        result, _ = _run(_config(job, "patient", overrides))
    stops = [r.getMessage() for r in caplog.records if "stopped at step" in r.getMessage()]
    assert len(stops) == 2 and all(("step 6" in m) or ("early_stopping" in m) for m in stops)
    # With size_sweep_min_iter = 4 the validation at step 2 does not count: the first counted one
    # (step 4) sets the best and patience 1 can only stop at the next (step 6), the cap.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tfuq"):
        _run(
            _config(
                job, "patient", (*overrides, "EVALUATION.size_sweep_min_iter=4", "EVALUATION.overwrite=true")
            )
        )
    stops = [r.getMessage() for r in caplog.records if "stopped at step" in r.getMessage()]
    assert len(stops) == 2 and all("stopped at step 6 " in m for m in stops), stops
    assert all(v > 0 for v in result["size_sweep"]["mean_epistemic_std"])


def test_load_trained_model_best_loads_the_best_checkpoint_weights(tmp_path: Path) -> None:
    import tensorflow as tf

    from tfuq.model_store.trained import load_trained_model

    folder = tmp_path / "m"
    save_analytic_model(folder, base=0.02)  # for its normalisation.json; model.keras is replaced below
    inputs = keras.Input((None, None, None, 1))
    net = keras.Model(inputs, keras.layers.Conv3D(2, 1, name="c")(inputs))
    net.save(folder / "model.keras")  # final weights
    final = [w.copy() for w in net.get_weights()]
    best = [w + 1.0 for w in final]
    net.set_weights(best)
    prefix = folder / "checkpoints" / "best" / "ckpt-7"
    holder = tf.train.Checkpoint(model=tf.train.Checkpoint(network=net))
    holder.save_counter.assign(7)  # as training's checkpoints hold it
    holder.write(str(prefix))
    (prefix.parent / "best.json").write_text(json.dumps({"step": 7, "val_loss": -1.0}))
    for got, want in zip(load_trained_model(folder, best=True).model.get_weights(), best):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(load_trained_model(folder).model.get_weights(), final):
        np.testing.assert_array_equal(got, want)
