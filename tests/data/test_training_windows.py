"""Training windows of one subject: locations, pairing, padding, mask channel, 2D, MultiRes, loading."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuq.config import ConfigError, load_config
from tfuq.data.augmentation import AugmentationSettings
from tfuq.data.subjects import find_subjects
from tfuq.data.training_windows import (
    SubjectArrays,
    WindowGeometry,
    load_training_subject,
    sample_windows,
    window_geometry,
)
from tfuq.data.windows import crop_padded, multires_windows, sample_locations
from tfuq.errors import UserError

SHAPE = (16, 14, 12)


def code_volume(shape=SHAPE, subject=0):
    """Every voxel holds a distinct value (x + 16 y + 256 z + 10000 s), so a window reveals its origin."""
    g = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    return g[0] + 16 * g[1] + 256 * g[2] + 10000 * subject


def box_mask(shape=SHAPE):
    mask = np.zeros(shape, np.uint8)
    mask[4:12, 3:11, 2:9] = 1
    return mask


def subject_arrays(shape=SHAPE, with_map=True):
    x = code_volume(shape)
    return SubjectArrays(
        id="s0",
        inputs=x[..., None],
        target=(2 * x + 1)[..., None],
        mask=box_mask(shape)[..., None],
        sampling_map=box_mask(shape) if with_map else None,
        normalisation={},
        orders=(1, 1),
    )


@pytest.mark.parametrize("method", ["uniform", "weighted", "balanced"])
@pytest.mark.parametrize("mode", ["minimum", "edge", "reflect"])
def test_windows_are_the_crops_at_the_sampled_locations(method, mode) -> None:
    arrays = subject_arrays()
    geometry = WindowGeometry((6, 8, 4), padding=(2, 1, 3), padding_mode=mode)
    pairs = sample_windows(arrays, geometry, 5, np.random.default_rng(4), method=method)
    # without augmentation the generator is used only for the locations: replay it
    starts = sample_locations(
        method,
        SHAPE,
        (6, 8, 4),
        5,
        np.random.default_rng(4),
        sampling_map=arrays.sampling_map,
        padding=(2, 1, 3),
    )
    x, mask = arrays.inputs[..., 0], box_mask()
    for (inputs, targets), start in zip(pairs, starts):
        assert inputs.shape == (6, 8, 4, 1) and targets.shape == (6, 8, 4, 2)
        assert inputs.dtype == np.float32 and targets.dtype == np.float32
        expected = crop_padded(x, start, (6, 8, 4), mode=mode, cval=x.min())
        np.testing.assert_array_equal(inputs[..., 0], expected)
        np.testing.assert_array_equal(targets[..., 0], 2 * expected + 1)
        # mask channel: the mask section where inside the volume, 0 in the padding
        np.testing.assert_array_equal(targets[..., 1], crop_padded(mask, start, (6, 8, 4), mode="constant"))


def test_mask_without_mask_section_is_the_volume_support_and_loss_border() -> None:
    arrays = subject_arrays()
    arrays = SubjectArrays(**{**arrays.__dict__, "mask": np.ones((*SHAPE, 1), np.uint8)})
    geometry = WindowGeometry((6, 6, 6), padding=3, padding_mode="edge", loss_border=1)
    rng = np.random.default_rng(0)
    for (_, targets), start in zip(
        sample_windows(arrays, geometry, 20, rng),
        sample_locations("uniform", SHAPE, 6, 20, np.random.default_rng(0), padding=3),
    ):
        inside = crop_padded(np.ones(SHAPE), start, 6, mode="constant")
        border = np.zeros((6, 6, 6))
        border[1:5, 1:5, 1:5] = 1
        np.testing.assert_array_equal(targets[..., 1], inside * border)


def test_2d_slices_drop_the_slice_axis() -> None:
    geometry = WindowGeometry((8, 8, 1), squeeze=True)
    assert geometry.spatial == (8, 8)
    pairs = sample_windows(subject_arrays(), geometry, 3, np.random.default_rng(1))
    for inputs, targets in pairs:
        assert inputs.shape == (8, 8, 1) and targets.shape == (8, 8, 2)
        np.testing.assert_array_equal(targets[..., 0], 2 * inputs[..., 0] + 1)
        z = int(inputs[0, 0, 0] // 256)
        assert np.all(inputs[..., 0] // 256 == z)  # one slice


def test_multires_levels_and_central_target() -> None:
    arrays = subject_arrays()
    geometry = WindowGeometry((4, 4, 4), padding_mode="edge", factors=(1, 2, 4))
    assert geometry.region == (16, 16, 16)
    pairs = sample_windows(arrays, geometry, 4, np.random.default_rng(2))
    starts = sample_locations("uniform", SHAPE, 4, 4, np.random.default_rng(2))
    for (inputs, targets), start in zip(pairs, starts):
        assert isinstance(inputs, tuple) and len(inputs) == 3
        expected = multires_windows(arrays.inputs, start, 4, mode="edge")
        for level, ref in zip(inputs, expected):
            np.testing.assert_allclose(level, ref, rtol=1e-6)
        np.testing.assert_array_equal(targets[..., 0], 2 * inputs[0][..., 0] + 1)


def test_volume_smaller_than_the_window_is_padded_and_augmentation_keeps_pairs() -> None:
    arrays = subject_arrays(shape=(5, 14, 12))
    geometry = WindowGeometry((8, 8, 8), padding_mode="edge")
    settings = AugmentationSettings(rotation_angle=(-20.0, 20.0), flip_axes=(0, 1), intensity_shift=0.0)
    for inputs, targets in sample_windows(
        arrays, geometry, 6, np.random.default_rng(3), augmentation=settings
    ):
        assert inputs.shape == (8, 8, 8, 1)
        np.testing.assert_allclose(targets[..., 0], 2 * inputs[..., 0] + 1, rtol=1e-6, atol=1e-2)
        assert targets[..., 1].sum() <= 5 * 8 * 8  # at most the 5 real slices can count


def test_intensity_augmentation_touches_inputs_only() -> None:
    settings = AugmentationSettings(intensity_shift=3.0)
    geometry = WindowGeometry((6, 6, 6))
    arrays = subject_arrays()
    starts = sample_locations("uniform", SHAPE, 6, 4, np.random.default_rng(9))
    for (inputs, targets), start in zip(
        sample_windows(arrays, geometry, 4, np.random.default_rng(9), augmentation=settings), starts
    ):
        original = crop_padded(arrays.inputs[..., 0], start, 6)
        np.testing.assert_array_equal(targets[..., 0], 2 * original + 1)  # target untouched
        shift = inputs[..., 0] - original
        assert np.ptp(shift) < 1e-3 and 0 < abs(shift.mean()) <= 3.0


def test_geometry_validation() -> None:
    with pytest.raises(ValueError, match="loss_border"):
        WindowGeometry((4, 4, 1), loss_border=2)
    with pytest.raises(ValueError, match="Expected"):
        WindowGeometry((15, 15, 15), factors=(1, 2, 4))
    with pytest.raises(ValueError, match="squeeze"):
        WindowGeometry((4, 4, 4), squeeze=True)


# --- loading and geometry from a config ------------------------------------------------------------


def write_folder(tmp_path: Path, n: int = 2, shape=SHAPE) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    for s in range(n):
        x = code_volume(shape, s)
        nib.save(nib.Nifti1Image(x, np.eye(4)), folder / f"s{s}_mr.nii.gz")
        nib.save(nib.Nifti1Image(2 * x + 1, np.eye(4)), folder / f"s{s}_ct.nii.gz")
        nib.save(nib.Nifti1Image(box_mask(shape), np.eye(4)), folder / f"s{s}_mask.nii.gz")
    return folder


def write_ini(tmp_path: Path, mr: str = "", ct: str = "", network: str = "", app: str = "") -> Path:
    text = (
        f"[MR]\npath_to_search = d\nfilename_contains = _mr\nspatial_window_size = 8, 8, 8\n{mr}\n"
        f"[CT]\npath_to_search = d\nfilename_contains = _ct\n{ct}\n"
        "[BODY]\npath_to_search = d\nfilename_contains = _mask\ninterp_order = 0\n"
        f"[NETWORK]\n{network}\n[REGRESSION]\nimage = MR\noutput = CT\nmask = BODY\n{app}\n"
    )
    path = tmp_path / "app.ini"
    path.write_text(text)
    return path


def test_load_training_subject_normalises_per_subject(tmp_path: Path) -> None:
    write_folder(tmp_path)
    config = load_config(
        write_ini(tmp_path, mr="intensity_normalisation = zscore\nnormalise_foreground_only = true")
    )
    subject = find_subjects(config.sources)[1]
    arrays = load_training_subject(config, subject)
    x = code_volume(subject=1).astype(np.float64)
    inside = box_mask() > 0
    expected = (x - x[inside].mean()) / x[inside].std()
    np.testing.assert_allclose(arrays.inputs[..., 0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(arrays.target[..., 0], 2 * code_volume(subject=1) + 1)  # "none"
    np.testing.assert_array_equal(arrays.mask[..., 0], box_mask())
    assert arrays.sampling_map is None and arrays.orders == (3, 3)
    assert arrays.normalisation["MR"].method == "zscore" and arrays.inputs.dtype == np.float32


def test_resize_sampling_resizes_to_the_window(tmp_path: Path) -> None:
    write_folder(tmp_path)
    config = load_config(write_ini(tmp_path, network="window_sampling = resize"))
    arrays = load_training_subject(config, find_subjects(config.sources)[0])
    assert arrays.shape == (8, 8, 8) and arrays.mask.dtype == np.uint8
    assert set(np.unique(arrays.mask)) == {0, 1}
    (inputs, targets), *_ = sample_windows(arrays, window_geometry(config), 1, np.random.default_rng(0))
    np.testing.assert_array_equal(inputs, arrays.inputs)
    np.testing.assert_allclose(targets[..., 0], 2 * inputs[..., 0] + 1, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "spatial"),
    [
        ([], (8, 8, 8)),
        (["MR.spatial_window_size=8, 8, 1"], (8, 8)),
        (["MR.spatial_window_size=8, 8"], (8, 8)),
        (["MR.spatial_window_size=8, 8, 1", "NETWORK.spatial_mode=3d"], (8, 8, 1)),
        (["MR.spatial_window_size=4, 4, 4", "NETWORK.name=multires"], (4, 4, 4)),
    ],
)
def test_window_geometry_matches_the_network_input(tmp_path: Path, overrides, spatial) -> None:
    config = load_config(write_ini(tmp_path), overrides)
    geometry = window_geometry(config)
    assert geometry.spatial == spatial
    assert geometry.factors == ((1, 2, 4) if config.network.name == "multires" else ())
    factory = pytest.importorskip("tfuq.networks.factory")
    assert factory.input_geometry(config).spatial == spatial


def test_window_geometry_errors(tmp_path: Path) -> None:
    bad = [
        (["MR.spatial_window_size="], r"\[MR\] spatial_window_size: expected the training window"),
        (["CT.spatial_window_size=4, 4, 4"], "must share one window"),
        (["REGRESSION.loss_border=4"], "loss_border"),
        (["MR.spatial_window_size=5, 5, 5", "NETWORK.name=multires"], "spatial_window_size"),
    ]
    for overrides, match in bad:
        config = load_config(write_ini(tmp_path), overrides)
        with pytest.raises(ConfigError, match=match):
            window_geometry(config)


def test_multichannel_input_is_a_user_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, n=1)
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 2), np.float32), np.eye(4)), folder / "s0_mr.nii.gz")
    config = load_config(write_ini(tmp_path))
    with pytest.raises(UserError, match=r"s0_mr\.nii\.gz: \[MR\] expected one channel"):
        load_training_subject(config, find_subjects(config.sources)[0])


def test_fixed_target_normalisation_is_used_as_given(tmp_path: Path) -> None:
    from tfuq.data.normalisation import NormalisationParams

    write_folder(tmp_path)
    config = load_config(write_ini(tmp_path, ct="intensity_normalisation = minmax"))
    subject = find_subjects(config.sources)[1]
    fitted = load_training_subject(config, subject)
    ct = 2 * code_volume(subject=1) + 1
    np.testing.assert_allclose(fitted.target[..., 0], (ct - ct.min()) / np.ptp(ct), rtol=1e-6, atol=1e-6)
    fixed = NormalisationParams("window", -1000.0, 4000.0)
    arrays = load_training_subject(config, subject, target_normalisation=fixed)
    np.testing.assert_allclose(arrays.target[..., 0], (ct + 1000.0) / 4000.0, rtol=1e-6)
    assert arrays.normalisation["CT"] is fixed and arrays.normalisation["MR"] == fitted.normalisation["MR"]


def test_weighted_sampling_map_counts_negative_values_as_zero(tmp_path: Path) -> None:
    folder = write_folder(tmp_path)
    # An MR-like sampling map with interpolation undershoot: -2 outside a box, the code inside.
    undershoot = np.where(box_mask() > 0, code_volume(), -2.0).astype(np.float32)
    nib.save(nib.Nifti1Image(undershoot, np.eye(4)), folder / "s0_map.nii.gz")
    nib.save(nib.Nifti1Image(undershoot, np.eye(4)), folder / "s1_map.nii.gz")
    extra = "[MAP]\npath_to_search = d\nfilename_contains = _map\n"
    path = write_ini(tmp_path, network="window_sampling = weighted", app="sampler = MAP")
    path.write_text(path.read_text() + extra)
    arrays = load_training_subject(load_config(path), find_subjects(load_config(path).sources)[0])
    np.testing.assert_array_equal(arrays.sampling_map, np.maximum(undershoot, 0))
    starts = sample_locations(
        "weighted", SHAPE, 8, 50, np.random.default_rng(0), sampling_map=arrays.sampling_map
    )
    assert len(starts) == 50
    # balanced sampling keeps the labels as they are
    path = write_ini(tmp_path, network="window_sampling = balanced", app="sampler = MAP")
    path.write_text(path.read_text() + extra)
    balanced = load_training_subject(load_config(path), find_subjects(load_config(path).sources)[0])
    assert balanced.sampling_map.min() == -2.0
