"""The built-in phantom: determinism, anatomy, HU table, exact noise map, anomalies."""

from __future__ import annotations

import itertools
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage, stats

from tfuq.data.phantom import (
    LABELS,
    PhantomOptionError,
    PhantomSpec,
    insert_zero_cube,
    make_subject,
    mr_tissue_scale,
    sample_subject,
    subject_model,
)
from tfuq.data.phantom.noise import rician_std
from tfuq.data.phantom.tissues import WHOLEBODY_MR_SIGMA
from tfuq.errors import UserError

CROSS = ndimage.generate_binary_structure(3, 1)
#: Whole body at ~10 mm: same field of view as the default, 1/4.6 of the voxels.
SMALL = PhantomSpec(kind="wholebody", shape=(40, 30, 60), voxel_size=(10.4, 9.6, 11.2))
SMALL_BRAIN = PhantomSpec(kind="brain", shape=(32, 32, 24), voxel_size=(6.0, 7.0, 8.0))
SOFT = ("muscle", "liver", "kidney", "spleen", "heart", "bowel", "bladder", "spinal_canal", "disc")


@pytest.fixture(scope="module")
def default_model():
    return subject_model(PhantomSpec(kind="wholebody"), 0)


@pytest.fixture(scope="module")
def small_model():
    return subject_model(SMALL, 0)


def _gas_affected(model):
    """Voxels a moving gas pocket can reach, with their face neighbours."""
    out = np.zeros(model.spec.shape, dtype=bool)
    for part in model.anatomy.moving_parts:
        out[part.region] |= ndimage.binary_dilation(part.masks.any(axis=0), CROSS)
    return out


def _pure(labels, label):
    """Voxels of ``label`` whose six neighbours have it too (no partial volume)."""
    return ndimage.binary_erosion(labels == label, CROSS, border_value=1)


def _world_centroid(subject, name):
    index = np.argwhere(subject.labels == LABELS[name]).mean(axis=0)
    return subject.affine[:3, :3] @ index + subject.affine[:3, 3]


