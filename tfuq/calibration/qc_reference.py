"""The reliability flag's threshold, set from held-out subjects at calibration.

A pipeline needs one yes/no per subject: may this synthesised image be used?
A single absolute threshold on the mean std of a volume has no natural value
(it depends on units, anatomy and model) and averages a local failure away.
So the reference is built from what the model does on subjects it was not
trained on, slice by slice:

1. **slice statistic** :func:`slice_statistics`: the mean of a map (the
   recalibrated total std, normalised units) inside the mask of each slice
   along one axis (axial by default) that holds at least ``min_fraction`` of
   the fullest slice's mask voxels (edge slices with a few voxels are noise);
2. **reference** :func:`fit_qc_reference`: the statistics of every slice of
   the held-out calibration subjects pooled; the slice threshold is their
   ``quantile`` (0.99): by construction about 1 % of a clean held-out
   subject's slices exceed it;
3. **score** :func:`qc_score`: the fraction of a subject's slices above the
   slice threshold. A subject the model was trained for scores near
   ``1 - quantile``; a shifted scan (other contrast, strong bias field or
   noise, another site) pushes many slices above;
4. **flag**: ``score > flag_score`` with ``flag_score = max(minimum,
   margin x the upper median of the reference subjects' scores)`` (defaults
   0.1 and 2; the upper median of an even count is the higher middle one,
   so with one or two subjects it is the largest score and no reference
   subject is flagged), each reference subject scored leave-one-out
   (against the others' slices), stored with how it was set, so the rule is
   readable in ``qc.json``. The median, not the largest: one atypical
   held-out subject must not switch the flag off for everyone (measured on
   BraTS: of 4 held-out subjects, APY had 80 % of its slices' feature
   distance above the others' 0.99 quantile; ``margin x`` the largest score
   was 1.6, a score no scan can reach, so nothing was ever flagged, the FLAIR
   given as the T1 included). A reference subject whose leave-one-out score
   exceeds that first flag score is also left out of the pooled slices
   (its high slices would lift the slice threshold for everyone) and listed
   in ``flagged_reference_subjects``; ``tfuq calibrate`` warns about it: a
   scan to look at, not a reason to raise the threshold.

Reference:
    Kendall & Gal, NeurIPS 2017 (predictive uncertainty as a failure signal);
    Mehrtash et al., IEEE TMI 2020, arXiv:1911.13273 (uncertainty-based
    segment-level failure detection, thresholds from held-out data).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tfuq.atomic import write_json
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "QC_FEATURE_REFERENCE_FILE",
    "QC_REFERENCE_FILE",
    "QCReference",
    "fit_qc_reference",
    "load_qc_reference",
    "qc_score",
    "slice_statistics",
]

#: File name in ``<model_dir>/calibration/``.
QC_REFERENCE_FILE = "qc_reference.json"
#: The same for the feature distance (:mod:`tfuq.inference.features`).
QC_FEATURE_REFERENCE_FILE = "qc_reference_features.json"


def slice_statistics(
    values: Any, mask: Any | None = None, *, axis: int = -1, min_fraction: float = 0.1
) -> np.ndarray:
    """Mean of ``values`` inside ``mask`` per slice along ``axis``, for slices with enough mask voxels.

    Args:
        values: A 3D map, e.g. the total std ``(X, Y, Z)``.
        mask: Boolean map of the same shape; None: every voxel.
        axis: Slice axis. Default -1 (axial for RAS/LPS volumes).
        min_fraction: Keep slices holding at least this fraction of the
            fullest slice's mask voxels, in ``(0, 1]``. Default 0.1.

    Returns:
        float64 ``(S,)``: one mean per kept slice, in slice order.

    Raises:
        ValueError: shapes differ, non-finite values, bad ``min_fraction``.
        UserError: the mask selects no voxel.

    Example:
        >>> v = np.stack([np.full((2, 2), k, float) for k in range(3)], axis=-1)
        >>> slice_statistics(v).tolist()
        [0.0, 1.0, 2.0]
    """
    array = np.asarray(values, dtype=np.float64)
    selector = np.ones(array.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    if selector.shape != array.shape:
        raise ValueError(f"Expected mask of shape {array.shape}. Received: {selector.shape}")
    if not np.all(np.isfinite(array[selector])):
        raise ValueError("Expected finite values inside the mask. Received: NaN or infinite voxels.")
    if not 0.0 < float(min_fraction) <= 1.0:
        raise ValueError(f"Expected 0 < min_fraction <= 1. Received: min_fraction={min_fraction!r}")
    other = tuple(a for a in range(array.ndim) if a != axis % array.ndim)
    counts = selector.sum(axis=other)
    if counts.max() == 0:
        raise UserError("mask: selects no voxel; expected at least one voxel inside the mask.")
    sums = np.where(selector, array, 0.0).sum(axis=other)
    kept = counts >= float(min_fraction) * counts.max()
    return sums[kept] / counts[kept]


@dataclasses.dataclass(frozen=True)
class QCReference:
    """What :func:`qc_score` compares a subject with (see the module notes).

    Attributes:
        statistic: What the slice statistic is of, e.g. ``"total_std"``.
        quantile: Quantile of the pooled held-out slice statistics taken as the slice threshold.
        slice_threshold: That quantile, in the statistic's units.
        flag_score: A subject is flagged when its score exceeds this.
        subjects: Held-out subject id -> its own score against the reference.
        reference_quantiles: Quantiles 0.05, 0.25, 0.5, 0.75, 0.95, 0.99 of the pooled statistics.
        num_slices: Slices pooled.
        how: One sentence on how the threshold was set.
        in_sample: True when the subjects were Training subjects.
    """

    statistic: str
    quantile: float
    slice_threshold: float
    flag_score: float
    subjects: dict[str, float]
    reference_quantiles: dict[str, float]
    num_slices: int
    how: str
    in_sample: bool = False

    @property
    def flagged_reference_subjects(self) -> list[str]:
        """Reference subjects whose own (leave-one-out) score exceeds the flag score."""
        return sorted(s for s, score in self.subjects.items() if score > self.flag_score)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> QCReference:
        """Rebuild from :meth:`to_dict` output (KeyError / TypeError / ValueError when invalid)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})

    def save(self, path: PathLike) -> Path:
        """Write atomically, replacing an earlier reference."""
        return write_json(Path(path), self.to_dict(), overwrite=True)


