"""Recalibrating an over-confident predictor, with the numbers the note quotes.

Draws y ~ N(mu, sigma) but lets the "model" claim sigma * 0.5 (over-confident),
fits both recalibrators on one half and scores the other half.

Run: .venv/bin/python examples/calibration_recovery.py
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from tfuq.calibration import (
    IsotonicRecalibrator,
    SigmaScaling,
    coverage,
    pit_values,
    rms_calibration_error,
)
from tfuq.distributions import unconstrain


def main() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    loc = rng.normal(size=n) * 100.0
    sigma = np.exp(rng.normal(size=n))
    y = loc + sigma * rng.normal(size=n)
    half = n // 2
    honest = unconstrain("normal", loc, sigma).numpy()
    calibrated = rms_calibration_error(pit_values("normal", honest, y))
    print(f"calibrated model, RMS calibration error: {calibrated:.4f}")
    params = unconstrain("normal", loc, 0.5 * sigma).numpy()
    pit = pit_values("normal", params, y).numpy()
    print(f"over-confident (std x 0.5), held-out RMS error: {rms_calibration_error(pit[half:]):.4f}")
    iso = IsotonicRecalibrator().fit(pit[:half])
    iso_rms = rms_calibration_error(iso.transform(pit[half:]))
    print(f"  isotonic recalibration, held-out RMS error:   {iso_rms:.4f}")
    lower, upper = iso.central_interval("normal", params[half:], 0.95)
    cover = coverage(lower.numpy(), upper.numpy(), y[half:])
    print(f"  isotonic 95% interval coverage (held out):    {cover:.4f}")
    scaling = SigmaScaling("nll").fit("normal", params[:half], y[:half])
    scaled = scaling.scale_params("normal", params[half:])
    rms = rms_calibration_error(pit_values("normal", scaled, y[half:]))
    print(f"  sigma scaling (s = {scaling.scale_factor:.4f}), held-out RMS error: {rms:.4f}")
    beta = 1.5
    yg = loc + sigma * stats.gennorm.rvs(beta, size=n, random_state=1)
    gparams = unconstrain("generalized_normal", loc, 0.5 * sigma, np.full(n, beta)).numpy()
    gpit = pit_values("generalized_normal", gparams, yg).numpy()
    giso = IsotonicRecalibrator().fit(gpit[:half])
    before = rms_calibration_error(gpit[half:])
    after = rms_calibration_error(giso.transform(gpit[half:]))
    print(
        f"generalized normal (beta 1.5, alpha x 0.5): held-out RMS error {before:.4f} -> isotonic {after:.4f}"
    )


if __name__ == "__main__":
    main()
