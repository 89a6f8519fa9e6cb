"""NiftyNet heritage: NiftyNet's regression and GAN INIs load in tfuq with their meaning, or are refused.

The fixtures are written here from NiftyNet's documented keys (its config/README.md and
user_parameters_default.py), with NiftyNet's syntax: parenthesised tuples, ``True``/``False``,
``cuda_devices = ""``, the histogram-standardisation keys with ``normalisation = False``.
"""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pytest

from tfuq.config import ConfigError, field_specs, format_value, load_config, parse_value
from tfuq.config.niftynet import INPUT, NIFTYNET_KEYS
from tfuq.config.sections import APPLICATIONS, SECTIONS, InputSource, RegressionSection, SystemSection

REPO_ROOT = Path(__file__).resolve().parents[2]

# A NiftyNet regression config (RegressionApplication, net_regress) with NiftyNet's usual keys.
NIFTYNET_REGRESSION = """
[T1]
path_to_search = ./volumes
filename_contains = _t1
filename_not_contains = ()
spatial_window_size = (16, 16, 16)
pixdim = (1.0, 1.0, 1.0)
axcodes = (R, A, S)
interp_order = 3

[CT]
path_to_search = ./volumes
filename_contains = _ct
filename_not_contains =
spatial_window_size = (16, 16, 16)
interp_order = 1
loader = nibabel

[SYSTEM]
cuda_devices = ""
num_threads = 2
num_gpus = 1
queue_length = 8
model_dir = ./models/t1_to_ct

[NETWORK]
name = highres3dnet
activation_function = prelu
batch_size = 2
decay = 0.00001
reg_type = L1
volume_padding_size = (4, 4, 4)
window_sampling = uniform
normalisation = False
histogram_ref_file = ./models/standardisation_models.txt
norm_type = percentile
cutoff = (0.01, 0.99)
whitening = True
normalise_foreground_only = False
foreground_type = otsu_plus
multimod_foreground_type = and
keep_prob = 1.0
smaller_final_batch_mode = pad

[TRAINING]
optimiser = adam
lr = 0.001
loss_type = RMSE
sample_per_volume = 4
starting_iter = 0
max_iter = 20
save_every_n = 10
max_checkpoints = 2
tensorboard_every_n = 5
rotation_angle = (-10.0, 10.0)
random_flipping_axes = -1

[INFERENCE]
border = (2, 2, 2)
spatial_window_size = (24, 24, 24)
inference_iter = -1
output_interp_order = 3
save_seg_dir = ./output/

[EVALUATION]

[REGRESSION]
image = T1
output = CT
loss_border = 2
error_map = False
weight =
"""

# A NiftyNet GAN config (GANApplication, net_gan) with a conditioning and an image section.
NIFTYNET_GAN = """
[T1]
csv_file =
path_to_search = ./volumes
filename_contains = _t1
filename_not_contains =
spatial_window_size = (32, 32, 1)
interp_order = 3

[T2]
path_to_search = ./volumes
filename_contains = _t2
spatial_window_size = (32, 32, 1)

[SYSTEM]
cuda_devices = ""
num_threads = 4
num_gpus = 1
model_dir = ./models/t1_to_t2_gan
queue_length = 20

[NETWORK]
name = unet
activation_function = relu
batch_size = 4
reg_type = L2
histogram_ref_file = ./volumes/standardisation_models.txt
norm_type = percentile
cutoff = (0.01, 0.99)

[TRAINING]
sample_per_volume = 1
lr = 0.0002
loss_type = CrossEntropy
starting_iter = 0
save_every_n = 10
max_iter = 20
max_checkpoints = 2

[INFERENCE]
save_seg_dir = ./output/gan

[GAN]
image = T2
conditioning = T1
noise_size = -1
n_interpolations = 10
"""


def write(tmp_path: Path, text: str, name: str = "niftynet.ini") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_niftynet_regression_config_loads_with_its_meaning(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, NIFTYNET_REGRESSION))
    assert cfg.application == "REGRESSION" and cfg.input_sections == ("T1",) and cfg.target_section == "CT"
    t1, ct = cfg.sources["T1"], cfg.sources["CT"]
    # Parenthesised tuples, NiftyNet's usual syntax.
    assert t1.spatial_window_size == (16, 16, 16) and t1.pixdim == (1.0, 1.0, 1.0)
    assert t1.axcodes == ("R", "A", "S") and t1.filename_not_contains == ()
    assert cfg.network.volume_padding_size == (4, 4, 4) and cfg.inference.border == (2, 2, 2)
    assert cfg.training.rotation_angle == (-10.0, 10.0) and cfg.training.random_flipping_axes == ()
    # [SYSTEM] queue_length is tfuq's [NETWORK] queue_length.
    assert cfg.network.queue_length == 8
    # whitening = True: z-score of the network input; the target keeps its own normalisation (NiftyNet
    # whitens the image field only).
    assert t1.intensity_normalisation == "zscore" and not t1.normalise_foreground_only
    assert ct.intensity_normalisation == "none"
    # RMSE is a point loss on the squared error: tfuq's l2.
    assert cfg.training.loss_type == "l2"
    # A larger inference window than the training window (NiftyNet's pattern) is accepted.
    assert cfg.inference.spatial_window_size == (24, 24, 24)
    assert cfg.app.loss_border == 2 and cfg.network.name == "highres3dnet" and cfg.network.reg_type == "L1"
    assert cfg.model_dir == tmp_path / "models" / "t1_to_ct"