def fit_qc_reference(
    statistics: Mapping[str, Iterable[float]],
    *,
    statistic: str = "total_std",
    quantile: float = 0.99,
    minimum: float = 0.1,
    margin: float = 2.0,
    in_sample: bool = False,
) -> QCReference:
    """The reference of held-out subjects' slice statistics.

    Args:
        statistics: Subject id -> its :func:`slice_statistics`.
        statistic: Name of what they are the mean of.
        quantile: Slice threshold quantile, in (0.5, 1). Default 0.99.
        minimum: Smallest flag score, in (0, 1). Default 0.1.
        margin: ``flag_score >= margin x`` the median held-out score; >= 1. Default 2.
        in_sample: The subjects were Training subjects (recorded).

    Returns:
        QCReference.

    Raises:
        ValueError: no subject or slice, or an argument out of range.

    Example:
        >>> ref = fit_qc_reference({"a": np.arange(100.0), "b": np.arange(100.0)})
        >>> round(ref.slice_threshold, 2), ref.flag_score
        (98.01, 0.1)
    """
    if not 0.5 < float(quantile) < 1.0:
        raise ValueError(f"Expected 0.5 < quantile < 1. Received: quantile={quantile!r}")
    if not 0.0 < float(minimum) < 1.0 or float(margin) < 1.0:
        raise ValueError(f"Expected 0 < minimum < 1 and margin >= 1. Received: {minimum!r}, {margin!r}")
    arrays = {s: np.asarray(list(v), dtype=np.float64) for s, v in statistics.items()}
    if not arrays or any(a.size == 0 for a in arrays.values()):
        raise ValueError("Expected at least one subject, each with at least one slice statistic.")
    first = _reference_scores(arrays, quantile)
    first_flag = max(float(minimum), float(margin) * _upper_median(first))
    atypical = sorted(s for s, v in first.items() if v > first_flag)
    kept = {s: a for s, a in arrays.items() if s not in atypical}
    pooled = np.concatenate(list(kept.values()))
    threshold = float(np.quantile(pooled, quantile))
    scores = _reference_scores(kept, quantile) if atypical else first
    scores.update({s: float(np.mean(arrays[s] > threshold)) for s in atypical})
    middle = _upper_median({s: scores[s] for s in kept})
    flag = max(float(minimum), float(margin) * middle)
    probs = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    kind = "Training (in-sample)" if in_sample else "held-out"
    scored = (
        "each scored against the threshold of the others' slices (leave one subject out)"
        if len(arrays) > 1
        else "scored against its own slices' threshold (one subject: in-sample, low)"
    )
    how = (
        f"slice threshold = the {quantile:g} quantile of the mean {statistic} of {pooled.size} slices of "
        f"{len(arrays)} {kind} subject(s); a subject's score is "
        f"the fraction of its slices above it; flagged when the score exceeds max({minimum:g}, {margin:g} x "
        f"the (upper) median reference subject's score {middle:.4g}, {scored})"
    )
    if atypical:
        how += (
            f"; left out of the slice threshold as unlike the others (their leave-one-out score above "
            f"{first_flag:.4g}): {', '.join(atypical)}"
        )
    return QCReference(
        statistic=statistic,
        quantile=float(quantile),
        slice_threshold=threshold,
        flag_score=flag,
        subjects=scores,
        reference_quantiles={f"q{round(100 * p):02d}": float(np.quantile(pooled, p)) for p in probs},
        num_slices=int(pooled.size),
        how=how,
        in_sample=in_sample,
    )


