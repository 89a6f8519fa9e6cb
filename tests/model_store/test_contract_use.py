"""tfuq.model_store.stored_config: a config that contradicts the model stored in its model_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from export_setup import load, make_app

from tfuq.errors import UserError
from tfuq.model_store.contract import check_matches_model, load_stored_config, model_differences
from tfuq.model_store.layout import CONFIG_FILE


@pytest.fixture
def app(tmp_path: Path) -> Path:
    ini = make_app(tmp_path)
    config = load(ini)
    config.model_dir.mkdir(parents=True)
    (config.model_dir / CONFIG_FILE).write_text(config.to_ini(), encoding="utf-8")  # as tfuq train does
    return ini


def test_the_stored_config_reads_back(app: Path) -> None:
    config = load(app)
    assert load_stored_config(config.model_dir).to_ini() == config.to_ini()
    assert load_stored_config(config.model_dir.parent / "nowhere") is None


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("NETWORK.base_filters=8", "[NETWORK] base_filters = 8 (trained with 4)"),
        ("NETWORK.name=highres3dnet", "[NETWORK] name = highres3dnet (trained with unet)"),
        ("NETWORK.depth=2", "[NETWORK] depth = 2 (trained with 1)"),
        ("UNCERTAINTY.family=laplace", "[UNCERTAINTY] family = laplace (trained with normal)"),
        ("UNCERTAINTY.dropout=none", "[UNCERTAINTY] dropout = none (trained with mc)"),
        ("MR.spatial_window_size=16, 16, 16", "[MR] spatial_window_size = 16, 16, 16 (trained with 8, 8, 8)"),
        ("MR.intensity_normalisation=minmax", "[MR] intensity_normalisation = minmax (trained with zscore)"),
        ("MR.pixdim=2, 2, 2", "[MR] pixdim = 2.0, 2.0, 2.0 (trained with (empty))"),
        ("CT.intensity_window=-1000, 3000", "[CT] intensity_window = -1000.0, 3000.0 (trained with -1024.0"),
    ],
)
def test_each_model_setting_that_differs_is_named(app: Path, override: str, phrase: str) -> None:
    config = load(app, override)
    differences = model_differences(config, load_stored_config(config.model_dir))
    assert len(differences) == 1 and differences[0].startswith(phrase)
    with pytest.raises(UserError) as info:
        check_matches_model(config, "tfuq infer")
    message = str(info.value)
    assert "\n" not in message and phrase in message
    assert message.startswith(f"tfuq infer: {app} contradicts the model in {config.model_dir}")
    assert str(config.model_dir / CONFIG_FILE) in message


def test_all_differences_in_one_line(app: Path) -> None:
    config = load(app, "NETWORK.base_filters=8", "UNCERTAINTY.family=laplace")
    with pytest.raises(UserError, match=r"base_filters = 8 \(trained with 4\); \[UNCERTAINTY\] family"):
        check_matches_model(config, "tfuq export")


@pytest.mark.parametrize(
    "override",
    [
        "NETWORK.batch_size=7",
        "INFERENCE.spatial_window_size=12, 12, 12",
        "UNCERTAINTY.mc_samples=3",
        "SYSTEM.seed=9",
        "MR.path_to_search=/elsewhere",
        "MR.interp_order=1",
        "TRAINING.lr=0.5",
        "INFERENCE.save_seg_dir=/tmp/elsewhere",
    ],
)
def test_settings_of_the_run_may_differ(app: Path, override: str) -> None:
    check_matches_model(load(app, override), "tfuq infer")


def test_inputs_are_matched_by_role_not_name(app: Path, tmp_path: Path) -> None:
    text = app.read_text().replace("[MR]", "[T1]").replace("image = MR", "image = T1")
    renamed = tmp_path / "renamed.ini"
    renamed.write_text(text)
    check_matches_model(load(renamed), "tfuq infer")
    two = text.replace("image = T1", "image = T1, CT")
    (tmp_path / "two.ini").write_text(two)
    with pytest.raises(
        UserError, match=r"\[REGRESSION\] image = T1, CT \(2 input\(s\); trained with 1: MR\)"
    ):
        check_matches_model(load(tmp_path / "two.ini"), "tfuq infer")


def test_a_model_without_stored_config_is_not_checked(tmp_path: Path) -> None:
    check_matches_model(load(make_app(tmp_path), "NETWORK.base_filters=8"), "tfuq infer")


def test_a_broken_stored_config_is_one_line(app: Path) -> None:
    config = load(app)
    (config.model_dir / CONFIG_FILE).write_text("[NETWORK]\nname = unet\n")
    with pytest.raises(UserError, match=r"training_config.ini: the stored training config does not load: "):
        check_matches_model(config, "tfuq infer")
