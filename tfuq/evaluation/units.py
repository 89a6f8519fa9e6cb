"""The units ``tfuq evaluate`` scores in: ``[EVALUATION] target_units``.

``tfuq infer`` writes its maps in the target's units by undoing the target
normalisation stored at training (``<model_dir>/normalisation.json``,
:mod:`tfuq.training.normalisation`): ``mean = mu * scale + offset`` and
``std = sigma * scale``. For CT those units are HU, the same for every
scan, so the maps and the truth can be compared as they are (``native``).
MR intensities are arbitrary per scan: a test subject's truth is in its own
units while the prediction is in the training subjects', so a scale or
offset difference between the scans becomes error. With ``normalised``:

* the maps go back to the model's normalised space with the stored
  parameters: ``mu = (mean - offset) / scale``, ``sigma = std / scale``
  (:func:`normalised_maps`);
* the subject's own truth is normalised with the target section's
  ``intensity_normalisation`` fitted on that subject (inside the mask when
  ``normalise_foreground_only``), as an input would be
  (:func:`normalised_target`);

and every metric, plot and montage is computed in those units, as papers
evaluate MR synthesis (Zhao et al. rescale each slice to [0, 1]; Reinhold et
al. normalise the white-matter mean).

Recalibration stays valid: an isotonic recalibrator acts on PIT values
``F(y) = Phi((y - mu) / sigma)`` and sigma scaling on a std factor, and both
are unchanged when the same affine map is applied to mean, std and truth.
The predictions here get the model's map; the truth gets its own, which
equals the model's for a single training subject (the recalibrator is then
applied exactly as fitted) and differs for a test subject -- the scan-units
difference this option removes.

Reference:
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis"
    (intensities normalised to [0, 1]).
    Reinhold et al., "Validating uncertainty in medical image translation",
    ISBI 2020, arXiv:2002.04639 (white-matter mean normalisation).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tfuq.config import InputSource
from tfuq.data.loading import fit_section_normalisation
from tfuq.data.nifti import Volume
from tfuq.data.normalisation import NormalisationParams, normalise

__all__ = ["NATIVE", "NORMALISED", "TARGET_UNITS", "normalised_maps", "normalised_target"]

#: Score in the units the maps are written in (HU for CT; the training subjects' for MR).
NATIVE = "native"
#: Score in normalised units; also the units label of the plots and summary.
NORMALISED = "normalised"
#: Values of ``[EVALUATION] target_units``.
TARGET_UNITS = (NATIVE, NORMALISED)


def normalised_maps(
    maps: Mapping[str, np.ndarray], params: NormalisationParams, *, mean_key: str = "mean"
) -> dict[str, np.ndarray]:
    """Map written maps back to the model's normalised target space.

    Args:
        maps: Name -> map in target units, any shapes: ``maps[mean_key]`` is
            the predictive mean, every other entry a standard deviation (or
            any scale parameter).
        params: The target normalisation stored with the model.
        mean_key: Key of the mean. Default ``"mean"``.

    Returns:
        dict with the same keys: ``(mean - offset) / scale`` and ``std / scale``.

    Raises:
        ValueError: ``mean_key`` is not in ``maps``.

    Example:
        >>> p = NormalisationParams("zscore", 500.0, 100.0)
        >>> out = normalised_maps({"mean": np.array([600.0]), "total_std": np.array([20.0])}, p)
        >>> float(out["mean"][0]), float(out["total_std"][0])
        (1.0, 0.2)
    """
    if mean_key not in maps:
        raise ValueError(f"Expected the mean map {mean_key!r} among the maps. Received: keys={sorted(maps)}")
    return {
        name: normalise(np.asarray(m, dtype=np.float64), params)
        if name == mean_key
        else np.asarray(m, dtype=np.float64) / params.scale
        for name, m in maps.items()
    }


def normalised_target(
    source: InputSource, target: Volume, mask: np.ndarray | None = None
) -> tuple[np.ndarray, NormalisationParams]:
    """Normalise a subject's truth with its section's method fitted on that subject.

    Args:
        source: The target section (``intensity_normalisation``, ``cutoff``,
            ``intensity_window``, ``normalise_foreground_only``).
        target: The subject's truth (its ``path`` names it in errors).
        mask: Foreground of ``target``'s grid (non-zero = inside), used with
            ``normalise_foreground_only``; None: voxels above the minimum
            (as :func:`tfuq.data.fit_section_normalisation`).

    Returns:
        ``(normalised array, fitted parameters)``.

    Raises:
        UserError: the truth cannot be normalised (e.g. constant in the mask).
    """
    params = fit_section_normalisation(source, target, mask)
    return normalise(np.asarray(target.array, dtype=np.float64), params), params
