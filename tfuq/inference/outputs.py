"""Uncertainty maps in target units: NIfTI files on the reference grid and a QC summary.

The decomposition from :func:`tfuq.inference.mc.mc_predict_volume` is in
the normalised units the model was trained in. Normalisation is the affine
map ``y = (x - offset) / scale`` (:mod:`tfuq.data.normalisation`), so the
mean goes back with :func:`tfuq.data.denormalise` and every standard
deviation with :func:`tfuq.data.denormalise_std` (multiplied by ``scale``;
the offset does not enter a spread). Variances are turned into standard
deviations first, so the maps read in the target's units (HU for CT).

Files written for a subject ``s`` in ``out_dir``::

    s_mean.nii.gz  s_epistemic_std.nii.gz  s_aleatoric_std.nii.gz
    s_total_std.nii.gz  [s_<extra>.nii.gz ...]  s_qc.json

each on the reference volume's grid, orientation and header
(:func:`tfuq.data.save_volume`), written as one set
(:func:`tfuq.atomic.atomic_files`: into ``out_dir/.staging-s-<pid>/``, moved
into place when every file is written, the QC file last), so a killed run
leaves all of them or none. Nothing is written if any of the files exists,
unless ``overwrite=True``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tfuq.atomic import atomic_files, write_json
from tfuq.data.nifti import Volume, save_volume
from tfuq.data.normalisation import NormalisationParams, denormalise, denormalise_std
from tfuq.errors import UserError
from tfuq.inference.decomposition import ALEATORIC_VAR, EPISTEMIC_VAR, MEAN, TOTAL_VAR
from tfuq.typing import PathLike

__all__ = [
    "ALEATORIC_STD",
    "EPISTEMIC_STD",
    "OUTPUT_MAPS",
    "QC_STATISTICS",
    "STD_MAPS",
    "TOTAL_STD",
    "output_paths",
    "qc_summary",
    "to_target_units",
    "write_outputs",
]

#: Key and file suffix of the epistemic standard deviation map.
EPISTEMIC_STD = "epistemic_std"
#: Key and file suffix of the aleatoric standard deviation map.
ALEATORIC_STD = "aleatoric_std"
#: Key and file suffix of the total predictive standard deviation map.
TOTAL_STD = "total_std"
#: Standard-deviation maps summarised in the QC file.
STD_MAPS = (EPISTEMIC_STD, ALEATORIC_STD, TOTAL_STD)
#: Maps always written, in this order (``"mean"`` is :data:`tfuq.inference.MEAN`).
OUTPUT_MAPS = (MEAN, *STD_MAPS)
#: Statistics of each std map in the QC file.
QC_STATISTICS = ("mean", "median", "p95")

_SUFFIX = ".nii.gz"
_QC = "qc"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STD_OF = {EPISTEMIC_STD: EPISTEMIC_VAR, ALEATORIC_STD: ALEATORIC_VAR, TOTAL_STD: TOTAL_VAR}


def _float_map(value: Any, name: str) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Expected finite values in {name}. Received: NaN or infinite voxels.")
    return array


def to_target_units(decomposition: Mapping[str, Any], params: NormalisationParams) -> dict[str, np.ndarray]:
    """Mean and standard-deviation maps in the target's units.

    Args:
        decomposition: Maps keyed ``"mean"``, ``"epistemic_var"``,
            ``"aleatoric_var"``, ``"total_var"`` in normalised units (NumPy
            arrays or tensors of one shape, e.g. ``(X, Y, Z)``).
        params: The target's :class:`~tfuq.data.NormalisationParams`.

    Returns:
        dict keyed :data:`OUTPUT_MAPS`: ``denormalise(mean)`` and
        ``denormalise_std(sqrt(var))`` for each variance (tiny negative
        round-off clipped to 0), in the input float dtype.

    Raises:
        ValueError: A key is missing, shapes differ or values are not finite.

    Example:
        >>> params = NormalisationParams("window", -1024.0, 4095.0)
        >>> maps = to_target_units({"mean": np.array([0.25]), "epistemic_var": np.array([1e-4]),
        ...     "aleatoric_var": np.array([3e-4]), "total_var": np.array([4e-4])}, params)
        >>> round(float(maps["mean"][0]), 2), round(float(maps["total_std"][0]), 2)
        (-0.25, 81.9)
    """
    missing = [key for key in (MEAN, *_STD_OF.values()) if key not in decomposition]
    if missing:
        raise ValueError(
            f"Expected decomposition keys {[MEAN, *_STD_OF.values()]}. Received: {sorted(decomposition)} "
            f"(missing {missing})"
        )
    mean = _float_map(decomposition[MEAN], MEAN)
    out = {MEAN: denormalise(mean, params)}
    for std_key, var_key in _STD_OF.items():
        var = _float_map(decomposition[var_key], var_key)
        if var.shape != mean.shape:
            raise ValueError(
                f"Expected every map with the shape of the mean, {mean.shape}. "
                f"Received: {var_key} with shape {var.shape}"
            )
        out[std_key] = denormalise_std(np.sqrt(np.maximum(var, 0)), params)
    return out


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(
            f"Expected a threshold >= 0 (0 disables flagging). Received: threshold={threshold!r}"
        )
    if not np.isfinite(threshold):
        raise ValueError(f"Expected a finite threshold. Received: threshold={threshold!r}")
    return float(threshold)


def _check_mask(mask: npt.ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    selector = np.asarray(mask)
    if selector.shape != shape:
        raise ValueError(f"Expected a mask of shape {shape}. Received: mask.shape={selector.shape}")
    selector = selector.astype(bool) if selector.dtype != np.bool_ else selector
    if not selector.any():
        raise UserError("mask: selects no voxel; expected at least one voxel inside the mask.")
    return selector


def qc_summary(
    maps: Mapping[str, Any],
    mask: npt.ArrayLike | None = None,
    *,
    threshold: float = 0.0,
) -> dict[str, Any]:
    """Summary statistics of the std maps inside a mask, and a reliability flag.

    Args:
        maps: Maps in target units keyed at least :data:`STD_MAPS` (as from
            :func:`to_target_units`).
        mask: Boolean (or 0/1) array of the maps' shape; None (default)
            summarises every voxel.
        threshold: Flag the subject when the mean total std inside the mask
            exceeds it, in target units; 0 (default) disables flagging.

    Returns:
        JSON-safe dict: ``"mask_voxels"`` (int), ``"threshold"``,
        ``"flagged"`` (bool), and for each name in :data:`STD_MAPS` a dict of
        :data:`QC_STATISTICS` (``mean``, ``median``, ``p95`` -- the 95th
        percentile with linear interpolation), computed in float64.

    Raises:
        ValueError: Missing map, shape mismatch, negative threshold.
        UserError: The mask selects no voxel.
    """
    threshold = _check_threshold(threshold)
    missing = [key for key in STD_MAPS if key not in maps]
    if missing:
        raise ValueError(f"Expected maps {list(STD_MAPS)}. Received: {sorted(maps)} (missing {missing})")
    shape = np.shape(maps[TOTAL_STD])
    selector = _check_mask(mask, tuple(shape))
    summary: dict[str, Any] = {"mask_voxels": int(selector.sum()), "threshold": threshold}
    for key in STD_MAPS:
        values = np.asarray(maps[key], dtype=np.float64)
        if values.shape != selector.shape:
            raise ValueError(f"Expected {key} of shape {selector.shape}. Received: {values.shape}")
        inside = values[selector]
        summary[key] = {
            "mean": float(inside.mean()),
            "median": float(np.median(inside)),
            "p95": float(np.percentile(inside, 95.0)),
        }
    summary["flagged"] = bool(threshold > 0 and summary[TOTAL_STD]["mean"] > threshold)
    return summary


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in {".", ".."}:
        raise UserError(
            f"{what}: {name!r} is not a usable file name part; expected letters, digits, '_', '-' or '.'."
        )
    return name


def output_paths(out_dir: PathLike, subject: str, names: tuple[str, ...] = OUTPUT_MAPS) -> dict[str, Path]:
    """Paths ``<out_dir>/<subject>_<name>.nii.gz`` per map name, plus ``"qc"`` -> ``<subject>_qc.json``.

    Raises:
        UserError: The subject or a map name is not a plain file name part.
    """
    _check_name(subject, "subject")
    folder = Path(out_dir)
    paths = {name: folder / f"{subject}_{_check_name(name, 'map name')}{_SUFFIX}" for name in names}
    paths[_QC] = folder / f"{subject}_{_QC}.json"
    return paths


def write_outputs(
    out_dir: PathLike,
    subject: str,
    decomposition: Mapping[str, Any],
    reference: Volume,
    params: NormalisationParams,
    *,
    extra_maps: Mapping[str, Any] | None = None,
    mask: npt.ArrayLike | None = None,
    threshold: float = 0.0,
    overwrite: bool = False,
    finish_qc: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write a subject's maps in target units and its QC summary, as one set.

    Args:
        out_dir: Output folder (created if missing).
        subject: Subject identifier, used as file name prefix.
        decomposition: Normalised-unit maps keyed ``mean``, ``epistemic_var``,
            ``aleatoric_var``, ``total_var``, shape ``reference.shape``.
        reference: Volume whose grid, orientation and header the files take
            (e.g. the subject's input scan).
        params: The target's normalisation, to return to target units.
        extra_maps: Further maps written as given (already in their final
            units), e.g. ``{"alpha": ..., "beta": ..., "lower95": ...,
            "upper95": ...}``. Default None.
        mask: Region summarised in the QC file (shape ``reference.shape``);
            default None: the whole volume.
        threshold: Flag threshold on the mean total std in the mask, in
            target units; 0 (default) disables flagging.
        overwrite: Replace existing files. Default False: if any output file
            exists nothing is written.
        finish_qc: Called with the QC summary before it is written; returns
            the QC to write (e.g. with the reliability scores). Default None:
            the summary as it is.

    Returns:
        dict map name (and ``"qc"``) -> path written.

    Raises:
        UserError: An output exists and ``overwrite`` is False, a bad subject
            or map name, an empty mask, or an output folder that is a file or
            not writable.
        ValueError: Missing maps, wrong shapes, non-finite values or a
            negative threshold.

    Example:
        >>> paths = write_outputs("out", "sub01", maps, t1, ct_params,
        ...                       mask=brain, threshold=150.0)  # doctest: +SKIP
        >>> sorted(paths)  # doctest: +SKIP
        ['aleatoric_std', 'epistemic_std', 'mean', 'qc', 'total_std']
    """
    maps = to_target_units(decomposition, params)
    extras = {} if extra_maps is None else {name: _float_map(v, name) for name, v in extra_maps.items()}
    clash = sorted(set(extras) & {*OUTPUT_MAPS, _QC})
    if clash:
        raise UserError(f"extra_maps: names {clash} are reserved for the standard outputs; rename them.")
    paths = output_paths(out_dir, subject, (*OUTPUT_MAPS, *extras))
    qc = qc_summary(maps, mask, threshold=threshold)
    qc = {"subject": subject, "units": "target", "normalisation": params.to_dict(), **qc}
    for name, values in {**maps, **extras}.items():
        if tuple(np.shape(values)) != reference.shape:
            raise ValueError(
                f"Expected map {name!r} on the reference grid {reference.shape} ({reference.name}). "
                f"Received: shape {np.shape(values)}"
            )
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise UserError(
                f"{existing[0]}: already exists ({len(existing)} output file(s) of {subject!r}); "
                "refusing to overwrite (pass overwrite=True)."
            )
    if finish_qc is not None:
        qc = finish_qc(qc)
    files = [path.name for path in paths.values()]  # the QC file last: it marks a complete set
    with atomic_files(out_dir, files, label=subject, overwrite=overwrite) as staging:
        for name, values in {**maps, **extras}.items():
            save_volume(values, reference, staging / paths[name].name)
        write_json(staging / paths[_QC].name, qc)
    return paths
