"""Built-in paired phantom with ground-truth noise: data without a download.

Two kinds of seeded, paired volumes:

- ``"wholebody"``: a T1-like MR (input; tissue intensities, smooth
  multiplicative bias field, Rician noise) and its CT in HU (target), from
  the shoulders to mid-thigh: subcutaneous and visceral fat, muscle, lungs,
  heart, liver, spleen, kidneys, bowel with gas pockets, bladder, a spine of
  separate vertebrae (cortical shell, trabecular core) with discs between
  them and a spinal canal, sacrum, pelvis and femurs.
- ``"brain"``: T1, T2 and CT of a head: scalp, skull (cortical bone), CSF,
  grey and white matter, ventricles, cerebellum; for CT->MR and T1->T2.

Each target is its clean image plus a random part whose per-voxel standard
deviation is known *exactly* (``noise_std``): tissue noise (larger in bone
and lung), a sub-voxel misregistration / partial-volume term (large at
tissue boundaries) and, in the whole-body CT, gas pockets whose position is
random relative to the MR (see :mod:`tfuq.data.phantom.noise`). That is the
ground truth a model's aleatoric standard deviation is checked against.

A subject is fully determined by ``(spec, index)``; ``noise_seed`` redraws
only the random part. Anatomy varies between subjects (size, position,
organ shapes, spine, gas).

Files written by :func:`write_phantom` (``<id>`` = ``phantom000``, ...)::

    wholebody: <id>_mr, <id>_ct, <id>_mask, <id>_labels, <id>_noise_std (CT, HU)
    brain:     <id>_t1, <id>_t2, <id>_ct, <id>_mask, <id>_labels,
               <id>_t1_noise_std, <id>_t2_noise_std, <id>_ct_noise_std,
               <id>_noise_std (= the T2's)
    both:      <id>_anomaly_mask when an anomaly is inserted

all ``.nii.gz`` (images float32, masks and labels uint8) with an L-P-S
oriented affine (sform and qform codes 1, units mm), plus ``phantom.json``
(spec, seed, label and tissue tables, noise model, version), written last.

Example:
    >>> subject = make_subject(PhantomSpec(kind="wholebody", shape=(32, 24, 48),
    ...                                    voxel_size=(13.0, 12.0, 14.0)), 0)
    >>> sorted(subject.images)
    ['ct', 'mr']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from tfuq.atomic import atomic_path, write_json
from tfuq.data.phantom.noise import JITTER_FRACTION, JITTER_OFFSETS, JITTER_PROBABILITIES
from tfuq.data.phantom.spec import ANOMALIES, KINDS, MODALITIES, PhantomOptionError, PhantomSpec
from tfuq.data.phantom.subject import (
    PhantomSubject,
    SubjectModel,
    insert_zero_cube,
    mr_tissue_scale,
    sample_subject,
    subject_id,
    subject_model,
)
from tfuq.data.phantom.tissues import LABELS, TISSUES, WHOLEBODY_MR_SIGMA, tissue_table
from tfuq.data.phantom.wholebody import GAS_POSITION_PROBABILITIES
from tfuq.errors import UserError
from tfuq.typing import PathLike
from tfuq.version import __version__

__all__ = [
    "ANOMALIES",
    "KINDS",
    "LABELS",
    "MODALITIES",
    "PHANTOM_FORMAT_VERSION",
    "TISSUES",
    "PhantomOptionError",
    "PhantomSpec",
    "PhantomSubject",
    "SubjectModel",
    "insert_zero_cube",
    "make_subject",
    "mr_tissue_scale",
    "phantom_files",
    "sample_subject",
    "subject_id",
    "subject_model",
    "write_phantom",
]

#: Version of the files and ``phantom.json`` layout; bumped when they change.
PHANTOM_FORMAT_VERSION = 1
_MAX_SUBJECTS = 1000


def make_subject(spec: PhantomSpec, index: int, *, noise_seed: int | None = None) -> PhantomSubject:
    """Make subject ``index`` of a phantom.

    Args:
        spec: The phantom's settings (kind, shape, voxel size, seed, anomaly).
        index: Subject index, integer >= 0.
        noise_seed: None for the subject's default noise, or an integer >= 0
            to redraw only the random part (anatomy, ``clean`` and
            ``noise_std`` unchanged). To draw many realisations, build
            :func:`subject_model` once and call :func:`sample_subject`.

    Returns:
        A :class:`PhantomSubject`: ``images``, ``clean`` and ``noise_std``
        per modality (float32, ``spec.shape``), ``labels`` and ``mask``
        (uint8), ``affine``, ``anomaly_mask`` (uint8 or None).

    Raises:
        PhantomOptionError: (a ``ValueError``) a bad index or noise_seed.
    """
    return sample_subject(subject_model(spec, index), noise_seed=noise_seed)


def phantom_files(kind: str, identifier: str, *, anomaly: bool = False) -> dict[str, str]:
    """File names written for one subject: role -> name.

    Args:
        kind: ``"wholebody"`` or ``"brain"``.
        identifier: Subject id, e.g. ``"phantom000"``.
        anomaly: Include the anomaly mask.

    Returns:
        Roles are the modality names, ``mask``, ``labels``, ``noise_std``,
        ``<modality>_noise_std`` (brain) and ``anomaly_mask``.
    """
    if kind not in KINDS:
        raise PhantomOptionError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
    roles = [*MODALITIES[kind], "mask", "labels"]
    if kind == "brain":
        roles += [f"{m}_noise_std" for m in MODALITIES[kind]]
    roles.append("noise_std")
    if anomaly:
        roles.append("anomaly_mask")
    return {role: f"{identifier}_{role}.nii.gz" for role in roles}


def _volumes(subject: PhantomSubject) -> dict[str, np.ndarray]:
    volumes: dict[str, np.ndarray] = dict(subject.images)
    volumes["mask"], volumes["labels"] = subject.mask, subject.labels
    if subject.kind == "brain":
        for modality, std in subject.noise_std.items():
            volumes[f"{modality}_noise_std"] = std
        volumes["noise_std"] = subject.noise_std["t2"]
    else:
        volumes["noise_std"] = subject.noise_std["ct"]
    if subject.anomaly_mask is not None:
        volumes["anomaly_mask"] = subject.anomaly_mask
    return volumes


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, *, overwrite: bool) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(array.dtype)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)


def _description(spec: PhantomSpec, ids: list[str]) -> dict[str, Any]:
    anomaly = spec.anomaly is not None
    return {
        "format": "tfuq-phantom",
        "version": PHANTOM_FORMAT_VERSION,
        "tfuq_version": __version__,
        "spec": spec.to_json(),
        "seed": spec.seed,
        "subjects": {i: phantom_files(spec.kind, i, anomaly=anomaly) for i in ids},
        "affine": spec.affine.tolist(),
        "labels": dict(LABELS),
        "tissues": tissue_table(),
        "units": {"ct": "HU", "mr": "a.u.", "t1": "a.u.", "t2": "a.u.", "noise_std": "units of the modality"},
        "noise": {
            "noise_std": "exact per-voxel standard deviation of (image - E[image | anatomy])",
            "tissue_noise": "Gaussian with tissue std ct_noise (CT); Rician with tissue sigma "
            f"t1_noise/t2_noise (brain MR) or sigma {WHOLEBODY_MR_SIGMA} (whole-body MR)",
            "jitter": {
                "applies_to": "wholebody ct; brain t1, t2, ct",
                "fraction": JITTER_FRACTION,
                "offsets_voxels": [list(o) for o in JITTER_OFFSETS],
                "probabilities": list(JITTER_PROBABILITIES),
            },
            "gas_positions": {
                "applies_to": "wholebody ct",
                "offsets_voxels": [list(o) for o in JITTER_OFFSETS],
                "probabilities": list(GAS_POSITION_PROBABILITIES),
            },
        },
    }


def write_phantom(
    outdir: PathLike,
    *,
    kind: str = "wholebody",
    num_subjects: int = 4,
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    anomaly: str | None = None,
    anomaly_size: int | None = None,
    contrast_variability: float = 0.0,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write a phantom data set: NIfTI files per subject plus ``phantom.json``.

    Every argument is checked and every destination tested before the first
    file is written; each file is written atomically and ``phantom.json``
    last, so an interrupted run never leaves a half-written file.

    Args:
        outdir: Output folder (created if missing).
        kind: ``"wholebody"`` or ``"brain"``.
        num_subjects: Number of subjects, integer in [1, 1000].
        seed: Non-negative integer fixing every subject.
        shape: Volume shape (3 integers in [8, 512]); None for the kind's
            default ((64, 48, 96) whole body, (64, 64, 48) brain).
        voxel_size: Voxel size in mm (3 numbers in [0.1, 50]); None for the
            kind's default ((6.5, 6.0, 7.0) whole body, (3.0, 3.5, 4.0) brain).
        anomaly: None, ``"cube"`` or ``"lesion"`` (see :class:`PhantomSpec`).
        anomaly_size: Cube side / lesion diameter in voxels; None for the default.
        contrast_variability: Log-SD of the per-subject, per-tissue MR
            intensity factors, in [0, 1] (see :class:`PhantomSpec`).
        overwrite: Replace existing files; default False refuses them.
        progress: Called with 1 after each subject is written (e.g. a
            progress bar's ``update``).

    Returns:
        The paths written, subject by subject in :func:`phantom_files` order,
        then ``phantom.json``.

    Raises:
        PhantomOptionError: (a ``ValueError`` and a ``UserError``) an option
            out of range, naming it and the valid range.
        UserError: A destination exists and ``overwrite`` is False, or
            ``outdir`` is not a folder.

    Example:
        >>> paths = write_phantom("phantom", kind="brain", num_subjects=2)  # doctest: +SKIP
    """
    spec = PhantomSpec(
        kind=kind,
        shape=shape,
        voxel_size=voxel_size,
        seed=seed,
        anomaly=anomaly,
        anomaly_size=anomaly_size,
        contrast_variability=contrast_variability,
    )
    integer = isinstance(num_subjects, (int, np.integer)) and not isinstance(num_subjects, bool)
    if not integer or not 1 <= num_subjects <= _MAX_SUBJECTS:
        raise PhantomOptionError(
            f"num_subjects must be an integer in [1, {_MAX_SUBJECTS}]. "
            f"Received: num_subjects={num_subjects!r}"
        )
    folder = Path(outdir)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder; expected an output folder.")
    ids = [subject_id(i) for i in range(int(num_subjects))]
    plan = {i: phantom_files(spec.kind, i, anomaly=spec.anomaly is not None) for i in ids}
    destinations = [folder / name for files in plan.values() for name in files.values()]
    destinations.append(folder / "phantom.json")
    if not overwrite:
        existing = [path for path in destinations if path.exists()]
        if existing:
            raise UserError(
                f"{existing[0]}: already exists ({len(existing)} of the phantom's files do); "
                "refusing to overwrite them (pass --overwrite, or overwrite=True in Python)."
            )
    written: list[Path] = []
    for index, identifier in enumerate(ids):
        subject = make_subject(spec, index)
        volumes = _volumes(subject)
        for role, name in plan[identifier].items():
            path = folder / name
            _write_nifti(path, volumes[role], subject.affine, overwrite=overwrite)
            written.append(path)
        if progress is not None:
            progress(1)
    written.append(write_json(folder / "phantom.json", _description(spec, ids), overwrite=overwrite))
    return written