def test_niftynet_gan_config_loads_with_its_meaning(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, NIFTYNET_GAN))
    assert cfg.application == "GAN" and cfg.input_sections == ("T1",) and cfg.target_section == "T2"
    assert cfg.sources["T1"].spatial_window_size == (32, 32, 1)
    assert cfg.network.queue_length == 20
    # NiftyNet's GAN loss is a cross-entropy on the discriminator's logits: tfuq's bce.
    assert cfg.app.adversarial_loss == "bce" and cfg.training.loss_type == "nll"
    assert cfg.sources["T1"].intensity_normalisation == "none"  # no whitening in the file


def test_mappings_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="tfuq.config.niftynet"):
        load_config(write(tmp_path, NIFTYNET_REGRESSION))
    messages = [r.getMessage() for r in caplog.records if r.name == "tfuq.config.niftynet"]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "NiftyNet key [NETWORK] whitening = True -> [T1] intensity_normalisation = zscore" in " ".join(
        infos
    )
    assert any(
        m.startswith("NiftyNet key [SYSTEM] queue_length = 8 -> [NETWORK] queue_length = 8") for m in infos
    )
    assert any(
        m.startswith("NiftyNet key [TRAINING] loss_type = RMSE -> [TRAINING] loss_type = l2") for m in infos
    )
    for key in ("cuda_devices", "normalisation", "histogram_ref_file", "norm_type", "cutoff", "error_map"):
        assert any(f"] {key} = " in m and "no-op" in m for m in messages), key


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("(8, 8, 8)", (8, 8, 8)),
        ("(8,8,8)", (8, 8, 8)),
        (" ( 4 , 5 ) ", (4, 5)),
        ("{1, 2}", (1, 2)),
        ("(1)", (1,)),
        ("()", ()),
        ("8, 8, 8", (8, 8, 8)),
    ],
)
def test_parenthesised_tuples_parse(text: str, value: tuple[int, ...]) -> None:
    assert parse_value(field_specs(SECTIONS["EVALUATION"])["size_sweep"], text) == value


def test_parenthesised_strings_and_booleans_parse(tmp_path: Path) -> None:
    assert parse_value(field_specs(InputSource)["axcodes"], "(L,A,S)") == ("L", "A", "S")
    assert parse_value(field_specs(RegressionSection)["image"], "(T1, FLAIR)") == ("T1", "FLAIR")
    overwrite = field_specs(SECTIONS["INFERENCE"])["overwrite"]
    for text in ("True", "TRUE", "t", "y", "yes", "1", "on"):
        assert parse_value(overwrite, text) is True, text
    for text in ("False", "f", "n", "no", "0", "off"):
        assert parse_value(overwrite, text) is False, text


@pytest.mark.parametrize(
    ("text", "on"), [("True", True), ("t", True), ("yes", True), ("False", False), ("n", False)]
)
def test_whitening_spellings(tmp_path: Path, text: str, on: bool) -> None:
    cfg = load_config(write(tmp_path, NIFTYNET_REGRESSION), [f"NETWORK.whitening={text}"])
    assert cfg.sources["T1"].intensity_normalisation == ("zscore" if on else "none")


def test_whitening_keeps_a_section_s_own_normalisation(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, NIFTYNET_REGRESSION), ["T1.intensity_normalisation=percentile"])
    assert cfg.sources["T1"].intensity_normalisation == "percentile"


def test_gan_whitening_normalises_the_conditioning_sections(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, NIFTYNET_GAN), ["NETWORK.whitening=True"])
    assert cfg.sources["T1"].intensity_normalisation == "zscore"
    assert cfg.sources["T2"].intensity_normalisation == "none"


