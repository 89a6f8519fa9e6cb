"""The normalisation a trained model expects, fixed at training and stored with it.

Inputs are normalised per subject (their parameters are fitted on each volume,
at training and at inference alike), but the target's parameters must be
known at inference *without* the target, to map predictions back to its units
(HU for CT). So the target gets one set of parameters for every subject:

- ``"none"`` and ``"window"`` are fixed by the config;
- ``"minmax"``, ``"percentile"`` and ``"zscore"`` are fitted once, pooled over
  the voxels of all training subjects (inside the mask section when
  ``normalise_foreground_only``): the pooled minimum and maximum, pooled
  percentiles, or pooled mean and standard deviation.

MR is in arbitrary units that differ per scan (BraTS T2 brain medians range
108-641 over 18 subjects), so one pooled map leaves each subject's scale in
the target as noise the network cannot predict from the input. With
``target_normalisation = per_subject`` every subject's target is normalised by
its own statistics at training (as its inputs are), the stored target map is
the identity, and the maps are written in those normalised units -- as Reinhold
et al. (white-matter mean) and Zhao et al. (slices to [0, 1]) model MR.

:func:`normalisation_record` writes both into ``<model_dir>/normalisation.json``::

    {"target": {"section": "CT", "method": "window", "offset": -1024.0, "scale": 4095.0},
     "inputs": {"MR": {"method": "percentile", "per_subject": true, "cutoff": [0.01, 0.99],
                       "window": [-1024.0, 3071.0], "foreground_only": false, "mask": ""}}}

Reference: Klaser et al., SASHIMI 2020, section 3.1 (MR and CT rescaled to [0, 1]).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tfuq.config import Config, InputSource
from tfuq.data.normalisation import NormalisationParams, fit_normalisation
from tfuq.errors import UserError

__all__ = [
    "fit_pooled_normalisation",
    "fit_target_normalisation",
]

#: Voxels kept per subject for pooled percentiles (a strided subset beyond this).
_MAX_PERCENTILE_VOXELS = 4_000_000


def fit_pooled_normalisation(
    arrays: Iterable[np.ndarray],
    method: str,
    *,
    masks: Iterable[np.ndarray | None] | None = None,
    cutoff: Sequence[float] = (0.01, 0.99),
    window: Sequence[float] = (-1024.0, 3071.0),
) -> NormalisationParams:
    """Fit one normalisation to the voxels of several volumes pooled together.

    Args:
        arrays: Volumes (any shapes), e.g. the target of each training subject.
        method: One of :data:`tfuq.data.normalisation.NORMALISATION_METHODS`.
        masks: Optional boolean foreground per volume (None entries = all voxels).
        cutoff: ``(low, high)`` quantile fractions for ``"percentile"``.
        window: ``(low, high)`` intensities for ``"window"``.

    Returns:
        NormalisationParams: ``minmax`` of the pooled minimum and maximum,
        ``zscore`` of the pooled mean and standard deviation (exact, from
        sums in float64), ``percentile`` of the pooled voxels (a regular
        stride of at most 4M voxels per volume), ``none`` and ``window`` as
        :func:`~tfuq.data.normalisation.fit_normalisation`.

    Raises:
        ValueError: no volume, empty selections, non-finite values, constant data.

    Example:
        >>> fit_pooled_normalisation([np.zeros(4), np.ones(4)], "minmax").scale
        1.0
    """
    if method in ("none", "window"):
        return fit_normalisation(np.zeros(1), method, window=window)
    volumes = list(arrays)
    if not volumes:
        raise ValueError("Cannot fit a pooled normalisation: no volume given. Expected at least one.")
    selectors = list(masks) if masks is not None else [None] * len(volumes)
    if len(selectors) != len(volumes):
        raise ValueError(
            f"Expected one mask per volume. Received: {len(selectors)} masks, {len(volumes)} volumes"
        )
    if method == "minmax":
        extremes = [fit_normalisation(v, "minmax", mask=m) for v, m in zip(volumes, selectors)]
        low = min(p.offset for p in extremes)
        high = max(p.offset + p.scale for p in extremes)
        return fit_normalisation(np.array([low, high]), "minmax")
    if method == "zscore":
        count, total, squares = 0, 0.0, 0.0
        for volume, mask in zip(volumes, selectors):
            values = _values(volume, mask)
            count, total = count + values.size, total + float(values.sum())
            squares += float(np.square(values).sum())
        mean = total / count
        std = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
        if not std > 1e-12 * max(1.0, abs(mean)):
            raise ValueError(
                f"Cannot normalise with method 'zscore': the pooled voxels are constant ({mean:g})."
            )
        return NormalisationParams("zscore", mean, std)
    pooled = []
    for volume, mask in zip(volumes, selectors):
        values = _values(volume, mask)
        stride = max(1, -(-values.size // _MAX_PERCENTILE_VOXELS))
        pooled.append(values[::stride])
    return fit_normalisation(np.concatenate(pooled), method, cutoff=cutoff)


def _values(volume: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    data = np.asarray(volume, dtype=np.float64)
    if mask is not None:
        selector = np.asarray(mask)
        if selector.dtype != np.bool_ or data.shape[: selector.ndim] != selector.shape:
            raise ValueError(
                f"Expected a boolean mask of shape {data.shape} or a leading part of it. "
                f"Received: dtype={selector.dtype}, shape={selector.shape}"
            )
        data = data[selector]
    values = data.ravel()
    if values.size == 0:
        raise ValueError("Cannot fit a normalisation: no voxel selected (empty image or mask).")
    if not np.all(np.isfinite(values)):
        raise ValueError("Cannot fit a normalisation: the image holds NaN or infinite values.")
    return values


def fit_target_normalisation(
    config: Config, subject_ids: Sequence[str], sources: Mapping[str, InputSource] | None = None
) -> NormalisationParams:
    """The target section's normalisation for every subject, fitted on the training subjects.

    Args:
        config: The loaded configuration.
        subject_ids: Training subjects (only read for data-dependent methods).
        sources: Resolved input sources (default :func:`~tfuq.data.sources.resolve_sources`).

    Returns:
        NormalisationParams: fixed (``none``, ``window``) or pooled (see
        :func:`fit_pooled_normalisation`); the identity with
        ``target_normalisation = per_subject``, whose maps stay in the
        normalised units every subject's own target is mapped to.

    Raises:
        UserError: unreadable files or data that cannot be normalised (one line).
    """
    name = config.target_section
    source = config.sources[name]
    method = source.intensity_normalisation
    if config.per_subject_target:
        return fit_normalisation(np.zeros(1), "none")
    if method in ("none", "window"):
        return fit_normalisation(np.zeros(1), method, window=source.intensity_window)
    from tfuq.data.dataset import config_subjects
    from tfuq.data.loading import load_subject
    from tfuq.data.sources import resolve_sources
    from tfuq.data.subjects import Subject

    sources = resolve_sources(config) if sources is None else sources
    found = {s.id: s for s in config_subjects(config, sources)}
    mask_name = getattr(config.app, "mask", "")
    targets, masks = [], []
    for subject_id in subject_ids:
        if subject_id not in found:
            raise UserError(f"[{name}] intensity_normalisation: no files for training subject {subject_id}")
        files = {n: found[subject_id].files[n] for n in (name, mask_name) if n}
        volumes = load_subject(config, Subject(subject_id, files), sources)
        target = volumes[name]
        mask = None
        if source.normalise_foreground_only:
            mask = volumes[mask_name].array > 0 if mask_name else target.array > target.array.min()
            mask = mask.reshape(mask.shape[:3])
        targets.append(target.array)
        masks.append(mask)
    try:
        return fit_pooled_normalisation(
            targets, method, masks=masks, cutoff=source.cutoff, window=source.intensity_window
        )
    except ValueError as err:
        raise UserError(
            f"[{name}] intensity_normalisation = {method} over the training subjects: {err}"
        ) from err
