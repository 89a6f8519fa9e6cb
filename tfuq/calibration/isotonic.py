"""Isotonic recalibration of predictive cdfs (Kuleshov et al. 2018).

On a calibration set, the PIT values ``p_i = F_i(y_i)`` of a calibrated model
are uniform. Otherwise a monotone map ``R`` from predicted to empirical
probability, ``R(p) = P(F(Y) <= p)``, is estimated and composed with every
predictive cdf: ``R(F(y))`` is calibrated, and calibrated quantiles are
``q(p) = F^-1(R^-1(p))``.

Mathematical details:
    Fit: sort the N PIT values; at each distinct value ``u_k`` the target is
    the empirical frequency ``#{p_i <= u_k} / N``; an isotonic (monotone
    non-decreasing) least-squares fit with the tie counts as weights
    (:func:`scipy.optimize.isotonic_regression`) gives ``R(u_k)``. At most
    ``max_knots`` knots are kept, spread evenly in probability, and ``(0, 0)``
    and ``(1, 1)`` close the map; ``R`` is linear between knots and clipped to
    [0, 1]. The inverse is the generalised inverse
    ``R^-1(p) = inf{x : R(x) >= p}``: linear inside rising segments, the left
    end of a flat part. Effective std for a coverage ``c``: half the width of
    the recalibrated central interval divided by ``Phi^-1((1+c)/2)``, i.e. the
    std of the normal with the same central-``c`` interval (for the default
    ``c = erf(1/sqrt 2) ~ 0.6827``, the half-width of the recalibrated 68.27 %
    interval); it equals the predicted std for a calibrated normal.

Reference:
    Kuleshov, Fenner & Ermon, "Accurate uncertainties for deep learning using
    calibrated regression", ICML 2018, arXiv:1807.00263.
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis",
    eq. (7) (recalibration of the predictive cdf per voxel).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf
from scipy import special
from scipy.optimize import isotonic_regression

from tfuq.calibration import persistence
from tfuq.calibration.checks import as_finite_array, check_probability
from tfuq.calibration.quantiles import predictive_quantile
from tfuq.errors import UserError
from tfuq.typing import PathLike

__all__ = ["ONE_SIGMA_COVERAGE", "IsotonicRecalibrator"]

#: Probability mass of a normal within one std of its mean, erf(1/sqrt(2)).
ONE_SIGMA_COVERAGE = math.erf(1.0 / math.sqrt(2.0))


def _fit_knots(pit: np.ndarray, max_knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(x, R(x))`` of the isotonic map from PIT values in [0, 1]."""
    values, counts = np.unique(pit, return_counts=True)
    frequency = np.cumsum(counts) / pit.size
    fitted = isotonic_regression(frequency, weights=counts.astype(np.float64), increasing=True).x
    if values.size > max_knots:
        targets = np.linspace(0.0, 1.0, max_knots)
        keep = np.searchsorted(fitted, targets, side="left").clip(0, values.size - 1)
        keep = np.unique(np.concatenate([[0, values.size - 1], keep]))
        values, fitted = values[keep], fitted[keep]
    x, y = values, np.clip(fitted, 0.0, 1.0)
    if x[0] > 0.0:
        x, y = np.concatenate([[0.0], x]), np.concatenate([[0.0], y])
    if x[-1] < 1.0:
        x, y = np.concatenate([x, [1.0]]), np.concatenate([y, [1.0]])
    return x, np.maximum.accumulate(y)