def _upper_median(scores: Mapping[str, float]) -> float:
    """The median of the scores; of an even count the higher middle one (with two subjects: the larger)."""
    return float(np.quantile(np.asarray(list(scores.values())), 0.5, method="higher"))


def _reference_scores(arrays: Mapping[str, np.ndarray], quantile: float) -> dict[str, float]:
    """Each reference subject's score as a new subject's would be: against the others' threshold.

    A subject scored against a threshold fitted on its own slices is in-sample:
    by construction only about ``1 - quantile`` of its slices lie above it, so
    the flag score set from such scores sits below what clean new subjects
    reach (measured on the demo phantom: reference scores 0.04 and 0, clean
    new subjects 0.04-0.29, 8 of 10 flagged). Leaving the subject out gives
    it the threshold a new subject meets. With one subject there is nothing
    to leave out and its in-sample score is used.
    """
    if len(arrays) == 1:
        ((subject, values),) = arrays.items()
        return {subject: float(np.mean(values > np.quantile(values, quantile)))}
    scores = {}
    for subject, values in arrays.items():
        others = np.concatenate([a for s, a in arrays.items() if s != subject])
        scores[subject] = float(np.mean(values > np.quantile(others, quantile)))
    return scores


def qc_score(statistics: Iterable[float], reference: QCReference) -> dict[str, Any]:
    """A subject's reliability against the reference.

    Returns:
        JSON-safe dict ``score`` (fraction of slices above the slice
        threshold), ``threshold`` (the flag score), ``flagged``,
        ``num_slices``, ``median_statistic`` and the reference
        (``slice_threshold``, ``reference_quantiles``, ``how``).

    Example:
        >>> ref = fit_qc_reference({"a": np.arange(100.0)})
        >>> qc_score(np.full(10, 500.0), ref)["flagged"]
        True
    """
    values = np.asarray(list(statistics), dtype=np.float64)
    if values.size == 0:
        raise ValueError("Expected at least one slice statistic.")
    score = float(np.mean(values > reference.slice_threshold))
    return {
        "score": score,
        "threshold": reference.flag_score,
        "flagged": bool(score > reference.flag_score),
        "num_slices": int(values.size),
        "median_statistic": float(np.median(values)),
        "statistic": reference.statistic,
        "slice_threshold": reference.slice_threshold,
        "reference_quantiles": reference.reference_quantiles,
        "reference_subjects": reference.subjects,
        "flagged_reference_subjects": reference.flagged_reference_subjects,
        "how": reference.how,
        "in_sample": reference.in_sample,
    }


def load_qc_reference(path: PathLike) -> QCReference | None:
    """The stored reference, or None without the file.

    Raises:
        UserError: the file exists but is not a valid reference.
    """
    file = Path(path)
    if not file.is_file():
        return None
    try:
        return QCReference.from_dict(json.loads(file.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{file}: not a valid tfuq QC reference: {error}") from None