def test_foreground_only_is_the_mask_section(tmp_path: Path) -> None:
    text = NIFTYNET_REGRESSION.replace("error_map = False", "error_map = False\nmask = BRAIN")
    text += "\n[BRAIN]\npath_to_search = ./volumes\nfilename_contains = _brain\ninterp_order = 0\n"
    cfg = load_config(write(tmp_path, text), ["NETWORK.normalise_foreground_only=True"])
    assert (
        cfg.sources["T1"].normalise_foreground_only and cfg.sources["T1"].intensity_normalisation == "zscore"
    )
    assert not cfg.sources["CT"].normalise_foreground_only
    # Without whitening there is nothing to restrict: NiftyNet's no-op.
    off = load_config(
        write(tmp_path, text), ["NETWORK.normalise_foreground_only=True", "NETWORK.whitening=False"]
    )
    assert not off.sources["T1"].normalise_foreground_only
    assert off.sources["T1"].intensity_normalisation == "none"


@pytest.mark.parametrize(
    ("loss", "expected"), [("L1Loss", "l1"), ("MAE", "l1"), ("L2Loss", "l2"), ("RMSE", "l2"), ("nll", "nll")]
)
def test_regression_loss_names(tmp_path: Path, loss: str, expected: str) -> None:
    cfg = load_config(write(tmp_path, NIFTYNET_REGRESSION), [f"TRAINING.loss_type={loss}"])
    assert cfg.training.loss_type == expected


def test_keep_prob_is_one_minus_the_dropout_rate(tmp_path: Path) -> None:
    path = write(tmp_path, NIFTYNET_REGRESSION)
    assert load_config(path).uncertainty.dropout_rate == 0.2  # keep_prob = 1.0: tfuq's default
    assert load_config(path, ["NETWORK.keep_prob=0.5"]).uncertainty.dropout_rate == 0.5
    agree = load_config(path, ["NETWORK.keep_prob=0.8", "UNCERTAINTY.dropout_rate=0.2"])
    assert agree.uncertainty.dropout_rate == 0.2


def test_gradientdescent_is_sgd_and_queue_length_may_be_set_in_both(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, NIFTYNET_REGRESSION), ["TRAINING.optimiser=gradientdescent", "NETWORK.queue_length=8"]
    )
    assert cfg.training.optimiser == "sgd" and cfg.network.queue_length == 8


def test_default_values_of_the_dropped_keys_load(tmp_path: Path) -> None:
    """A model_dir's stored config written when these keys were in the schema still loads."""
    cfg = load_config(REPO_ROOT / "configs" / "demo_mr2ct.ini")
    old = cfg.to_ini()
    old = old.replace("[SYSTEM]\n", "[SYSTEM]\ncuda_devices =\n", 1)
    old = old.replace("[NETWORK]\n", "[NETWORK]\nsmaller_final_batch_mode = pad\nkeep_prob = 1.0\n", 1)
    old = old.replace("[REGRESSION]\n", "[REGRESSION]\nweight =\nerror_map = false\n", 1)
    for name in cfg.sources:
        old = old.replace(f"[{name}]\n", f"[{name}]\nloader =\n", 1)
    again = load_config(write(tmp_path, old, "demo_mr2ct.ini"))
    assert again.sources == cfg.sources and again.network == cfg.network and again.app == cfg.app


