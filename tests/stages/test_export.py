from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf
from export_setup import UNITS, load, make_app, save_trained

from tfuq.calibration import IsotonicRecalibrator, SigmaScaling
from tfuq.calibration.moment_recalibration import MomentRecalibration
from tfuq.calibration.stored import calibration_path
from tfuq.cli import main
from tfuq.errors import UserError
from tfuq.export.client import ServingClient, saved_model_transport
from tfuq.export.remote_inference import serve_subject
from tfuq.export.serving import MODELS_CONFIG
from tfuq.stages.demo import DEMO_STAGES
from tfuq.stages.export import export


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, "[EXPORT]", "mc_samples = 3")


def test_without_a_trained_model_it_says_to_train(app):
    config = load(app)
    with pytest.raises(UserError, match=r"^no trained model in .*model; run tfuq train first$"):
        export(config)


def test_versions_assets_and_models_config(app):
    config = load(app)
    save_trained(config)
    first = export(config)
    base = config.model_dir / "export" / "app"
    assert first == base / "1" and (first / "saved_model.pb").is_file()
    assert export(config) == base / "2"
    with pytest.raises(UserError, match="version 1 of model 'app' already exists"):
        export(config, version=1)
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]  # (overwrite: see test_serving)
    extra = first / "assets.extra"
    assert sorted(p.name for p in extra.iterdir()) == [
        "config.ini",
        "normalisation.json",
        "tfuq_export.json",
    ]
    assert load(extra / "config.ini").to_ini() == config.to_ini()  # the resolved config round-trips
    assert json.loads((extra / "normalisation.json").read_text())["target"]["scale"] == UNITS.scale
    meta = json.loads((extra / "tfuq_export.json").read_text())
    assert meta["mc_samples"] == 3 and meta["seed"] == 3 and meta["family"] == "normal"
    assert meta["units"] == {"offset": UNITS.offset, "scale": UNITS.scale}
    text = (config.model_dir / "export" / MODELS_CONFIG).read_text()
    assert 'name: "app"' in text and f'base_path: "{base}"' in text


def test_normalised_units_without_normalisation_file(app):
    config = load(app, "UNCERTAINTY.mc_samples=2", "EXPORT.mc_samples=0", "EXPORT.model_name=raw")
    model = save_trained(config, normalisation=False)
    path = export(config)
    assert path == config.model_dir / "export" / "raw" / "1"
    meta = json.loads((path / "assets.extra" / "tfuq_export.json").read_text())
    assert meta["units"] == "normalised" and meta["mc_samples"] == 2  # [UNCERTAINTY] mc_samples
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 8, 1)).astype(np.float32)
    params = tf.saved_model.load(str(path)).signatures["predict_params"](windows=tf.constant(x))
    np.testing.assert_allclose(params["loc"].numpy(), model(x, training=False).numpy()[..., 0], atol=1e-6)


def test_stored_isotonic_calibration_is_exported(app):
    config = load(app)
    save_trained(config)
    pit = np.random.default_rng(0).normal(0.0, 2.0, 20_000)
    iso = IsotonicRecalibrator().fit(1.0 / (1.0 + np.exp(-1.7 * pit)))  # any overconfident map
    iso.save(calibration_path(config.model_dir, "isotonic"))
    path = export(config)
    meta = json.loads((path / "assets.extra" / "tfuq_export.json").read_text())
    expected = MomentRecalibration.from_recalibrator(iso).to_dict()
    assert meta["recalibration"] == pytest.approx(expected)
    assert (
        json.loads((path / "assets.extra" / "calibration.json").read_text())["kind"] == "IsotonicRecalibrator"
    )
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = signature(windows=tf.zeros((1, 8, 8, 8, 1)))
    assert {"lower95", "upper95"} <= set(out)
    assert np.all(out["lower95"].numpy() < out["mean"].numpy())
    assert np.all(out["mean"].numpy() < out["upper95"].numpy())


def test_cli_export_is_the_stage(app, capsys):
    assert dict(DEMO_STAGES)["export"] is export
    config = load(app)
    save_trained(config)
    with pytest.raises(SystemExit) as stop:
        main(["export", str(app)])
    assert stop.value.code == 0
    assert (config.model_dir / "export" / "app" / "1" / "saved_model.pb").is_file()