def test_default_subject_is_quick_and_well_typed():
    spec = PhantomSpec(kind="wholebody")
    start = time.perf_counter()
    subject = make_subject(spec, 0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"one default subject took {elapsed:.2f} s"
    assert spec.shape == (64, 48, 96)
    assert subject.subject_id == "phantom000"
    assert subject.inputs == ("mr",) and subject.targets == ("ct",)
    for group in (subject.images, subject.clean, subject.noise_std):
        assert sorted(group) == ["ct", "mr"]
        for array in group.values():
            assert array.shape == spec.shape and array.dtype == np.float32
    assert subject.labels.dtype == np.uint8 and subject.mask.dtype == np.uint8
    assert subject.anomaly_mask is None
    np.testing.assert_array_equal(subject.affine, spec.affine)


def test_brain_subject_has_three_modalities():
    subject = make_subject(PhantomSpec(kind="brain"), 0)
    assert sorted(subject.images) == ["ct", "t1", "t2"]
    assert subject.inputs == ("ct", "t1") and subject.targets == ("t2",)
    present = set(np.unique(subject.labels))
    for name in ("cortical_bone", "csf", "grey_matter", "white_matter", "ventricle", "muscle", "fat"):
        assert LABELS[name] in present, name


def test_same_seed_same_subject_and_other_seed_other_anatomy():
    a, b = make_subject(SMALL, 1), make_subject(SMALL, 1)
    for group in ("images", "clean", "noise_std"):
        for name in a.images:
            np.testing.assert_array_equal(getattr(a, group)[name], getattr(b, group)[name])
    np.testing.assert_array_equal(a.labels, b.labels)
    other = make_subject(
        PhantomSpec(kind="wholebody", shape=SMALL.shape, voxel_size=SMALL.voxel_size, seed=1), 1
    )
    assert np.mean(other.labels != a.labels) > 0.02


def test_subjects_differ_in_size_position_and_organs():
    subjects = [make_subject(SMALL, i) for i in range(4)]
    volumes = [int(s.mask.sum()) for s in subjects]
    assert len(set(volumes)) == 4
    livers = np.array([_world_centroid(s, "liver") for s in subjects])
    assert np.ptp(livers, axis=0).max() > 5.0
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.mean(subjects[i].labels != subjects[j].labels) > 0.02


def test_noise_seed_redraws_only_the_random_part(small_model):
    a = make_subject(SMALL, 0, noise_seed=1)
    b = make_subject(SMALL, 0, noise_seed=2)
    np.testing.assert_array_equal(a.labels, b.labels)
    for name in a.images:
        np.testing.assert_array_equal(a.clean[name], b.clean[name])
        np.testing.assert_array_equal(a.noise_std[name], b.noise_std[name])
        assert not np.array_equal(a.images[name], b.images[name])
    np.testing.assert_array_equal(a.images["ct"], sample_subject(small_model, noise_seed=1).images["ct"])
    default = make_subject(SMALL, 0)
    np.testing.assert_array_equal(default.images["mr"], sample_subject(small_model).images["mr"])
    with pytest.raises(ValueError, match="noise_seed"):
        sample_subject(small_model, noise_seed=-1)


def test_affine_is_lps_with_origin_at_the_centre():
    spec = PhantomSpec(kind="wholebody", shape=(10, 12, 14), voxel_size=(2.0, 3.0, 4.0))
    assert nib.aff2axcodes(spec.affine) == ("L", "P", "S")
    np.testing.assert_allclose(np.abs(np.diag(spec.affine)[:3]), [2.0, 3.0, 4.0])
    centre = spec.affine @ np.array([4.5, 5.5, 6.5, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-12)


def test_clean_ct_follows_the_hu_table(default_model):
    subject = default_model.template
    ct, labels = subject.clean["ct"], subject.labels
    gas = _gas_affected(default_model)
    bands = {
        "background": (-1000, -1000),
        "lung": (-860, -780),
        "fat": (-110, -90),
        "trabecular_bone": (300, 400),
    }
    bands.update({name: (0, 100) for name in SOFT})
    for name, (low, high) in bands.items():
        pure = _pure(labels, LABELS[name]) & ~gas
        # Discs and the canal are under 3 voxels thick here: no voxel is free of partial volume.
        assert pure.sum() > 0 or name in ("disc", "spinal_canal"), name
        if not pure.any():
            continue
        values = ct[pure]
        assert values.min() >= low - 1e-3 and values.max() <= high + 1e-3, (name, values.min(), values.max())
    medians = {
        n: np.median(ct[_pure(labels, LABELS[n]) & ~gas]) for n in ("liver", "kidney", "muscle", "lung")
    }
    assert medians["liver"] == pytest.approx(60, abs=5)
    assert medians["kidney"] == pytest.approx(30, abs=5)
    assert medians["muscle"] == pytest.approx(50, abs=5)
    assert medians["lung"] == pytest.approx(-820, abs=30)


def test_cortical_bone_is_denser_than_trabecular_at_fine_resolution():
    # A 2.5 mm slab through the lumbar spine resolves the cortical shell.
    subject = make_subject(PhantomSpec(kind="wholebody", shape=(160, 120, 24), voxel_size=(2.5, 2.5, 2.5)), 0)
    disc = subject.clean["ct"][_pure(subject.labels, LABELS["disc"])]
    assert disc.size > 20 and disc.min() >= 70 and disc.max() <= 90
    cortical = subject.clean["ct"][_pure(subject.labels, LABELS["cortical_bone"])]
    trabecular = subject.clean["ct"][_pure(subject.labels, LABELS["trabecular_bone"])]
    assert cortical.size > 50 and trabecular.size > 50
    assert cortical.min() >= 1000 and cortical.max() <= 1500
    assert trabecular.min() >= 300 and trabecular.max() <= 400
    assert cortical.min() > trabecular.max()


def test_anatomy_is_where_it_belongs(default_model):
    subject = default_model.template
    liver, spleen = _world_centroid(subject, "liver"), _world_centroid(subject, "spleen")
    lungs, bladder = _world_centroid(subject, "lung"), _world_centroid(subject, "bladder")
    spine, heart = _world_centroid(subject, "trabecular_bone"), _world_centroid(subject, "heart")
    body = np.argwhere(subject.mask).mean(axis=0)
    body = subject.affine[:3, :3] @ body + subject.affine[:3, 3]
    assert liver[0] > 0 > spleen[0]  # RAS+: +x is the subject's right
    assert heart[0] < 0
    assert lungs[2] > liver[2] > bladder[2]
    assert spine[1] < body[1] < heart[1]  # spine posterior, heart anterior


def test_spine_has_separate_vertebrae_with_discs(default_model):
    labels = default_model.template.labels
    discs = ndimage.label(labels == LABELS["disc"], CROSS)[1]
    assert discs >= 10
    # Along the axis of the vertebral bodies, bone and disc alternate.
    column = labels[labels.shape[0] // 2, :, :]
    y = np.argmax((column == LABELS["disc"]).sum(axis=1))
    line = column[y]
    runs = [v for k, v in enumerate(line) if k == 0 or v != line[k - 1]]
    bone = (LABELS["cortical_bone"], LABELS["trabecular_bone"])
    pairs = sum(1 for a, b in itertools.pairwise(runs) if a == LABELS["disc"] and b in bone)
    assert pairs >= 8


def test_mask_covers_all_tissue(default_model):
    subject = default_model.template
    np.testing.assert_array_equal(subject.mask, (subject.labels != LABELS["background"]).astype(np.uint8))
    assert np.all(subject.mask[subject.clean["ct"] > -500])
    assert np.all(subject.mask[subject.clean["mr"] > 200])
    np.testing.assert_array_equal(ndimage.binary_fill_holes(subject.mask), subject.mask.astype(bool))
    assert ndimage.label(subject.mask)[1] == 1


def _empirical(model, name, draws):
    total = np.zeros(model.spec.shape)
    squares = np.zeros(model.spec.shape)
    for seed in range(draws):
        image = sample_subject(model, noise_seed=seed).images[name].astype(np.float64)
        total += image
        squares += image**2
    mean = total / draws
    return mean, np.sqrt(np.maximum(squares / draws - mean**2, 0.0) * draws / (draws - 1))


def _boundaries(labels):
    return ndimage.maximum_filter(labels, footprint=CROSS) != ndimage.minimum_filter(labels, footprint=CROSS)


def _check_noise_map(model, name, draws, regions):
    clean = model.template.clean[name].astype(np.float64)
    std = model.template.noise_std[name].astype(np.float64)
    mean, empirical = _empirical(model, name, draws)
    assert abs(empirical.mean() / std.mean() - 1) < 0.03
    assert np.corrcoef(empirical.ravel(), std.ravel())[0, 1] > 0.95
    z = (mean - clean) / (std / np.sqrt(draws))  # the clean image is the mean
    assert 0.8 < np.sqrt(np.mean(z**2)) < 1.2
    for region, tolerance in regions:
        assert region.sum() > 20
        assert abs(empirical[region].mean() / std[region].mean() - 1) < tolerance


def test_wholebody_noise_map_is_the_std_of_the_added_noise(small_model):
    gas = np.zeros(SMALL.shape, dtype=bool)
    for part in small_model.anatomy.moving_parts:
        gas[part.region] |= part.masks.any(axis=0)
    boundary = _boundaries(small_model.template.labels) & ~gas
    _check_noise_map(small_model, "ct", 300, [(gas, 0.1), (boundary, 0.03)])


@pytest.mark.parametrize("name", ["t2", "ct"])
def test_brain_noise_map_is_the_std_of_the_added_noise(name):
    model = subject_model(SMALL_BRAIN, 0)
    _check_noise_map(model, name, 300, [(_boundaries(model.template.labels), 0.03)])


def test_noise_is_larger_at_boundaries_and_moving_gas(default_model):
    subject = default_model.template
    std, labels = subject.noise_std["ct"], subject.labels
    gas = np.zeros(labels.shape, dtype=bool)
    for part in default_model.anatomy.moving_parts:
        gas[part.region] |= part.masks.any(axis=0)
    soft = np.zeros(labels.shape, dtype=bool)
    for name in ("liver", "muscle", "spleen", "heart"):
        soft |= _pure(labels, LABELS[name])
    boundary = _boundaries(labels) & np.isin(labels, [LABELS[n] for n in SOFT])
    inside = np.median(std[soft])
    assert inside < 20
    assert np.median(std[boundary]) > 1.3 * inside
    assert np.median(std[gas]) > 10 * inside
    assert len(default_model.anatomy.moving_parts) >= 3


def test_mr_input_is_rician():
    model = subject_model(PhantomSpec(kind="wholebody", shape=(32, 24, 48), voxel_size=(13.0, 12.0, 14.0)), 0)
    subject = sample_subject(model)
    mr = subject.images["mr"].astype(np.float64)
    assert mr.min() >= 0.0
    background = ndimage.binary_erosion(subject.labels == 0, iterations=2, border_value=1)
    sigma = WHOLEBODY_MR_SIGMA
    assert mr[background].mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)
    assert stats.kstest(mr[background], stats.rayleigh(scale=sigma).cdf).pvalue > 1e-3
    np.testing.assert_allclose(subject.noise_std["mr"][background], sigma * np.sqrt(2 - np.pi / 2), rtol=1e-5)
    base = model.noise_models["mr"].base
    rng = np.random.default_rng(0)
    picks = rng.choice(np.flatnonzero(base < 25 * sigma), size=200, replace=False)
    oracle = stats.rice(b=base.ravel()[picks] / sigma, scale=sigma).std()
    np.testing.assert_allclose(subject.noise_std["mr"].ravel()[picks], oracle, rtol=1e-5)
    np.testing.assert_allclose(rician_std(base.ravel()[picks], sigma), oracle, rtol=1e-9)


def test_brain_contrasts():
    subject = make_subject(PhantomSpec(kind="brain"), 0)
    clean, labels = subject.clean, subject.labels

    def median(modality, name):
        return np.median(clean[modality][_pure(labels, LABELS[name])])

    assert median("t1", "white_matter") > median("t1", "grey_matter") > median("t1", "csf")
    assert median("t2", "csf") > median("t2", "grey_matter") > median("t2", "white_matter")
    assert median("ct", "grey_matter") > median("ct", "white_matter") > median("ct", "ventricle")
    skull = clean["ct"][labels == LABELS["cortical_bone"]]
    assert np.median(skull) > 700 and skull.max() > 1000


def test_zero_cube_anomaly_is_inside_the_body_and_only_in_the_inputs():
    plain = make_subject(SMALL, 2)
    spec = PhantomSpec(
        kind="wholebody", shape=SMALL.shape, voxel_size=SMALL.voxel_size, anomaly="cube", anomaly_size=5
    )
    subject = make_subject(spec, 2)
    cube = subject.anomaly_mask.astype(bool)
    assert subject.anomaly_mask.dtype == np.uint8 and cube.sum() == 125
    assert np.all(subject.mask[cube])
    for group in (subject.images, subject.clean, subject.noise_std):
        assert np.all(group["mr"][cube] == 0)
    np.testing.assert_array_equal(subject.images["mr"][~cube], plain.images["mr"][~cube])
    np.testing.assert_array_equal(subject.images["ct"], plain.images["ct"])
    assert PhantomSpec(kind="wholebody", anomaly="cube").anomaly_size == 8  # 48 / 6


def test_zero_cube_in_brain_inputs_leaves_the_t2_target():
    spec = PhantomSpec(kind="brain", shape=(32, 32, 24), voxel_size=(6.0, 7.0, 8.0), anomaly="cube")
    subject = make_subject(spec, 0)
    cube = subject.anomaly_mask.astype(bool)
    assert cube.sum() == spec.anomaly_size**3
    assert np.all(subject.images["ct"][cube] == 0) and np.all(subject.images["t1"][cube] == 0)
    assert np.all(subject.images["t2"][cube] > 0)


def test_lesion_anomaly_has_an_unseen_intensity():
    spec = PhantomSpec(kind="wholebody", anomaly="lesion", anomaly_size=6)
    subject = make_subject(spec, 0)
    lesion = subject.anomaly_mask.astype(bool)
    np.testing.assert_array_equal(lesion, subject.labels == LABELS["lesion"])
    assert 50 < lesion.sum() < 6**3 and np.all(subject.mask[lesion])
    core = _pure(subject.labels, LABELS["lesion"])
    assert np.all(subject.clean["ct"][core] == pytest.approx(2500.0))
    normal = subject.clean["mr"][~lesion].max()
    assert np.median(subject.clean["mr"][core]) > normal


def test_insert_zero_cube_hand_computed():
    array = np.ones((6, 6, 6, 2), dtype=np.float32)
    out = insert_zero_cube(array, (2, 3, 4), 3)
    assert out.dtype == np.float32 and np.all(array == 1)
    expected = np.ones_like(array)
    expected[1:4, 2:5, 3:6] = 0
    np.testing.assert_array_equal(out, expected)
    clipped = insert_zero_cube(np.ones((4, 4, 4)), (0, 0, 0), 4)
    assert clipped.sum() == 64 - 8  # rows 0..1 on each axis
    with pytest.raises(ValueError, match="side"):
        insert_zero_cube(array, (2, 2, 2), 0)
    with pytest.raises(ValueError, match="center"):
        insert_zero_cube(array, (2, 2, 9), 2)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"kind": "knee"}, r"kind must be one of .*'knee'"),
        ({"shape": (4, 48, 96)}, r"shape must be 3 integers in \[8, 512\].*\(4, 48, 96\)"),
        ({"shape": (64, 48)}, r"shape must be 3 integers"),
        ({"shape": (64.5, 48, 96)}, r"shape must be 3 integers"),
        ({"voxel_size": (0.0, 1.0, 1.0)}, r"voxel_size must be 3 numbers in \[0.1, 50.0\]"),
        ({"seed": -1}, r"seed must be an integer in \[0, "),
        ({"anomaly": "blob"}, r"anomaly must be None or one of"),
        ({"anomaly": "cube", "anomaly_size": 500}, r"anomaly_size must be an integer in \[1, 48\]"),
        ({"inputs": ("t2",)}, r"inputs must be a non-empty tuple"),
    ],
)
def test_bad_options_are_one_clear_value_error(options, match):
    with pytest.raises(ValueError, match=match) as info:
        PhantomSpec(**options)
    assert isinstance(info.value, PhantomOptionError) and isinstance(info.value, UserError)
    with pytest.raises(ValueError, match="index"):
        subject_model(PhantomSpec(), -1)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), True, "0.1"])