REFUSED = [
    # (fixture, overrides, message: section, key, value, why and what to use)
    (
        NIFTYNET_REGRESSION,
        ["SYSTEM.cuda_devices=0,1"],
        r"\[SYSTEM\] cuda_devices = 0,1: not supported; set CUDA_VISIBLE_DEVICES in the environment",
    ),
    (
        NIFTYNET_REGRESSION,
        ["NETWORK.normalisation=True"],
        r"\[NETWORK\] normalisation = True: tfuq has no histogram standardisation \(Nyul\); use "
        r"whitening = True, or intensity_normalisation = zscore",
    ),
    (
        NIFTYNET_REGRESSION,
        ["NETWORK.normalise_foreground_only=True"],
        r"\[NETWORK\] normalise_foreground_only = True: tfuq has no foreground_type .*name one in "
        r"\[REGRESSION\] mask",
    ),
    (
        NIFTYNET_REGRESSION,
        ["NETWORK.smaller_final_batch_mode=drop"],
        r"\[NETWORK\] smaller_final_batch_mode = drop: not supported: tfuq predicts every window .*use pad "
        r"or dynamic",
    ),
    (
        NIFTYNET_REGRESSION,
        ["REGRESSION.error_map=True"],
        r"\[REGRESSION\] error_map = True: not supported: tfuq writes no error maps at inference; "
        r"tfuq evaluate",
    ),
    (
        NIFTYNET_REGRESSION,
        ["REGRESSION.weight=W"],
        r"\[REGRESSION\] weight = W: not supported: tfuq's losses take no weight map; name a mask section "
        r"in \[REGRESSION\] mask",
    ),
    (
        NIFTYNET_REGRESSION,
        ["CT.loader=simpleitk"],
        r"\[CT\] loader = simpleitk: not supported: tfuq reads NIfTI with nibabel only; set loader = nibabel",
    ),
    (
        NIFTYNET_REGRESSION,
        ["TRAINING.loss_type=Huber"],
        r"\[TRAINING\] loss_type = Huber: tfuq has no such loss; expected nll, l1, l2, or NiftyNet's "
        r"L1Loss or MAE \(-> l1\), L2Loss or RMSE \(-> l2\)",
    ),
    (
        NIFTYNET_REGRESSION,
        ["NETWORK.queue_length=5"],
        r"\[SYSTEM\] queue_length = 8: means \[NETWORK\] queue_length = 8, but the file sets "
        r"queue_length = 5; set it once, in \[NETWORK\]",
    ),
    (
        NIFTYNET_REGRESSION,
        ["NETWORK.keep_prob=0.5", "UNCERTAINTY.dropout_rate=0.2"],
        r"\[NETWORK\] keep_prob = 0.5: means \[UNCERTAINTY\] dropout_rate = 0.5, but the file sets "
        r"dropout_rate = 0.2",
    ),
    (
        NIFTYNET_REGRESSION,
        ["NETWORK.norm_type=zscore"],
        r"\[NETWORK\] norm_type: expected one of percentile, quartile, got 'zscore'",
    ),
    (NIFTYNET_REGRESSION, ["NETWORK.whitening=maybe"], r"\[NETWORK\] whitening: expected true or false"),
    (
        NIFTYNET_REGRESSION,
        ["NETWORK.cutoff=(0.1, 0.5, 0.9)"],
        r"\[NETWORK\] cutoff: expected 2 comma-separated",
    ),
    (
        NIFTYNET_GAN,
        ["GAN.noise_size=100"],
        r"\[GAN\] noise_size = 100: not supported: tfuq's conditional GANs take no noise vector",
    ),
    (NIFTYNET_GAN, ["GAN.n_interpolations=5"], r"\[GAN\] n_interpolations = 5: not supported"),
    (
        NIFTYNET_GAN,
        ["TRAINING.loss_type=Dice"],
        r"\[TRAINING\] loss_type = Dice: a \[GAN\] takes NiftyNet's CrossEntropy \(-> \[GAN\] "
        r"adversarial_loss = bce\)",
    ),
    (
        NIFTYNET_GAN,
        ["TRAINING.loss_type=l1"],
        r"\[TRAINING\] loss_type = l1: a \[GAN\] does not use it; its generator loss is \[GAN\] lambda_adv",
    ),
    (
        NIFTYNET_GAN,
        ["GAN.adversarial_loss=lsgan"],
        r"\[TRAINING\] loss_type = CrossEntropy: means \[GAN\] adversarial_loss = bce, but the file sets "
        r"adversarial_loss = lsgan",
    ),
    # NiftyNet keys outside the sections NiftyNet allows them in stay unknown keys.
    (NIFTYNET_REGRESSION, ["TRAINING.whitening=True"], r"\[TRAINING\] unknown key 'whitening'"),
    (NIFTYNET_REGRESSION, ["NETWORK.cuda_devices=0"], r"\[NETWORK\] unknown key 'cuda_devices'"),
]


@pytest.mark.parametrize(("text", "overrides", "message"), REFUSED)
def test_refused_niftynet_values_are_one_line(
    tmp_path: Path, text: str, overrides: list[str], message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, overrides)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}: [")


def test_niftynet_only_keys_are_not_tfuq_keys() -> None:
    """A row translates a key tfuq lacks in that section, except loss_type/optimiser values."""
    shared = {("TRAINING", "loss_type"), ("TRAINING", "optimiser")}
    for row in NIFTYNET_KEYS:
        cls = InputSource if row.section == INPUT else {**SECTIONS, **APPLICATIONS}[row.section]
        assert (row.key in field_specs(cls)) == ((row.section, row.key) in shared), row
    assert "cuda_devices" not in field_specs(SystemSection)


def test_every_niftynet_key_is_documented() -> None:
    text = (REPO_ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    section = text[text.index("### NiftyNet configs") :]
    for row in NIFTYNET_KEYS:
        assert re.search(rf"(`|\] ){row.key}\b", section), row.key


def test_format_value_round_trips_what_niftynet_syntax_parses() -> None:
    spec = field_specs(InputSource)["spatial_window_size"]
    assert parse_value(spec, format_value(parse_value(spec, "(64, 64, 1)"))) == (64, 64, 1)


@pytest.mark.parametrize("fixture", [NIFTYNET_REGRESSION, NIFTYNET_GAN], ids=["regression", "gan"])
def test_tfuq_info_on_a_niftynet_file_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fixture: str
) -> None:
    from tfuq.cli import main

    path = write(tmp_path, fixture)
    with pytest.raises(SystemExit) as stop:
        main(["info", str(path)])
    out, err = capsys.readouterr()
    assert int(stop.value.code or 0) == 0, err
    assert "data: not available" in out and "parameters:" in out  # no volumes here: not a config error