# Not isotonic: a served window's stds already carry the map's factor k, so where windows' means
# disagree the client's blended spread misses k (see tfuq.export.remote_inference); the SavedModel's
# own isotonic stds are checked against MomentRecalibration in test_mc_graph / test_archive.
@pytest.mark.parametrize(
    "method, precision", [("none", "float32"), ("sigma_scaling", "float32"), ("none", "bfloat16")]
)
def test_served_subject_equals_tfuq_infer(tmp_path, method, precision):
    # The whole chain on a deterministic network (no dropout): export -> REST requests answered by
    # the SavedModel in process -> tiling/blending/writing, against `tfuq infer` on the same model.
    # With a stored calibration both write the recalibrated std maps and interval: one answer.
    from tfuq.stages.infer import run_inference

    ini = make_app(tmp_path, "[UNCERTAINTY]", "dropout = none", "mc_samples = 2")
    overrides = (
        "INFERENCE.window_overlap=0.5",
        f"CALIBRATION.method={method}",
        f"INFERENCE.precision={precision}",  # the SavedModel computes as tfuq infer does
    )
    config = load(ini, *overrides)
    save_trained(config)
    if method == "sigma_scaling":
        scaling = SigmaScaling()
        scaling.scale_factor = 1.7
        scaling.save(calibration_path(config.model_dir, method))
    version = export(config)
    local = run_inference(config)
    served_dir = tmp_path / "served"
    served_config = load(ini, *overrides, f"INFERENCE.save_seg_dir={served_dir}")
    client = ServingClient("http://localhost:8501", "app", transport=saved_model_transport(version))
    files = {"MR": tmp_path / "data" / "s0_mr.nii.gz", "CT": tmp_path / "data" / "s0_ct.nii.gz"}
    paths = serve_subject(client, served_config, "s0", files, units=UNITS)
    expected = local.qc["s0"]["paths"]
    # tfuq infer also keeps the MC moments' own std maps (_uncalibrated), which a SavedModel never returns
    assert sorted(paths) == sorted(k for k in expected if not k.endswith("_uncalibrated"))
    if method != "none":
        raw = nib.load(expected["aleatoric_std_uncalibrated"]).get_fdata()
        factor = 1.7
        np.testing.assert_allclose(nib.load(expected["aleatoric_std"]).get_fdata(), factor * raw, rtol=1e-4)
        assert abs(factor - 1.0) > 0.1
    for name in ("mean", "epistemic_std", "aleatoric_std", "total_std", "lower95", "upper95"):
        if name not in expected:
            continue
        ours = nib.load(paths[name]).get_fdata()
        theirs = nib.load(expected[name]).get_fdata()
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=0.05, err_msg=name)  # HU; float32 paths
    assert np.ptp(nib.load(paths["mean"]).get_fdata()) > 10.0
    qc = json.loads(paths["qc"].read_text())
    assert qc["served"] is True and qc["flagged"] == local.qc["s0"]["flagged"]
    with pytest.raises(UserError, match="already exists"):
        serve_subject(client, served_config, "s0", files, units=UNITS)


# --- refusals that write nothing, export_dir outside model_dir, kills during an export ---


@pytest.fixture
def trained(app):
    config = load(app)
    save_trained(config)
    (config.model_dir / "training_config.ini").write_text(config.to_ini(), encoding="utf-8")
    return app


def _file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file, not a folder")
    return path


@pytest.mark.parametrize(
    ("case", "setting", "phrase"),
    [
        (
            "export_dir is a file",
            lambda t: f"EXPORT.export_dir={_file(t / 'occupied')}",
            "is a file, not a folder",
        ),
        ("under a file", lambda t: f"EXPORT.export_dir={_file(t / 'occupied') / 'x'}", "cannot be created"),
        ("model folder is a file", lambda t: f"EXPORT.export_dir={_file(t / 'e' / 'app').parent}", "'app'"),
        ("relative, leaving model_dir", lambda t: "EXPORT.export_dir=../../outside", "leads out of it"),
        ("wider network", lambda t: "NETWORK.base_filters=8", "[NETWORK] base_filters = 8 (trained with 4)"),
        ("other family", lambda t: "UNCERTAINTY.family=laplace", "[UNCERTAINTY] family = laplace"),
        ("other window", lambda t: "MR.spatial_window_size=4, 4, 4", "[MR] spatial_window_size = 4, 4, 4"),
    ],
)
def test_bad_export_inputs_are_one_line_and_write_nothing(trained, tmp_path, capsys, case, setting, phrase):
    from refusal_setup import cli_error, tree_state

    args = ["export", str(trained), "--set", setting(tmp_path)]
    before = tree_state(tmp_path)
    assert phrase in cli_error(args, capsys), case
    assert tree_state(tmp_path) == before


