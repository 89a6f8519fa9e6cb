"""One phantom subject: its fixed anatomy and exact noise model, and draws from it.

:func:`subject_model` does the deterministic, slower part once (anatomy,
anomaly, noise-free renderings, exact mean and standard deviation of every
modality); :func:`sample_subject` draws observed images from it, cheaply, as
often as needed. Seeds come from ``numpy.random.SeedSequence`` over
``(spec.seed, index, stream)``, so a subject depends on nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from tfuq.data.phantom.brain import brain_anatomy
from tfuq.data.phantom.noise import NoiseModel, exact_moments, sample_image
from tfuq.data.phantom.spec import PhantomOptionError, PhantomSpec
from tfuq.data.phantom.tissues import (
    BACKGROUND,
    BOWEL,
    GAS,
    LESION,
    WHOLEBODY_MR_SIGMA,
    Anatomy,
    render_ct,
    render_mr,
    tissue_values,
)
from tfuq.data.phantom.wholebody import wholebody_anatomy

__all__ = [
    "PhantomSubject",
    "SubjectModel",
    "cube_slices",
    "insert_zero_cube",
    "mr_tissue_scale",
    "sample_subject",
    "subject_id",
    "subject_model",
]

_ANATOMY, _NOISE, _ANOMALY, _NOISE_SEEDED, _CONTRAST = 0, 1, 2, 3, 4


@dataclass(frozen=True, eq=False)
class PhantomSubject:
    """One drawn subject; every image has ``spec.shape``.

    Attributes:
        subject_id: e.g. ``"phantom000"``.
        kind: ``"wholebody"`` or ``"brain"``.
        images: Modality -> observed image (float32; CT in HU, MR >= 0).
        clean: Modality -> expected image ``E[image | anatomy]`` (float32);
            ``images[m] - clean[m]`` has mean 0 and std ``noise_std[m]``.
        noise_std: Modality -> exact per-voxel std of the random part.
        labels: Tissue labels (uint8, see ``LABELS``), reference geometry.
        mask: Body mask (uint8, 1 where ``labels != 0``).
        affine: 4x4 voxel -> world (RAS+ mm) affine, L-P-S oriented.
        anomaly_mask: uint8 mask of the cube or lesion, or None.
        inputs: Input modalities (where a zero cube is put).
        targets: Default target modalities.
    """

    subject_id: str
    kind: str
    images: Mapping[str, np.ndarray]
    clean: Mapping[str, np.ndarray]
    noise_std: Mapping[str, np.ndarray]
    labels: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    anomaly_mask: np.ndarray | None
    inputs: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class SubjectModel:
    """The fixed part of a subject; draw images with :func:`sample_subject`.

    Attributes:
        spec: The phantom's spec.
        index: Subject index.
        anatomy: Labels, texture and bias fields, moving parts.
        noise_models: Modality -> :class:`~tfuq.data.phantom.noise.NoiseModel`.
        template: A :class:`PhantomSubject` holding everything but
            ``images`` (clean, noise_std, labels, mask, affine, anomaly).
        cube: Index box of the zero cube, or None.
    """

    spec: PhantomSpec
    index: int
    anatomy: Anatomy
    noise_models: Mapping[str, NoiseModel]
    template: PhantomSubject
    cube: tuple[slice, slice, slice] | None


def subject_id(index: int) -> str:
    """Subject id of an index: ``phantom000``, ``phantom001``, ..."""
    return f"phantom{index:03d}"


def _rng(spec: PhantomSpec, index: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([spec.seed, index, *stream]))


def cube_slices(center: Sequence[int], side: int, shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """Index box of a cube of ``side`` voxels starting at ``center - side // 2``, clipped to ``shape``."""
    starts = [int(c) - side // 2 for c in center]
    return tuple(slice(max(s, 0), min(s + side, n)) for s, n in zip(starts, shape))  # type: ignore[return-value]


def insert_zero_cube(array: np.ndarray, center: Sequence[int], side: int) -> np.ndarray:
    """Copy of ``array`` with an all-zero cube (Reinhold et al. 2020, section 3.3).

    Args:
        array: Volume, at least 3D; the cube spans the first three axes.
        center: Voxel index of the cube centre (3 integers inside the volume).
        side: Side in voxels (>= 1); the cube covers ``center - side // 2``
            to ``center - side // 2 + side - 1`` on each axis, clipped to the
            volume.

    Returns:
        A new array, same shape and dtype, zero inside the cube.

    Raises:
        ValueError: ``side < 1``, or ``center`` not 3 indices inside the volume.

    Example:
        >>> insert_zero_cube(np.ones((5, 5, 5)), (2, 2, 2), 3).sum()
        98.0

    Reference:
        Reinhold et al., "Validating uncertainty in medical image
        translation", ISBI 2020, arXiv:2002.04639.
    """
    if array.ndim < 3:
        raise ValueError(f"array must be at least 3D. Received: array.shape={array.shape}")
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
        raise ValueError(f"side must be an integer >= 1. Received: side={side!r}")
    if len(center) != 3 or not all(0 <= int(c) < n for c, n in zip(center, array.shape)):
        raise ValueError(
            f"center must be 3 indices inside shape {array.shape[:3]}. Received: center={tuple(center)}"
        )
    out = array.copy()
    out[cube_slices(center, side, array.shape[:3])] = 0
    return out


def mr_tissue_scale(spec: PhantomSpec, index: int) -> np.ndarray:
    """Subject ``index``'s factors on the MR intensity of every tissue.

    Between subjects and scanners the MR signal of one tissue varies (relaxation
    times, protocol) while its CT number does not, so a model that has seen few
    subjects meets unseen MR contrasts. Each label's factor is
    ``exp(contrast_variability * z)`` with ``z`` standard normal, drawn
    independently per subject and label from the subject's own random stream
    (the anatomy and noise streams are unaffected).

    Args:
        spec: The phantom's spec.
        index: Subject index.

    Returns:
        float64 array of length ``max(label) + 1``; all ones when
        ``spec.contrast_variability`` is 0.
    """
    size = tissue_values("ct").size
    z = _rng(spec, index, _CONTRAST).standard_normal(size)
    return np.exp(spec.contrast_variability * z)


def _anomaly_center(mask: np.ndarray, side: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """A voxel where a ``side`` cube fits inside the body (else the deepest body voxel)."""
    depth = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="chessboard")[1:-1, 1:-1, 1:-1]
    candidates = np.argwhere(depth > side // 2)
    if candidates.size == 0:
        candidates = np.argwhere(depth == depth.max())
    return tuple(int(i) for i in candidates[rng.integers(len(candidates))])  # type: ignore[return-value]


def _ball(shape: Sequence[int], center: Sequence[int], diameter: int) -> np.ndarray:
    index = np.indices(shape, sparse=True)
    radius = diameter / 2.0
    return sum(((i - c) / radius) ** 2 for i, c in zip(index, center)) <= 1.0


def _with_lesion(anatomy: Anatomy, lesion: np.ndarray) -> Anatomy:
    labels = np.where(lesion, LESION, anatomy.labels).astype(np.uint8)
    parts = tuple(replace(p, masks=p.masks & ~lesion[p.region]) for p in anatomy.moving_parts)
    return replace(anatomy, labels=labels, moving_parts=parts)


def _noise_models(kind: str, anatomy: Anatomy) -> dict[str, NoiseModel]:
    labels, texture, bias, scale = anatomy.labels, anatomy.texture, anatomy.bias, anatomy.mr_tissue_scale
    ct_sigma = tissue_values("ct_noise")[labels]
    if kind == "wholebody":
        without_gas = np.where(labels == GAS, BOWEL, labels)
        return {
            "mr": NoiseModel(
                render_mr(labels, texture, bias, "mr", scale),
                np.full(labels.shape, WHOLEBODY_MR_SIGMA),
                "rician",
                jitter=False,
            ),
            "ct": NoiseModel(
                render_ct(without_gas, texture), ct_sigma, "gaussian", moving_parts=anatomy.moving_parts
            ),
        }
    t1 = render_mr(labels, texture, bias, "t1", scale)
    t2 = render_mr(labels, texture, bias, "t2", scale)
    return {
        "t1": NoiseModel(t1, tissue_values("t1_noise")[labels], "rician"),
        "t2": NoiseModel(t2, tissue_values("t2_noise")[labels], "rician"),
        "ct": NoiseModel(render_ct(labels, texture), ct_sigma, "gaussian"),
    }


def subject_model(spec: PhantomSpec, index: int) -> SubjectModel:
    """Build the fixed part of subject ``index``: anatomy, anomaly, exact moments.

    Args:
        spec: The phantom's spec.
        index: Subject index, integer in [0, 10**6).

    Returns:
        The :class:`SubjectModel`.

    Raises:
        PhantomOptionError: (a ``ValueError``) a bad index.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < 10**6:
        raise PhantomOptionError(f"index must be an integer in [0, 999999]. Received: index={index!r}")
    index = int(index)
    build = wholebody_anatomy if spec.kind == "wholebody" else brain_anatomy
    anatomy = build(spec.grid(), _rng(spec, index, _ANATOMY))
    if spec.contrast_variability > 0:
        anatomy = replace(anatomy, mr_tissue_scale=mr_tissue_scale(spec, index))
    anomaly_mask, cube = None, None
    if spec.anomaly is not None:
        center = _anomaly_center(anatomy.labels != BACKGROUND, spec.anomaly_size, _rng(spec, index, _ANOMALY))
        if spec.anomaly == "lesion":
            lesion = _ball(spec.shape, center, spec.anomaly_size)
            anatomy = _with_lesion(anatomy, lesion)
            anomaly_mask = lesion.astype(np.uint8)
        else:
            cube = cube_slices(center, spec.anomaly_size, spec.shape)
            anomaly_mask = np.zeros(spec.shape, dtype=np.uint8)
            anomaly_mask[cube] = 1
    models = _noise_models(spec.kind, anatomy)
    clean, noise_std = {}, {}
    for name, model in models.items():
        mean, std = exact_moments(model)
        if cube is not None and name in spec.inputs:
            mean[cube], std[cube] = 0.0, 0.0
        clean[name], noise_std[name] = mean.astype(np.float32), std.astype(np.float32)
    template = PhantomSubject(
        subject_id=subject_id(index),
        kind=spec.kind,
        images=MappingProxyType({}),
        clean=MappingProxyType(clean),
        noise_std=MappingProxyType(noise_std),
        labels=anatomy.labels,
        mask=(anatomy.labels != BACKGROUND).astype(np.uint8),
        affine=spec.affine,
        anomaly_mask=anomaly_mask,
        inputs=spec.inputs,
        targets=spec.targets,
    )
    return SubjectModel(spec, index, anatomy, MappingProxyType(models), template, cube)


def sample_subject(model: SubjectModel, *, noise_seed: int | None = None) -> PhantomSubject:
    """Draw the observed images of a subject.

    Args:
        model: From :func:`subject_model`.
        noise_seed: None for the subject's default noise (fixed by the spec's
            seed and the index), or a non-negative integer to redraw only the
            random part: the anatomy, ``clean`` and ``noise_std`` stay the same.

    Returns:
        The :class:`PhantomSubject`, owning its arrays (copies of the
        model's); modalities draw from independent random streams.

    Raises:
        PhantomOptionError: (a ``ValueError``) a bad noise_seed.
    """
    if noise_seed is None:
        root = np.random.SeedSequence([model.spec.seed, model.index, _NOISE])
    else:
        if isinstance(noise_seed, bool) or not isinstance(noise_seed, (int, np.integer)) or noise_seed < 0:
            raise PhantomOptionError(
                f"noise_seed must be None or an integer >= 0. Received: noise_seed={noise_seed!r}"
            )
        root = np.random.SeedSequence([model.spec.seed, model.index, _NOISE_SEEDED, int(noise_seed)])
    images = {}
    for (name, noise), child in zip(model.noise_models.items(), root.spawn(len(model.noise_models))):
        image = sample_image(noise, np.random.default_rng(child)).astype(np.float32)
        if model.cube is not None and name in model.spec.inputs:
            image[model.cube] = 0.0
        images[name] = image
    template = model.template
    return replace(
        template,
        images=MappingProxyType(images),
        clean=MappingProxyType({k: v.copy() for k, v in template.clean.items()}),
        noise_std=MappingProxyType({k: v.copy() for k, v in template.noise_std.items()}),
        labels=template.labels.copy(),
        mask=template.mask.copy(),
        affine=template.affine.copy(),
        anomaly_mask=None if template.anomaly_mask is None else template.anomaly_mask.copy(),
    )
