"""Tissue labels of the phantom and what each tissue looks like in CT and MR.

One label table serves both phantom kinds (whole body and brain). Every
tissue has a CT value (HU), MR intensities (arbitrary units: a whole-body
T1-like contrast ``mr`` and brain ``t1`` / ``t2``), the response of each
modality to a smooth texture field shared by all modalities (so the CT of a
subject is a deterministic function of what its MR shows), and the standard
deviation of the tissue's own noise.

Noise-free images are rendered from a label volume with pure functions::

    ct(p) = HU[l] + ct_texture[l] * t(p)
    mr(p) = bias(p) * I[l] * (1 + mr_texture[l] * t(p))

with ``l`` the label at ``p``, ``t`` the texture field in ``[-1, 1]`` and
``bias`` a smooth positive field (MR only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from tfuq.data.phantom.noise import MovingPart

__all__ = [
    "BACKGROUND",
    "BLADDER",
    "BOWEL",
    "CONTRASTS",
    "CORTICAL_BONE",
    "CSF",
    "DISC",
    "FAT",
    "GAS",
    "GREY_MATTER",
    "HEART",
    "KIDNEY",
    "LABELS",
    "LESION",
    "LIVER",
    "LUNG",
    "MUSCLE",
    "SPINAL_CANAL",
    "SPLEEN",
    "TISSUES",
    "TRABECULAR_BONE",
    "VENTRICLE",
    "WHITE_MATTER",
    "WHOLEBODY_MR_SIGMA",
    "Anatomy",
    "Tissue",
    "render_ct",
    "render_mr",
    "tissue_table",
    "tissue_values",
]

BACKGROUND = 0
LUNG = 1
FAT = 2
MUSCLE = 3
LIVER = 4
KIDNEY = 5
SPLEEN = 6
HEART = 7
BOWEL = 8
GAS = 9
BLADDER = 10
SPINAL_CANAL = 11
DISC = 12
TRABECULAR_BONE = 13
CORTICAL_BONE = 14
CSF = 15
GREY_MATTER = 16
WHITE_MATTER = 17
VENTRICLE = 18
LESION = 19

#: Rician noise sigma of the whole-body MR (same units as the ``mr`` column).
WHOLEBODY_MR_SIGMA = 20.0
#: MR contrasts in the table: whole-body T1-like, brain T1, brain T2.
CONTRASTS = ("mr", "t1", "t2")


@dataclass(frozen=True)
class Tissue:
    """What one tissue label looks like.

    Attributes:
        name: Tissue name.
        ct: CT value (HU) at texture 0.
        ct_texture: HU added per unit of the texture field (|t| <= 1).
        ct_noise: Standard deviation (HU) of the tissue's random CT part.
        mr: Whole-body T1-like MR intensity (a.u.).
        t1: Brain T1 intensity (a.u.).
        t2: Brain T2 intensity (a.u.).
        mr_texture: Relative MR change per unit of texture (signed).
        t1_noise: Rician sigma of the brain T1 in this tissue.
        t2_noise: Rician sigma of the brain T2 in this tissue.
    """

    name: str
    ct: float
    ct_texture: float
    ct_noise: float
    mr: float
    t1: float
    t2: float
    mr_texture: float = 0.0
    t1_noise: float = field(default=15.0)
    t2_noise: float = field(default=20.0)


_T = Tissue
#: Label value -> tissue. HU: air -1000, lung ~-820, fat -100, soft tissues
#: 10..80, trabecular bone 350 +- 45, cortical bone 1250 +- 200.
TISSUES: MappingProxyType[int, Tissue] = MappingProxyType(
    {
        BACKGROUND: _T("background", -1000.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 12.0, 15.0),
        LUNG: _T("lung", -820.0, 40.0, 30.0, 40.0, 40.0, 40.0, 0.2),
        FAT: _T("fat", -100.0, 10.0, 15.0, 1000.0, 950.0, 700.0, 0.05, 25.0, 25.0),
        MUSCLE: _T("muscle", 50.0, 8.0, 15.0, 320.0, 350.0, 250.0, 0.05),
        LIVER: _T("liver", 60.0, 6.0, 12.0, 480.0, 480.0, 220.0, 0.05),
        KIDNEY: _T("kidney", 30.0, 6.0, 15.0, 380.0, 400.0, 450.0, 0.05),
        SPLEEN: _T("spleen", 45.0, 5.0, 12.0, 400.0, 420.0, 500.0, 0.05),
        HEART: _T("heart", 40.0, 5.0, 15.0, 260.0, 280.0, 300.0, 0.05),
        BOWEL: _T("bowel", 20.0, 15.0, 20.0, 300.0, 300.0, 400.0, 0.1),
        GAS: _T("gas", -1000.0, 0.0, 25.0, 0.0, 0.0, 0.0),
        BLADDER: _T("bladder", 10.0, 2.0, 10.0, 120.0, 120.0, 1000.0, 0.02),
        SPINAL_CANAL: _T("spinal_canal", 15.0, 3.0, 10.0, 200.0, 180.0, 1000.0, 0.03),
        DISC: _T("disc", 80.0, 5.0, 20.0, 280.0, 300.0, 600.0, 0.05),
        TRABECULAR_BONE: _T("trabecular_bone", 350.0, 45.0, 60.0, 650.0, 600.0, 500.0, -0.1),
        CORTICAL_BONE: _T("cortical_bone", 1250.0, 200.0, 120.0, 30.0, 30.0, 30.0, -0.2),
        CSF: _T("csf", 8.0, 2.0, 6.0, 200.0, 180.0, 1000.0, 0.03, 15.0, 40.0),
        GREY_MATTER: _T("grey_matter", 38.0, 3.0, 5.0, 550.0, 560.0, 620.0, 0.04, 15.0, 25.0),
        WHITE_MATTER: _T("white_matter", 28.0, 3.0, 5.0, 750.0, 800.0, 450.0, 0.04, 15.0, 20.0),
        VENTRICLE: _T("ventricle", 8.0, 2.0, 6.0, 200.0, 180.0, 1000.0, 0.03, 15.0, 40.0),
        LESION: _T("lesion", 2500.0, 0.0, 30.0, 2000.0, 1600.0, 2000.0, 0.0, 30.0, 40.0),
    }
)
#: Label name -> value (the label table written to ``phantom.json``).
LABELS: MappingProxyType[str, int] = MappingProxyType({t.name: k for k, t in TISSUES.items()})


def tissue_values(column: str) -> np.ndarray:
    """Look-up array ``values[label]`` of one :class:`Tissue` attribute (float64).

    Args:
        column: Attribute name, e.g. ``"ct"``, ``"ct_noise"``, ``"t2"``.

    Returns:
        Array of length ``max(label) + 1``.

    Raises:
        ValueError: Unknown column.
    """
    names = {f for f in Tissue.__dataclass_fields__ if f != "name"}
    if column not in names:
        raise ValueError(
            f"Unknown tissue column. Expected one of {sorted(names)}. Received: column={column!r}"
        )
    values = np.zeros(max(TISSUES) + 1)
    for label, tissue in TISSUES.items():
        values[label] = getattr(tissue, column)
    return values


def tissue_table() -> dict[str, dict[str, Any]]:
    """JSON-ready table: label value (as a string) -> every tissue attribute."""
    return {str(label): asdict(tissue) for label, tissue in TISSUES.items()}


def render_ct(labels: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Noise-free CT (HU, float64) of a label volume and texture field of the same shape."""
    return tissue_values("ct")[labels] + tissue_values("ct_texture")[labels] * texture