def test_an_absolute_export_dir_outside_model_dir_is_logged(trained, tmp_path, capsys):
    outside = tmp_path / "served_models"
    with pytest.raises(SystemExit) as stop:
        main(["export", str(trained), "--set", f"EXPORT.export_dir={outside}"])
    _, err = capsys.readouterr()
    assert stop.value.code == 0 and err.count(f"writing outside model_dir: {outside}") == 1
    assert (outside / "app" / "1" / "saved_model.pb").is_file()


_KILL_SCRIPT = """
import sys, time
from pathlib import Path

point, ready, *args = sys.argv[1:]


def stop_here():
    Path(ready).write_text("now")
    time.sleep(600)


if point == "write":  # the SavedModel written (inside seeded_generators), assets.extra not yet
    import contextlib

    import tfuq.export.archive as archive

    original = archive.seeded_generators

    @contextlib.contextmanager
    def seeded_generators(*a, **k):
        with original(*a, **k):
            yield
        stop_here()

    archive.seeded_generators = seeded_generators
else:  # "swap": an overwrite's old version moved aside, the new one not yet in its place
    import pathlib

    original = pathlib.Path.rename

    def rename(self, target):
        if self.name.startswith(".ready-") and Path(target).name.isdigit():
            stop_here()
        return original(self, target)

    pathlib.Path.rename = rename
from tfuq.cli import main

main(args)
"""


@pytest.mark.parametrize("point", ["write", "swap"])
def test_a_killed_export_leaves_no_half_version_and_the_next_export_cleans_up(trained, tmp_path, point):
    from refusal_setup import kill_when

    config = load(trained)
    base = config.model_dir / "export" / "app"
    args = ["export", str(trained)]
    if point == "swap":
        assert main_code(args) == 0 and (base / "1" / "saved_model.pb").is_file()
        args += ["--version", "1", "--overwrite"]
    ready = tmp_path / "ready"
    killed = kill_when(_KILL_SCRIPT, [point, str(ready), *args], ready)
    left = sorted(p.name for p in base.iterdir())
    if point == "write":  # a half SavedModel in the hidden staging folder, no version folder
        assert [name.split("-")[0] for name in left] == [".staging"], killed.stderr
        assert (base / left[0] / "saved_model.pb").is_file()
        assert not (base / left[0] / "assets.extra" / "tfuq_export.json").exists()
    else:  # the old version aside, the complete new one beside it: neither is served
        assert [name.split("-")[0] for name in left] == [".ready", ".replaced"], killed.stderr
    assert main_code(["export", str(trained)]) == 0  # the next export recovers, then writes its version
    expected = ["1"] if point == "write" else ["1", "2"]
    assert sorted(p.name for p in base.iterdir()) == expected
    for version in expected:
        assert (base / version / "assets.extra" / "tfuq_export.json").is_file()
    text = (config.model_dir / "export" / MODELS_CONFIG).read_text()
    assert text.count("config {") == 1


def main_code(args):
    with pytest.raises(SystemExit) as stop:
        main(args)
    return stop.value.code


def test_a_locked_model_dir_is_one_line_and_nothing_is_exported(app):
    """Another process writing to the model_dir (holding its lock): export refuses at once, writes nothing."""
    from lock_setup import assert_refused_while_locked

    config = load(app)
    save_trained(config)
    before = sorted(p.relative_to(config.model_dir) for p in config.model_dir.rglob("*"))
    assert_refused_while_locked(config.model_dir, lambda: export(config))
    after = sorted(p.relative_to(config.model_dir) for p in config.model_dir.rglob("*"))
    assert after == before
    assert export(config).is_dir()  # released: the export goes ahead
