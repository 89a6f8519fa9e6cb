"""A model_dir is a contract: which configuration changes continue a model, which are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tfuq.config import APPLICATIONS, SECTIONS, field_specs, load_config
from tfuq.errors import UserError
from tfuq.model_store.contract import (
    CONTINUATION_KEYS,
    ConfigChange,
    check_continuation,
    config_changes,
    read_stored_config,
)

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo_mr2ct.ini"


def demo(tmp_path: Path, *overrides: str):
    return load_config(DEMO, [f"SYSTEM.model_dir={tmp_path / 'run'}", *overrides])


def test_every_continuation_key_names_a_key_of_the_schema() -> None:
    schema = {**SECTIONS, **APPLICATIONS}
    assert len(set(CONTINUATION_KEYS)) == len(CONTINUATION_KEYS)
    for entry in CONTINUATION_KEYS:
        section, key = entry.split(".")
        assert section in schema, entry
        assert key == "*" or key in field_specs(schema[section]), entry
    assert not any(entry.startswith(("NETWORK.", "REGRESSION.", "GAN.")) for entry in CONTINUATION_KEYS)


def test_the_same_configuration_has_no_changes_however_it_is_written(tmp_path: Path) -> None:
    config = demo(tmp_path)
    stored = config.to_ini()
    assert config_changes(stored, config) == []
    respelled = stored.replace("lr = 0.001", "lr = 1e-3").replace("seed = 0", "seed = 00", 1)
    assert respelled != stored and config_changes(respelled, config) == []
    without_default = "\n".join(line for line in stored.splitlines() if line != "nll_beta = 0.0")
    assert (
        without_default != stored and config_changes(without_default, config) == []
    )  # another version's file
    unknown = stored.replace("[NETWORK]\n", "[NETWORK]\nold_key = 3\n")
    assert config_changes(unknown, config) == []  # a key this version does not know


def test_continuing_the_training_is_allowed_and_reported(tmp_path: Path) -> None:
    stored = demo(tmp_path).to_ini()
    longer = demo(
        tmp_path,
        "TRAINING.max_iter=2000",
        "TRAINING.save_every_n=100",
        "TRAINING.validation_every_n=50",
        "TRAINING.lr=0.0005",
        "INFERENCE.batch_size=4",
        "UNCERTAINTY.mc_samples=50",
        "SYSTEM.model_dir=" + str(tmp_path / "moved"),
    )
    changes = check_continuation(tmp_path / "run", stored, longer)
    assert all(c.continues for c in changes)
    assert [c.describe() for c in changes] == [
        f"[SYSTEM] model_dir {_short(tmp_path / 'run')} -> {_short(tmp_path / 'moved')}",
        "[TRAINING] lr 0.001 -> 0.0005",
        "[TRAINING] max_iter 900 -> 2000",
        "[TRAINING] save_every_n 500 -> 100",
        "[TRAINING] validation_every_n 100 -> 50",
        "[INFERENCE] batch_size 20 -> 4",
        "[UNCERTAINTY] mc_samples 10 -> 50",
    ]


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 40 else text[:37] + "..."


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("NETWORK.base_filters=4", "[NETWORK] base_filters 8 -> 4"),
        ("UNCERTAINTY.family=laplace", "[UNCERTAINTY] family normal -> laplace"),
        ("UNCERTAINTY.dropout=concrete", "[UNCERTAINTY] dropout mc -> concrete"),
        ("MR.spatial_window_size=16, 16, 16", "[MR] spatial_window_size 24, 24, 24 -> 16, 16, 16"),
        ("CT.intensity_normalisation=zscore", "[CT] intensity_normalisation window -> zscore"),
        ("MR.filename_contains=_t1", "[MR] filename_contains _mr -> _t1"),
        (
            "TRAINING.exclude_fraction_for_validation=0.5",
            "[TRAINING] exclude_fraction_for_validation 0.25 -> 0.5",
        ),
        ("SYSTEM.seed=3", "[SYSTEM] seed 0 -> 3"),
        ("PHANTOM.num_subjects=4", "[PHANTOM] num_subjects 8 -> 4"),
    ],
)
def test_a_change_of_the_model_or_its_data_is_refused_in_one_line(
    override: str, named: str, tmp_path: Path
) -> None:
    stored = demo(tmp_path).to_ini()
    with pytest.raises(UserError) as info:
        check_continuation(tmp_path / "run", stored, demo(tmp_path, override, "TRAINING.max_iter=5"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"{tmp_path / 'run'}: holds a model trained with another configuration ({named});"
    )
    assert "tfuq train --overwrite" in message and "another [SYSTEM] model_dir" in message
    assert "max_iter" not in message  # allowed changes are not named


def test_the_refusal_names_the_first_three_changes_and_counts_the_rest(tmp_path: Path) -> None:
    stored = demo(tmp_path).to_ini()
    other = demo(
        tmp_path,
        "NETWORK.base_filters=4",
        "NETWORK.blocks_per_stack=1",
        "NETWORK.batch_size=4",
        "UNCERTAINTY.family=laplace",
        "TRAINING.optimiser=sgd",
    )
    with pytest.raises(
        UserError,
        match=r"\(\[NETWORK\] batch_size 2 -> 4, \[NETWORK\] base_filters 8 -> 4, .* 2 -> 1 and 2 more\)",
    ):
        check_continuation(tmp_path / "run", stored, other)
    full = demo(tmp_path)
    sources = {k: v for k, v in full.sources.items() if k != "NOISE"}
    dropped = dataclasses.replace(full, sources=sources, app=dataclasses.replace(full.app, noise_std=""))
    changes = config_changes(stored, dropped)
    assert [c.describe() for c in changes] == [
        "[REGRESSION] noise_std NOISE -> (empty)",
        "[NOISE] (section removed)",
    ]
    assert not any(c.continues for c in changes)
    assert ConfigChange("T2", "", None, "").describe() == "[T2] (section added)"


def test_the_stored_configuration_is_read_or_refused_in_one_line(tmp_path: Path) -> None:
    assert read_stored_config(tmp_path) is None
    (tmp_path / "training_config.ini").write_bytes(b"\xff\xfe not text")
    with pytest.raises(UserError, match=r"training_config.ini: cannot read the configuration .* --overwrite"):
        read_stored_config(tmp_path)
    with pytest.raises(UserError, match=r"training_config.ini: not a valid INI file"):
        config_changes("no section\n", demo(tmp_path), origin=str(tmp_path / "training_config.ini"))