def render_mr(
    labels: np.ndarray,
    texture: np.ndarray,
    bias: np.ndarray,
    contrast: str,
    tissue_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Noise-free MR magnitude (float64, >= 0) in one of :data:`CONTRASTS`.

    Args:
        labels: Label volume.
        texture: Texture field in ``[-1, 1]``, same shape.
        bias: Positive multiplicative bias field, same shape.
        contrast: ``"mr"``, ``"t1"`` or ``"t2"``.
        tissue_scale: Optional positive factor per label (length
            ``max(label) + 1``): the subject's own tissue intensities
            ``I[l] * tissue_scale[l]``. None = the table's.

    Returns:
        ``bias * I[labels] * tissue_scale[labels] * (1 + mr_texture[labels] * texture)``.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"Unknown MR contrast. Expected one of {CONTRASTS}. Received: contrast={contrast!r}")
    values = tissue_values(contrast)
    if tissue_scale is not None:
        scale = np.asarray(tissue_scale, dtype=float)
        if scale.shape != values.shape or not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(
                f"tissue_scale must be {values.size} finite positive numbers (one per label). "
                f"Received shape {scale.shape}"
            )
        values = values * scale
    relative = 1.0 + tissue_values("mr_texture")[labels] * texture
    return bias * values[labels] * relative


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One subject's anatomy in the reference (input) geometry.

    Attributes:
        labels: Tissue labels, uint8, volume shape.
        texture: Texture field shared by all modalities, float64 in [-1, 1].
        bias: MR bias field, float64 > 0.
        moving_parts: Parts whose CT position is random relative to the
            reference (bowel gas pockets); empty for the brain.
        mr_tissue_scale: The subject's factor on every tissue's MR
            intensities (one per label, see :func:`render_mr`); None = 1.
    """

    labels: np.ndarray
    texture: np.ndarray
    bias: np.ndarray
    moving_parts: tuple[MovingPart, ...] = ()
    mr_tissue_scale: np.ndarray | None = None