def test_bad_contrast_variability_is_one_clear_value_error(value):
    with pytest.raises(PhantomOptionError, match=r"contrast_variability must be a number in \[0, 1\]"):
        PhantomSpec(contrast_variability=value)


def test_contrast_variability_zero_is_the_table_and_one_factor_per_tissue_otherwise():
    """Oracle: the noise-free MR divided by the table's rendering is the subject's factor per label."""
    plain = subject_model(SMALL, 1)
    assert plain.anatomy.mr_tissue_scale is None
    varied_spec = PhantomSpec(
        kind="wholebody", shape=SMALL.shape, voxel_size=SMALL.voxel_size, contrast_variability=0.2
    )
    varied = subject_model(varied_spec, 1)
    # anatomy, CT and its noise are those of the plain subject; only the MR intensities change
    np.testing.assert_array_equal(varied.anatomy.labels, plain.anatomy.labels)
    np.testing.assert_array_equal(varied.noise_models["ct"].base, plain.noise_models["ct"].base)
    np.testing.assert_array_equal(varied.template.noise_std["ct"], plain.template.noise_std["ct"])
    factors = mr_tissue_scale(varied_spec, 1)
    np.testing.assert_array_equal(varied.anatomy.mr_tissue_scale, factors)
    labels = plain.anatomy.labels
    body = plain.noise_models["mr"].base > 0
    ratio = varied.noise_models["mr"].base[body] / plain.noise_models["mr"].base[body]
    np.testing.assert_allclose(ratio, factors[labels[body]], rtol=1e-12)
    # factors differ between subjects, and the same subject is reproducible
    assert not np.allclose(factors, mr_tissue_scale(varied_spec, 2))
    np.testing.assert_array_equal(factors, mr_tissue_scale(varied_spec, 1))


