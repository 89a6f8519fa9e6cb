"""What a phantom is made of: kind, grid, seed and anomaly, checked once.

A subject is fully determined by ``(PhantomSpec, index)``; the spec resolves
every default when it is built, so two specs that compare equal make the same
subjects.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfuq.data.phantom.shapes import Grid
from tfuq.errors import UserError

__all__ = [
    "ANOMALIES",
    "KINDS",
    "MODALITIES",
    "PhantomOptionError",
    "PhantomSpec",
]

#: Phantom kinds.
KINDS = ("wholebody", "brain")
#: Modalities of each kind, in the order they are drawn.
MODALITIES = {"wholebody": ("mr", "ct"), "brain": ("t1", "t2", "ct")}
#: Anomalies: an all-zero cube in the inputs, or a lesion of unseen intensity.
ANOMALIES = ("cube", "lesion")
_DEFAULT_SHAPES = {"wholebody": (64, 48, 96), "brain": (64, 64, 48)}
_DEFAULT_VOXEL_SIZES = {"wholebody": (6.5, 6.0, 7.0), "brain": (3.0, 3.5, 4.0)}
_DEFAULT_INPUTS = {"wholebody": ("mr",), "brain": ("ct", "t1")}
_DEFAULT_TARGETS = {"wholebody": ("ct",), "brain": ("t2",)}
_SHAPE_RANGE = (8, 512)
_VOXEL_RANGE = (0.1, 50.0)


class PhantomOptionError(UserError, ValueError):
    """A phantom option out of range: a ``ValueError`` the CLI reports as a user error."""


def _as_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise PhantomOptionError(f"{name} must be an integer in [{low}, {high}]. Received: {name}={value!r}")
    return int(value)


def _triple(name: str, value: Any, cast: type, low: float, high: float) -> tuple:
    kind = "integers" if cast is int else "numbers"
    message = f"{name} must be 3 {kind} in [{low}, {high}]. Received: {name}={value!r}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise PhantomOptionError(message)
    out = []
    for item in value:
        bad_type = isinstance(item, bool) or not isinstance(item, numbers.Real)
        if bad_type or (cast is int and not isinstance(item, numbers.Integral)):
            raise PhantomOptionError(message)
        if not (np.isfinite(item) and low <= item <= high):
            raise PhantomOptionError(message)
        out.append(cast(item))
    return tuple(out)


@dataclass(frozen=True)
class PhantomSpec:
    """Settings shared by all subjects of a phantom; defaults resolved on creation.

    Args:
        kind: ``"wholebody"`` (MR input, CT target) or ``"brain"`` (T1, T2
            and CT, for CT->MR and T1->T2).
        shape: Volume shape, 3 integers in [8, 512]. Default: (64, 48, 96)
            whole body, (64, 64, 48) brain.
        voxel_size: Voxel size in mm, 3 numbers in [0.1, 50]. Default:
            (6.5, 6.0, 7.0) whole body, (3.0, 3.5, 4.0) brain; the field of
            view is ``shape * voxel_size`` centred on the body.
        seed: Non-negative integer; with the subject index it fixes the
            anatomy and the default noise.
        anomaly: None, ``"cube"`` (all-zero cube in the inputs, Reinhold et
            al. 3.3) or ``"lesion"`` (a ball of a tissue with intensities
            above any normal tissue, in every modality).
        anomaly_size: Side of the cube or diameter of the lesion, in voxels,
            in [1, min(shape)]. Default: ``round(min(shape) / 6)`` (Reinhold's
            40-voxel cube in a 240-voxel volume), at least 2.
        inputs: Modalities that are inputs (receive the zero cube). Default:
            ``("mr",)`` whole body, ``("ct", "t1")`` brain.
        contrast_variability: Standard deviation, in [0, 1], of the log of a
            per-subject, per-tissue factor on the MR intensities (every MR
            contrast; CT numbers stay fixed): between-subject and
            between-scanner MR contrast differences. 0 (default) gives every
            subject the table's intensities.

    Raises:
        PhantomOptionError: (a ``ValueError``) an option out of range.

    Example:
        >>> spec = PhantomSpec(kind="brain", shape=(32, 32, 24), seed=3)
        >>> spec.voxel_size
        (3.0, 3.5, 4.0)
    """

    kind: str = "wholebody"
    shape: tuple[int, int, int] | None = None
    voxel_size: tuple[float, float, float] | None = None
    seed: int = 0
    anomaly: str | None = None
    anomaly_size: int | None = None
    inputs: tuple[str, ...] | None = None
    contrast_variability: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PhantomOptionError(f"kind must be one of {KINDS}. Received: kind={self.kind!r}")
        shape = _DEFAULT_SHAPES[self.kind] if self.shape is None else self.shape
        shape = _triple("shape", shape, int, *_SHAPE_RANGE)
        voxel = _DEFAULT_VOXEL_SIZES[self.kind] if self.voxel_size is None else self.voxel_size
        voxel = _triple("voxel_size", voxel, float, *_VOXEL_RANGE)
        seed = _as_int("seed", self.seed, 0, 2**63 - 1)
        if self.anomaly is not None and self.anomaly not in ANOMALIES:
            raise PhantomOptionError(
                f"anomaly must be None or one of {ANOMALIES}. Received: anomaly={self.anomaly!r}"
            )
        size = self.anomaly_size
        if size is None and self.anomaly is not None:
            size = max(2, round(min(shape) / 6))
        if size is not None:
            size = _as_int("anomaly_size", size, 1, min(shape))
        inputs = _DEFAULT_INPUTS[self.kind] if self.inputs is None else self.inputs
        modalities = MODALITIES[self.kind]
        if isinstance(inputs, str) or not all(m in modalities for m in inputs) or len(inputs) == 0:
            raise PhantomOptionError(
                f"inputs must be a non-empty tuple of {modalities} for kind={self.kind!r}. "
                f"Received: inputs={inputs!r}"
            )
        for name, value in (("shape", shape), ("voxel_size", voxel), ("seed", seed), ("anomaly_size", size)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "inputs", tuple(dict.fromkeys(inputs)))
        variability = self.contrast_variability
        if (
            isinstance(variability, bool)
            or not isinstance(variability, numbers.Real)
            or not (np.isfinite(variability) and 0.0 <= variability <= 1.0)
        ):
            raise PhantomOptionError(
                "contrast_variability must be a number in [0, 1]. "
                f"Received: contrast_variability={variability!r}"
            )
        object.__setattr__(self, "contrast_variability", float(variability))

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities of this kind."""
        return MODALITIES[self.kind]

    @property
    def targets(self) -> tuple[str, ...]:
        """Default target modalities (whole body: CT; brain: T2)."""
        return _DEFAULT_TARGETS[self.kind]

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> world (NIfTI RAS+ mm) affine, L-P-S oriented, origin at the volume centre.

        The first two voxel axes point to the subject's left and posterior
        (negative x and y directions, as DICOM-derived NIfTI files often
        are), the third superior.
        """
        affine = np.diag([-self.voxel_size[0], -self.voxel_size[1], self.voxel_size[2], 1.0])
        center = (np.asarray(self.shape, dtype=float) - 1.0) / 2.0
        affine[:3, 3] = -affine[:3, :3] @ center
        return affine

    def grid(self) -> Grid:
        """World coordinates (mm) of the voxel centres."""
        affine = self.affine
        return Grid(tuple(affine[a, a] * np.arange(n) + affine[a, 3] for a, n in enumerate(self.shape)))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dictionary of every (resolved) field."""
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "voxel_size": list(self.voxel_size),
            "seed": self.seed,
            "anomaly": self.anomaly,
            "anomaly_size": self.anomaly_size,
            "inputs": list(self.inputs),
            "targets": list(self.targets),
            "contrast_variability": self.contrast_variability,
        }