class IsotonicRecalibrator:
    """Monotone map from predicted to observed cdf probability, fitted on PIT values.

    Holds only its setting and fitted knots; the maths is NumPy on arrays.

    Args:
        max_knots: Most knots kept from the fit (spread evenly in
            probability), bounding the JSON size; the map is exact at the
            knots and linear between them. Default 1000 (error <= 1e-3).

    Example:
        >>> rec = IsotonicRecalibrator().fit(pit_calibration)
        >>> calibrated_pit = rec.transform(pit_test)
        >>> lower, upper = rec.central_interval("normal", params, 0.95)

    Reference:
        Kuleshov et al. 2018, arXiv:1807.00263.
    """

    def __init__(self, max_knots: int = 1000) -> None:
        if isinstance(max_knots, bool) or int(max_knots) != max_knots or max_knots < 2:
            raise ValueError(f"max_knots must be an int >= 2. Received: max_knots={max_knots!r}")
        self.max_knots = int(max_knots)
        self.knots_x: np.ndarray | None = None
        self.knots_y: np.ndarray | None = None
        self.num_fitted = 0

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or loading a fitted map) has happened."""
        return self.knots_x is not None

    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        if self.knots_x is None or self.knots_y is None:
            raise ValueError("IsotonicRecalibrator is not fitted. Call fit(pit) first.")
        return self.knots_x, self.knots_y

    def fit(self, pit: Any) -> IsotonicRecalibrator:
        """Fit the map on PIT values of a calibration set.

        Args:
            pit: PIT values in [0, 1] (any shape, flattened), e.g. from
                :func:`tfuq.calibration.pit_values` inside a mask.

        Returns:
            self.

        Raises:
            ValueError: empty input, NaN/inf, or values outside [0, 1].
        """
        values = as_finite_array(pit, "pit")
        if values.min() < 0.0 or values.max() > 1.0:
            raise ValueError(
                f"pit values must lie in [0, 1]. Received: min={values.min()!r}, max={values.max()!r}"
            )
        self.knots_x, self.knots_y = _fit_knots(values, self.max_knots)
        self.num_fitted = int(values.size)
        return self

    def transform(self, p: Any) -> np.ndarray:
        """Recalibrated probabilities ``R(p)`` (e.g. of PIT values), same shape as ``p``."""
        x, y = self._knots()
        probs = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
        return np.clip(np.interp(probs, x, y), 0.0, 1.0)

    def inverse(self, p: Any) -> np.ndarray:
        """Generalised inverse ``R^-1(p) = inf{x : R(x) >= p}``, same shape as ``p``."""
        x, y = self._knots()
        probs = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
        idx = np.searchsorted(y, probs, side="left")
        upper = np.clip(idx, 1, y.size - 1)
        lower = upper - 1
        rise = y[upper] - y[lower]
        frac = np.where(rise > 0, (probs - y[lower]) / np.where(rise > 0, rise, 1.0), 1.0)
        out = x[lower] + np.clip(frac, 0.0, 1.0) * (x[upper] - x[lower])
        return np.where(idx == 0, x[0], out)

    def quantile(self, family: str, params: Any, p: Any, *, mixture: bool = False) -> tf.Tensor:
        """Calibrated quantile ``F^-1(R^-1(p))`` per voxel.

        Args:
            family: One of :data:`tfuq.distributions.FAMILIES`.
            params: ``(*s, P)`` or, with ``mixture=True``, ``(T, *s, P)``.
            p: Probability (scalar or broadcastable to ``s``).
            mixture: Treat axis 0 of ``params`` as T MC samples.

        Returns:
            Tensor of shape ``s`` (infinite where ``R^-1(p)`` is 0 or 1).
        """
        return predictive_quantile(family, params, self.inverse(p), mixture=mixture)

    def central_interval(
        self, family: str, params: Any, coverage: float, *, mixture: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Recalibrated central interval ``[q((1-c)/2), q((1+c)/2)]``."""
        c = check_probability(coverage, "coverage")
        lower = self.quantile(family, params, 0.5 * (1.0 - c), mixture=mixture)
        upper = self.quantile(family, params, 0.5 * (1.0 + c), mixture=mixture)
        return lower, upper

    def effective_std(
        self,
        family: str,
        params: Any,
        coverage: float = ONE_SIGMA_COVERAGE,
        *,
        mixture: bool = False,
    ) -> tf.Tensor:
        """Gaussian-equivalent std of the recalibrated central interval.

        ``(upper - lower) / 2 / Phi^-1((1 + coverage) / 2)``; see the module
        docstring. Default coverage ``erf(1/sqrt 2)`` (68.27 %).
        """
        c = check_probability(coverage, "coverage")
        lower, upper = self.central_interval(family, params, c, mixture=mixture)
        z = float(special.ndtri(0.5 * (1.0 + c)))
        return (upper - lower) / tf.constant(2.0 * z, upper.dtype)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as a plain dict."""
        return {"max_knots": self.max_knots}

    def fitted_values(self) -> dict[str, Any] | None:
        """Fitted knots as plain lists, or None before fitting."""
        if not self.is_fitted:
            return None
        x, y = self._knots()
        return {"knots_x": x.tolist(), "knots_y": y.tolist(), "num_fitted": self.num_fitted}

    def to_json(self) -> str:
        """Plain JSON of the settings and fitted knots (exact round trip)."""
        return persistence.dumps(type(self).__name__, self.get_config(), self.fitted_values())

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> IsotonicRecalibrator:
        """Rebuild a recalibrator from :meth:`to_json` output.

        Raises:
            ValueError: not a stored IsotonicRecalibrator, or broken knots.
        """
        config, fitted = persistence.loads(text, cls.__name__)
        rec = cls(**config)
        if fitted is not None:
            x = as_finite_array(fitted.get("knots_x", []), "knots_x")
            y = as_finite_array(fitted.get("knots_y", []), "knots_y")
            monotone = np.all(np.diff(x) > 0) and np.all(np.diff(y) >= 0)
            if x.size != y.size or x.size < 2 or not monotone:
                raise ValueError(
                    "Stored knots must be two lists of equal length >= 2, knots_x strictly "
                    "increasing and knots_y non-decreasing."
                )
            rec.knots_x, rec.knots_y = x, y
            rec.num_fitted = int(fitted.get("num_fitted", 0))
        return rec

    def save(self, path: PathLike, *, overwrite: bool = False) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        persistence.save_payload(path, self.to_json(), overwrite=overwrite)

    @classmethod
    def load(cls, path: PathLike) -> IsotonicRecalibrator:
        """Read a file written by :meth:`save` (``UserError`` if it is not one)."""
        try:
            return cls.from_json(persistence.load_payload(path, cls.__name__))
        except ValueError as error:
            raise UserError(f"{path}: not a valid {cls.__name__} file: {error}") from None