def test_contrast_factors_are_log_normal_with_the_configured_sd():
    """log(factor) / v over 300 subjects x labels is standard normal (KS test)."""
    spec = PhantomSpec(kind="brain", contrast_variability=0.15)
    logs = np.concatenate([np.log(mr_tissue_scale(spec, i)) for i in range(300)]) / 0.15
    assert stats.kstest(logs, "norm").pvalue > 1e-3
    assert abs(logs.std() - 1.0) < 0.05
    ones = mr_tissue_scale(PhantomSpec(kind="brain"), 3)
    np.testing.assert_array_equal(ones, np.ones_like(ones))


def test_brain_contrasts_take_the_same_factors():
    spec = PhantomSpec(
        kind="brain", shape=SMALL_BRAIN.shape, voxel_size=SMALL_BRAIN.voxel_size, contrast_variability=0.3
    )
    plain, varied = subject_model(SMALL_BRAIN, 0), subject_model(spec, 0)
    factors = mr_tissue_scale(spec, 0)
    for name in ("t1", "t2"):
        body = plain.noise_models[name].base > 0
        ratio = varied.noise_models[name].base[body] / plain.noise_models[name].base[body]
        np.testing.assert_allclose(ratio, factors[plain.anatomy.labels[body]], rtol=1e-12)
    np.testing.assert_array_equal(varied.noise_models["ct"].base, plain.noise_models["ct"].base)
