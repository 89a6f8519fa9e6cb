"""Recalibration applied to the MC moments of each voxel, as a handful of constants.

``tfuq infer`` and an exported SavedModel both answer from the streaming MC
moments of each voxel (mean, epistemic and aleatoric variance), not from the
T member distributions, which are never kept (memory independent of T).
Recalibration is applied to those moments as follows, by
:meth:`MomentRecalibration.apply` in both (NumPy arrays in ``tfuq infer``,
tensors inside the SavedModel's graph), so one model gives one answer; every
constant is computed once from the fitted recalibrator and, at export, stored
in the graph (the recalibrator itself is kept in the SavedModel's assets).

Mathematical details:
    *Sigma scaling* (factor s, :class:`~tfuq.calibration.SigmaScaling`):
    every member's scale is multiplied by s, exactly as
    :meth:`SigmaScaling.scale_params` does for an MC mixture, so the
    aleatoric variance is multiplied by s^2 (all families: the variance is
    proportional to the squared scale) and the epistemic spread is
    unchanged::

        aleatoric_var' = s^2 aleatoric_var,  total_var' = epistemic_var + aleatoric_var'

    *Isotonic* (map R of Kuleshov et al., :class:`~tfuq.calibration.IsotonicRecalibrator`):
    the predictive distribution is moment-matched by a normal with the MC
    mean m and total std t; the recalibrated quantile is then
    ``q(p) = m + t Phi^-1(R^-1(p))``. The central 95 % interval is
    ``[m + z_lo t, m + z_hi t]`` with ``z = Phi^-1(R^-1(0.025 | 0.975))``,
    and the reported stds are multiplied by the effective-std factor::

        k = (Phi^-1(R^-1((1+c)/2)) - Phi^-1(R^-1((1-c)/2))) / (2 Phi^-1((1+c)/2)),  c = erf(1/sqrt 2)

    (the recalibrated 68.27 % half-width divided by t, i.e.
    :meth:`IsotonicRecalibrator.effective_std` of the moment-matched normal;
    epistemic and aleatoric stds share the factor, so total^2 = epistemic^2 +
    aleatoric^2 still holds). Because the interval belongs to a normal,
    ``R^-1`` is needed only at these fixed probabilities: it is evaluated
    once, at export, with the recalibrator's own piecewise-linear inverse of
    the fitted knots; probabilities are clipped to [1e-6, 1 - 1e-6] so the
    bounds stay finite.

    Without recalibration the maps are the plain decomposition and no
    interval is exported.

Reference:
    Kuleshov, Fenner & Ermon, ICML 2018, arXiv:1807.00263 (isotonic
    recalibration). Laves et al., MIDL 2020, arXiv:2004.12211 (sigma scaling).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from scipy import special

from tfuq.calibration.isotonic import ONE_SIGMA_COVERAGE, IsotonicRecalibrator
from tfuq.calibration.sigma_scaling import SigmaScaling
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = [
    "INTERVAL_COVERAGE",
    "RECALIBRATION_KINDS",
    "MomentRecalibration",
    "load_recalibrator",
]

#: Coverage of the exported central interval (the ``lower95`` / ``upper95`` outputs).
INTERVAL_COVERAGE = 0.95
#: What a SavedModel can apply.
RECALIBRATION_KINDS = ("none", "sigma_scaling", "isotonic")
#: Probabilities are kept this far from 0 and 1 before Phi^-1.
_PROB_EPS = 1e-6


def _ppf(p: float) -> float:
    return float(special.ndtri(min(max(float(p), _PROB_EPS), 1.0 - _PROB_EPS)))


@dataclasses.dataclass(frozen=True)
class MomentRecalibration:
    """Constants of the recalibration applied inside a SavedModel (see the module docstring).

    Attributes:
        kind: One of :data:`RECALIBRATION_KINDS`.
        aleatoric_scale: Sigma-scaling factor s (1 otherwise).
        std_factor: Isotonic effective-std factor k (1 otherwise).
        lower_z: ``lower95 = mean + lower_z * total_std`` (before ``std_factor``).
        upper_z: ``upper95 = mean + upper_z * total_std``.

    Raises:
        ValueError: unknown kind, non-positive factors or ``lower_z >= upper_z``.
    """

    kind: str = "none"
    aleatoric_scale: float = 1.0
    std_factor: float = 1.0
    lower_z: float = -float(special.ndtri(0.5 + INTERVAL_COVERAGE / 2))
    upper_z: float = float(special.ndtri(0.5 + INTERVAL_COVERAGE / 2))

    def __post_init__(self) -> None:
        if self.kind not in RECALIBRATION_KINDS:
            raise ValueError(f"Expected kind in {RECALIBRATION_KINDS}. Received: kind={self.kind!r}")
        for name in ("aleatoric_scale", "std_factor"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Expected a finite {name} > 0. Received: {name}={value!r}")
        if not (math.isfinite(self.lower_z) and math.isfinite(self.upper_z) and self.lower_z < self.upper_z):
            raise ValueError(
                f"Expected finite lower_z < upper_z. Received: lower_z={self.lower_z!r}, "
                f"upper_z={self.upper_z!r}"
            )

    @property
    def has_interval(self) -> bool:
        """True when the SavedModel outputs the recalibrated ``lower95`` / ``upper95``."""
        return self.kind != "none"

    @classmethod
    def from_recalibrator(
        cls, recalibrator: IsotonicRecalibrator | SigmaScaling | None
    ) -> MomentRecalibration:
        """Constants for a fitted recalibrator (None: no recalibration).

        Raises:
            ValueError: the recalibrator is not fitted or of another type.
        """
        if recalibrator is None:
            return cls()
        if isinstance(recalibrator, SigmaScaling):
            if recalibrator.scale_factor is None:
                raise ValueError("SigmaScaling is not fitted. Expected a fitted scale_factor.")
            return cls(kind="sigma_scaling", aleatoric_scale=float(recalibrator.scale_factor))
        if isinstance(recalibrator, IsotonicRecalibrator):
            if not recalibrator.is_fitted:
                raise ValueError("IsotonicRecalibrator is not fitted. Expected fitted knots.")
            c = ONE_SIGMA_COVERAGE
            one = [_ppf(recalibrator.inverse(0.5 * (1.0 + s * c))) for s in (-1.0, 1.0)]
            factor = (one[1] - one[0]) / (2.0 * float(special.ndtri(0.5 * (1.0 + c))))
            lo, hi = (_ppf(recalibrator.inverse(0.5 * (1.0 + s * INTERVAL_COVERAGE))) for s in (-1.0, 1.0))
            return cls(kind="isotonic", std_factor=factor, lower_z=lo, upper_z=hi)
        raise ValueError(
            "Expected an IsotonicRecalibrator, a SigmaScaling or None. "
            f"Received: {type(recalibrator).__name__}"
        )

    def apply(self, mean: Any, epistemic_var: Any, aleatoric_var: Any) -> dict[str, Any]:
        """The recalibrated stds and interval of MC moments (see the module notes).

        Args:
            mean: Predictive mean, any shape (NumPy array or tensor).
            epistemic_var: Epistemic variance ``>= 0``, same shape.
            aleatoric_var: Aleatoric variance ``>= 0``, same shape.

        Returns:
            dict ``epistemic_std``, ``aleatoric_std``, ``total_std`` (times
            ``std_factor``, aleatoric part scaled by ``aleatoric_scale``) and,
            when :attr:`has_interval`, ``lower95`` / ``upper95``; same units
            as the inputs (normalised or target: the map is affine-equivariant).
        """
        aleatoric = aleatoric_var * (self.aleatoric_scale**2)
        total_std = (epistemic_var + aleatoric) ** 0.5
        k = self.std_factor
        out = {
            "epistemic_std": k * epistemic_var**0.5,
            "aleatoric_std": k * aleatoric**0.5,
            "total_std": k * total_std,
        }
        if self.has_interval:
            out["lower95"] = mean + self.lower_z * total_std
            out["upper95"] = mean + self.upper_z * total_std
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the constants (plus the interval coverage)."""
        return {**dataclasses.asdict(self), "interval_coverage": INTERVAL_COVERAGE}


def load_recalibrator(path: PathLike) -> IsotonicRecalibrator | SigmaScaling:
    """Read a stored recalibrator of either kind (the file's ``"kind"`` decides).

    Args:
        path: A file written by ``IsotonicRecalibrator.save`` or ``SigmaScaling.save``.

    Returns:
        The fitted recalibrator.

    Raises:
        UserError: missing, unreadable, not a stored recalibrator, or not fitted.
    """
    file = Path(path)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"{file}: cannot read the calibration file ({error.strerror}).") from None
    except ValueError as error:
        raise UserError(f"{file}: not a JSON calibration file: {error}") from None
    kinds = {"IsotonicRecalibrator": IsotonicRecalibrator, "SigmaScaling": SigmaScaling}
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in kinds:
        raise UserError(f"{file}: expected a stored {' or '.join(kinds)}, got kind={kind!r}")
    recalibrator = kinds[kind].load(file)
    if not recalibrator.is_fitted:
        raise UserError(f"{file}: the {kind} was saved before fitting; run tfuq calibrate again.")
    return recalibrator
