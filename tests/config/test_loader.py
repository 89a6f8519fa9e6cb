"""tfuq.config.loader: loading, resolution, overrides, round trip, every error path."""

from __future__ import annotations

import dataclasses
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from tfuq.config import Config, ConfigError, load_config, parse_overrides
from tfuq.config.fields import FieldSpec, field_specs, format_value
from tfuq.config.sections import SECTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[MR]
path_to_search = data
filename_contains = _mr
[CT]
path_to_search = data
filename_contains = _ct
[REGRESSION]
image = MR
output = CT
"""


def write(tmp_path: Path, text: str, name: str = "app.ini") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_minimal_config_defaults_and_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.application == "REGRESSION"
    assert cfg.input_sections == ("MR",)
    assert cfg.target_section == "CT"
    # NiftyNet semantics: model_dir defaults to the INI folder; outputs resolve against it.
    assert cfg.model_dir == tmp_path
    assert Path(cfg.system.dataset_split_file) == tmp_path / "dataset_split.csv"
    assert Path(cfg.inference.save_seg_dir) == tmp_path / "inference"
    assert Path(cfg.export.export_dir) == tmp_path / "export"
    assert cfg.export.model_name == "app"  # the INI file's stem
    assert cfg.sources["MR"].path_to_search == (str(tmp_path / "data"),)
    assert cfg.family == "normal"
    assert cfg.training.lr == 1e-3 and cfg.uncertainty.mc_samples == 20


def test_model_dir_relative_to_ini_and_outputs_relative_to_model_dir(tmp_path: Path) -> None:
    text = MINIMAL + "[SYSTEM]\nmodel_dir = runs/a\n[INFERENCE]\nsave_seg_dir = out\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.model_dir == tmp_path / "runs" / "a"
    assert Path(cfg.inference.save_seg_dir) == tmp_path / "runs" / "a" / "out"
    absolute = MINIMAL + f"[SYSTEM]\nmodel_dir = {tmp_path / 'abs'}\n"
    assert load_config(write(tmp_path, absolute)).model_dir == tmp_path / "abs"


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["TRAINING.max_iter=7", "UNCERTAINTY.family=generalized_normal"])
    assert cfg.training.max_iter == 7 and cfg.family == "generalized_normal"
    with pytest.raises(ConfigError, match=r"\[TRAINING\] max_iter: expected an integer >= 0, got '-5'"):
        load_config(path, ["TRAINING.max_iter=-5"])
    assert parse_overrides(["A.b = c d"]) == [("A", "b", "c d")]
    for bad in ("TRAINING", "TRAINING.lr", ".lr=1", "lr=1"):
        with pytest.raises(ConfigError, match=r"expected SECTION\.key=value"):
            parse_overrides([bad])


def test_round_trip_through_to_ini(tmp_path: Path) -> None:
    cfg = load_config(REPO_ROOT / "configs" / "demo_mr2ct.ini", ["TRAINING.rotation_angle=-10, 10"])
    again = load_config(write(tmp_path, cfg.to_ini(), "demo_mr2ct.ini"))
    for field in dataclasses.fields(Config):
        if field.name != "path":
            assert getattr(again, field.name) == getattr(cfg, field.name), field.name


def test_values_parse_to_their_types(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """
        [TRAINING]
        rotation_angle = -10, 10.5
        random_flipping_axes = 0, 2
        [INFERENCE]
        spatial_window_size = 64, 64, 1
        overwrite = Yes
        """
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.training.rotation_angle == (-10.0, 10.5)
    assert cfg.training.random_flipping_axes == (0, 2)
    assert cfg.inference.spatial_window_size == (64, 64, 1)
    assert cfg.inference.overwrite is True
    none = load_config(write(tmp_path, MINIMAL), ["TRAINING.random_flipping_axes=-1"])
    assert none.training.random_flipping_axes == ()


def test_gan_application_and_keras_network(tmp_path: Path) -> None:
    text = MINIMAL.replace("[REGRESSION]\nimage = MR\noutput = CT", "[GAN]\nconditioning = MR\nimage = CT")
    cfg = load_config(write(tmp_path, text), ["NETWORK.name=keras:models/u.keras"])
    assert cfg.application == "GAN" and cfg.input_sections == ("MR",) and cfg.target_section == "CT"
    assert cfg.network.name == "keras:" + str(tmp_path / "models" / "u.keras")


def test_phantom_source(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), ["MR.path_to_search=phantom:", "PHANTOM.num_subjects=3"])
    assert cfg.sources["MR"].path_to_search == ("phantom:",)
    assert cfg.phantom.num_subjects == 3 and Path(cfg.phantom.cache_dir) == tmp_path / "phantom"


ERRORS = [
    # (file text or None for a missing file, overrides, expected message fragment)
    (None, [], r"no such config file"),
    ("this is not ini\n", [], r"not a valid INI file"),
    (MINIMAL + "[MR]\nfilename_contains = x\n", [], r"not a valid INI file.*already exists"),
    (MINIMAL + "[TRAINIG]\nlr = 0.1\n", [], r"unknown section \[TRAINIG\] \(did you mean 'TRAINING'\?\)"),
    (MINIMAL + "[PET]\npath_to_search = x\n", [], r"unknown section \[PET\].*named by \[REGRESSION\]"),
    (MINIMAL, ["TRAINING.lrr=0.1"], r"\[TRAINING\] unknown key 'lrr' \(did you mean 'lr'\?\)"),
    (
        MINIMAL,
        ["MR.filename_contain=_mr"],
        r"\[MR\] unknown key 'filename_contain' \(did you mean 'filename_contains'\?\)",
    ),
    (MINIMAL, ["TRAINING.lr=fast"], r"\[TRAINING\] lr: expected a number > 0, got 'fast'"),
    (MINIMAL, ["TRAINING.lr=nan"], r"\[TRAINING\] lr: expected a number > 0, got 'nan'"),
    (MINIMAL, ["TRAINING.max_iter=1.5"], r"\[TRAINING\] max_iter: expected an integer >= 0, got '1.5'"),
    (MINIMAL, ["REGRESSION.error_map=maybe"], r"\[REGRESSION\] error_map: expected true or false"),
    (
        MINIMAL,
        ["TRAINING.exclude_fraction_for_validation=0.7", "TRAINING.exclude_fraction_for_inference=0.7"],
        r"exclude_fraction_for_validation \+ exclude_fraction_for_inference must be below 1.*0\.7 \+ 0\.7",
    ),
    (
        MINIMAL,
        ["UNCERTAINTY.family=gaussian"],
        r"\[UNCERTAINTY\] family: expected one of normal, generalized_normal",
    ),
    (MINIMAL, ["UNCERTAINTY.dropout_rate=1"], r"dropout_rate: expected a number >= 0 and < 1, got '1'"),
    (
        MINIMAL,
        ["MR.spatial_window_size=64"],
        r"\[MR\] spatial_window_size: expected 2/3 comma-separated values",
    ),
    (MINIMAL, ["MR.axcodes=L, P, Q"], r"\[MR\] axcodes: expected comma-separated values, each one of L, R"),
    (MINIMAL, ["MR.axcodes=L, R, S"], r"\[MR\] axcodes: expected one code from each of L/R, A/P, S/I"),
    (MINIMAL, ["NETWORK.name=unett"], r"\[NETWORK\] name: expected one of unet.*\(did you mean 'unet'\?\)"),
    (MINIMAL, ["NETWORK.name=keras:"], r"\[NETWORK\] name: expected keras:path/to/model.keras"),
    (MINIMAL, ["REGRESSION.output=PET"], r"\[REGRESSION\] output: no input section \[PET\] in the file"),
    (
        MINIMAL,
        ["REGRESSION.mask=SYSTEM", "SYSTEM.seed=1"],
        r"\[REGRESSION\] mask: \[SYSTEM\] is not an input section",
    ),
    (MINIMAL, ["REGRESSION.output="], r"\[REGRESSION\] output: expected the name of an input section"),
    (
        MINIMAL.replace("[REGRESSION]\nimage = MR\noutput = CT", ""),
        [],
        r"exactly one application section.*found none",
    ),
    (MINIMAL + "[GAN]\nimage = CT\nconditioning = MR\n", [], r"found \[REGRESSION\] and \[GAN\]"),
    (MINIMAL, ["MR.path_to_search="], r"\[MR\] path_to_search: expected a folder, phantom:, or a csv_file"),
    (MINIMAL, ["MR.path_to_search=phantom:brain"], r"\[MR\] path_to_search: expected exactly 'phantom:'"),
    (
        MINIMAL,
        ["TRAINING.random_flipping_axes=-1, 0"],
        r"random_flipping_axes: -1 \(none\) cannot be combined",
    ),
]


@pytest.mark.parametrize(("text", "overrides", "message"), ERRORS)
def test_every_error_is_one_line_naming_file(
    tmp_path: Path, text: str | None, overrides: list[str], message: str
) -> None:
    path = tmp_path / "app.ini" if text is None else write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, overrides)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.lr = 1.0  # type: ignore[misc]


#: Sections whose keys the round-trip property draws (SYSTEM holds paths and the seed, drawn apart).
_DRAWN = ("NETWORK", "TRAINING", "INFERENCE", "EVALUATION", "UNCERTAINTY", "CALIBRATION", "EXPORT", "PHANTOM")


def _scalar(spec: FieldSpec) -> st.SearchStrategy:
    if spec.choices is not None:
        return st.sampled_from(spec.choices)
    kind = spec.element_type
    if kind is bool:
        return st.booleans()
    if kind is int:
        low = -1000 if spec.min is None else int(spec.min) + int(spec.min_exclusive)
        high = 1000 if spec.max is None else int(spec.max) - int(spec.max_exclusive)
        return st.integers(low, max(low, high))
    low = -1e6 if spec.min is None else spec.min
    high = 1e6 if spec.max is None else spec.max
    return st.floats(
        low, high, exclude_min=spec.min_exclusive, exclude_max=spec.max_exclusive, allow_nan=False
    )


def _value(spec: FieldSpec) -> st.SearchStrategy:
    if not spec.is_tuple:
        return _scalar(spec)
    lengths = spec.length or (1, 2, 3)
    return st.sampled_from(lengths).flatmap(lambda n: st.tuples(*[_scalar(spec)] * n)) | st.just(())


@st.composite
def _settings(draw: st.DrawFn) -> dict[tuple[str, str], object]:
    drawn: dict[tuple[str, str], object] = {("SYSTEM", "seed"): draw(st.integers(0, 2**31 - 1))}
    for section in _DRAWN:
        specs = [
            spec
            for spec in field_specs(SECTIONS[section]).values()
            if spec.path is None and (spec.element_type is not str or spec.choices is not None)
        ]
        for spec in draw(st.lists(st.sampled_from(specs), max_size=4, unique_by=lambda s: s.name)):
            drawn[(section, spec.name)] = draw(_value(spec))
    return drawn


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(values=_settings())
def test_any_valid_config_survives_to_ini_and_load(values: dict[tuple[str, str], object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), MINIMAL)
        overrides = [f"{section}.{key}={format_value(value)}" for (section, key), value in values.items()]
        try:
            cfg = load_config(path, overrides)
        except ConfigError:
            reject()  # valid keys one by one, but not together (e.g. fractions summing to 1)
        for (section, key), value in values.items():
            assert getattr(getattr(cfg, section.lower()), key) == value, (section, key)
        again = load_config(write(Path(folder), cfg.to_ini(), "again.ini"))
        for field in dataclasses.fields(Config):
            if field.name != "path":
                assert getattr(again, field.name) == getattr(cfg, field.name), field.name
