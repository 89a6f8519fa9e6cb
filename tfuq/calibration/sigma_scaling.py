"""Sigma scaling: one factor s for every predicted scale, fitted on a calibration set.

The simplest post-hoc recalibration of a heteroscedastic head: every scale
(sigma for normal, b for Laplace, alpha for the generalized normal, with its
shape beta unchanged) is multiplied by the same ``s > 0``, so the shape of
the uncertainty map is kept and only its level changes.

Mathematical details:
    With ``z_i = (y_i - mu_i) / scale_i`` the NLL of the scaled prediction is
    minimised in closed form for one normal per voxel, ``s^2 = mean(z^2)``,
    and for one Laplace per voxel, ``s = mean(|z|)``. Otherwise (generalized
    normal, MC mixtures, ``objective="calibration"``) ``log s`` is found by
    bounded Brent search (:func:`scipy.optimize.minimize_scalar`) on the mean
    NLL or on the RMS calibration error of the scaled PIT values. Scaled
    parameters are written back to the head's unconstrained channel,
    ``raw' = softplus^-1(s * scale - SCALE_EPS)``. For one location-scale
    distribution the std and central intervals scale exactly: ``std' = s std``,
    ``mu +- s (bound - mu)``; for an MC mixture (whose epistemic spread is
    not scaled) the scaled mixture must be rebuilt with :meth:`scale_params`.

Reference:
    Laves, Ihler, Fast, Kahrs & Ortmaier, "Well-calibrated regression
    uncertainty in medical imaging with deep learning", MIDL 2020,
    arXiv:2004.12211 (sigma scaling).
    Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural networks",
    ICML 2017, arXiv:1706.04599 (temperature scaling).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import optimize, special, stats

from tfuq.calibration import persistence
from tfuq.calibration.checks import as_finite_array
from tfuq.calibration.metrics import rms_calibration_error
from tfuq.calibration.pit import check_prediction
from tfuq.distributions import family as fam
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["OBJECTIVES", "SigmaScaling"]

#: What a scale factor can be fitted to minimise.
OBJECTIVES = ("nll", "calibration")


def _scipy_dist(family: str, loc: np.ndarray, scale: np.ndarray, power: np.ndarray | None) -> Any:
    if family == "normal":
        return stats.norm(loc, scale)
    if family == "laplace":
        return stats.laplace(loc, scale)
    return stats.gennorm(power, loc, scale)


class SigmaScaling:
    """One multiplicative factor for all predicted scales.

    Holds only its settings and the fitted factor ``scale_factor``.

    Args:
        objective: ``"nll"`` (default; closed form for one normal or Laplace
            per voxel) or ``"calibration"`` (RMS calibration error of the PIT
            values, :func:`tfuq.calibration.rms_calibration_error`).
        bounds: Search interval of s for numerical fits. Default (1e-3, 1e3).
        num_bins: Calibration-curve grid for ``objective="calibration"``.

    Example:
        >>> scaling = SigmaScaling().fit("normal", params_cal, y_cal)
        >>> calibrated_params = scaling.scale_params("normal", params_test)

    Reference:
        Laves et al. 2020, arXiv:2004.12211.
    """

    def __init__(
        self,
        objective: str = "nll",
        bounds: tuple[float, float] = (1e-3, 1e3),
        num_bins: int = 100,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective. Expected one of {OBJECTIVES}. Received: {objective!r}")
        lo, hi = (float(b) for b in bounds)
        if not (0.0 < lo < hi and math.isfinite(hi)):
            raise ValueError(f"bounds must satisfy 0 < low < high < inf. Received: bounds={bounds!r}")
        if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 2:
            raise ValueError(f"num_bins must be an int >= 2. Received: num_bins={num_bins!r}")
        self.objective = objective
        self.bounds = (lo, hi)
        self.num_bins = int(num_bins)
        self.scale_factor: float | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether a scale factor has been fitted or loaded."""
        return self.scale_factor is not None

    def _factor(self) -> float:
        if self.scale_factor is None:
            raise ValueError("SigmaScaling is not fitted. Call fit(...) first.")
        return self.scale_factor

    def _search(self, loss: Any) -> float:
        lo, hi = self.bounds
        result = optimize.minimize_scalar(
            lambda log_s: loss(math.exp(log_s)),
            bounds=(math.log(lo), math.log(hi)),
            method="bounded",
            options={"xatol": 1e-8},
        )
        return float(math.exp(result.x))

    def fit(
        self,
        family: str,
        params: Any,
        y: Any,
        *,
        mixture: bool = False,
        mask: Any | None = None,
    ) -> SigmaScaling:
        """Fit s on a calibration set.

        Args:
            family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``.
            params: Unconstrained head channels ``(*s, P)``, or ``(T, *s, P)``
                with ``mixture=True``.
            y: Ground truth, shape ``s``.
            mixture: Treat axis 0 of ``params`` as T MC samples (each member's
                scale is multiplied by s).
            mask: Optional boolean array of shape ``s``: fit on those voxels.

        Returns:
            self.

        Raises:
            ValueError: point family, empty selection, NaN/inf values.
        """
        if fam.check_family(family) == "point":
            raise ValueError("A 'point' head has no scale to recalibrate.")
        params_t, y_t = check_prediction(family, params, y, mixture=mixture)
        constrained = {k: v.numpy().astype(np.float64) for k, v in fam.constrain(family, params_t).items()}
        obs = y_t.numpy().astype(np.float64)
        if mask is not None:
            keep = np.asarray(mask, dtype=bool)
            obs = obs[keep]
            constrained = {k: (v[:, keep] if mixture else v[keep]) for k, v in constrained.items()}
        obs = as_finite_array(obs, "y", flatten=False)
        loc, scale = constrained["loc"], constrained["scale"]
        power = constrained.get("power")
        for name, value in constrained.items():
            as_finite_array(value, f"params ({name})")
        z = (obs - loc) / scale
        if self.objective == "nll" and not mixture and family == "normal":
            self.scale_factor = float(np.sqrt(np.mean(np.square(z))))
            return self
        if self.objective == "nll" and not mixture and family == "laplace":
            self.scale_factor = float(np.mean(np.abs(z)))
            return self

        def mean_nll(s: float) -> float:
            log_p = _scipy_dist(family, loc, s * scale, power).logpdf(obs)
            if mixture:
                log_p = special.logsumexp(log_p, axis=0) - math.log(log_p.shape[0])
            return float(-np.mean(log_p))

        def calibration(s: float) -> float:
            pit = _scipy_dist(family, loc, s * scale, power).cdf(obs)
            if mixture:
                pit = pit.mean(axis=0)
            return rms_calibration_error(pit, self.num_bins)

        self.scale_factor = self._search(mean_nll if self.objective == "nll" else calibration)
        return self

    def fit_moments(self, mean: Any, std: Any, y: Any) -> SigmaScaling:
        """Fit s for Gaussian predictions given as mean and std maps.

        Args:
            mean: Predictive means (e.g. ``decompose(...)["mean"]``).
            std: Predictive stds (e.g. ``sqrt(total_var)``), > 0, same shape.
            y: Ground truth, same shape.

        Returns:
            self (closed form for ``"nll"``: ``s^2 = mean(((y - mean)/std)^2)``).
        """
        mu = as_finite_array(mean, "mean")
        sd = as_finite_array(std, "std")
        obs = as_finite_array(y, "y")
        if not (mu.shape == sd.shape == obs.shape):
            raise ValueError(
                f"mean, std and y must have the same size. Received: {mu.size}, {sd.size}, {obs.size}"
            )
        if sd.min() <= 0:
            raise ValueError(f"std must be > 0. Received: min={sd.min()!r}")
        z = (obs - mu) / sd
        if self.objective == "nll":
            self.scale_factor = float(np.sqrt(np.mean(np.square(z))))
        else:
            self.scale_factor = self._search(
                lambda s: rms_calibration_error(special.ndtr(z / s), self.num_bins)
            )
        return self

    def scale_params(self, family: str, params: Any) -> tf.Tensor:
        """Head channels with every scale multiplied by s (loc and beta unchanged).

        Args:
            family: ``"normal"``, ``"laplace"`` or ``"generalized_normal"``.
            params: Unconstrained channels ``(..., P)`` (any leading axes,
                including an MC axis).

        Returns:
            Tensor like ``params`` whose scale channel gives ``s * scale``
            (floored at ``2 * SCALE_EPS``).
        """
        factor = self._factor()
        if fam.check_family(family) == "point":
            raise ValueError("A 'point' head has no scale to recalibrate.")
        params = tf.convert_to_tensor(params)
        if not params.dtype.is_floating:
            params = tf.cast(params, tf.float32)
        scale = fam.constrain(family, params)["scale"]
        eps = tf.constant(fam.SCALE_EPS, params.dtype)
        target = tf.maximum(tf.constant(factor, params.dtype) * scale - eps, eps)
        raw = tfp.math.softplus_inverse(target)
        channels = tf.unstack(params, axis=-1)
        channels[1] = raw
        return tf.stack(channels, axis=-1)

    def scale_std(self, std: Any) -> Any:
        """``s * std`` for std maps of one location-scale distribution per voxel."""
        return self._factor() * std

    def scale_interval(self, center: Any, lower: Any, upper: Any) -> tuple[Any, Any]:
        """Scale a central interval about its center: ``center + s (bound - center)``."""
        factor = self._factor()
        return center + factor * (lower - center), center + factor * (upper - center)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as a plain dict."""
        return {"objective": self.objective, "bounds": list(self.bounds), "num_bins": self.num_bins}

    def to_json(self) -> str:
        """Plain JSON of the settings and the fitted factor (exact round trip)."""
        fitted = None if self.scale_factor is None else {"scale_factor": self.scale_factor}
        return persistence.dumps(type(self).__name__, self.get_config(), fitted)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> SigmaScaling:
        """Rebuild from :meth:`to_json` output (``ValueError`` if it is not one)."""
        config, fitted = persistence.loads(text, cls.__name__)
        scaling = cls(**{**config, "bounds": tuple(config.get("bounds", (1e-3, 1e3)))})
        if fitted is not None:
            factor = fitted.get("scale_factor")
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
                raise ValueError(f"A stored scale_factor must be a number > 0. Received: {factor!r}")
            scaling.scale_factor = float(factor)
        return scaling

    def save(self, path: PathLike, *, overwrite: bool = False) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        persistence.save_payload(path, self.to_json(), overwrite=overwrite)

    @classmethod
    def load(cls, path: PathLike) -> SigmaScaling:
        """Read a file written by :meth:`save` (``UserError`` if it is not one)."""
        try:
            return cls.from_json(persistence.load_payload(path, cls.__name__))
        except ValueError as error:
            raise UserError(f"{path}: not a valid {cls.__name__} file: {error}") from None
