"""Trivial predictors a model must beat, scored as the model is: is it better than nothing?

A synthesised image can look plausible and still carry little more than the
truth's mean intensity (a network that predicts a near-constant scores a low
MAE on MR normalised to a narrow range). :func:`baseline_metrics` scores,
inside the mask, on the same truth:

* ``baseline_constant``: the best constant for the MAE, the truth's median
  inside the mask (the minimiser of ``mean |y - c|``), everywhere;
* ``baseline_linear``: the best per-subject linear intensity map of the first
  input, ``a + b x`` fitted to the truth by least squares inside the mask. It
  uses the truth (an oracle no deployed model has), so a model that does not
  beat it has learnt nothing beyond a global contrast change;

each with ``mae``, ``psnr`` and ``ssim`` (same data range as the model's),
and :func:`pearson`, the correlation of a prediction with the truth.

Reference:
    Reinhold et al., "Evaluating the impact of intensity normalization on MR
    image synthesis", SPIE 2019 (linear and histogram baselines for T1 -> T2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfuq.evaluation import image_metrics as im
from tfuq.evaluation.checks import resolve_mask, same_shape_maps

__all__ = ["BASELINES", "baseline_metrics", "pearson"]

#: Baseline names, the prefix of their metric keys (``baseline_constant_mae``, ...).
BASELINES = ("baseline_constant", "baseline_linear")


def pearson(target: Any, prediction: Any, mask: Any | None = None) -> float:
    """Pearson correlation of ``prediction`` with ``target`` inside ``mask`` (NaN if either is constant).

    Example:
        >>> round(pearson(np.arange(5.0), 2 * np.arange(5.0) + 1), 6)
        1.0
    """
    maps = same_shape_maps(target=target, prediction=prediction)
    selector = resolve_mask(mask, maps["target"].shape)
    y, p = maps["target"][selector], maps["prediction"][selector]
    if np.ptp(y) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(np.corrcoef(y, p)[0, 1])


def baseline_metrics(
    target: Any, input_image: Any, mask: Any | None = None, *, data_range: float | None = None
) -> dict[str, float]:
    """MAE, PSNR and SSIM of the constant and linear baselines (see the module notes).

    Args:
        target: Truth ``(X, Y, Z)`` (or 2D), in the units the model is scored in.
        input_image: The first network input on the same grid (any units).
        mask: Region scored and fitted in (non-zero = inside); None: everything.
        data_range: R of PSNR and SSIM; default the truth's range inside the mask.

    Returns:
        dict ``baseline_constant_{mae,psnr,ssim}``, ``baseline_linear_{mae,psnr,ssim}``,
        and ``baseline_linear_slope`` / ``baseline_linear_intercept``.

    Raises:
        ValueError: shapes differ or NaN/inf values.
        UserError: the mask selects no voxel.
    """
    maps = same_shape_maps(target=target, input=input_image)
    y, x = maps["target"], maps["input"]
    selector = resolve_mask(mask, y.shape)
    constant = np.full_like(y, float(np.median(y[selector])))
    xs = x[selector]
    if np.ptp(xs) > 0:
        slope, intercept = np.polyfit(xs, y[selector], 1)
    else:
        slope, intercept = 0.0, float(np.mean(y[selector]))
    linear = intercept + slope * x
    out: dict[str, float] = {}
    floor = float(np.min(y[selector]))
    for name, prediction in zip(BASELINES, (constant, linear)):
        out[f"{name}_mae"] = im.mae(y, prediction, selector)
        out[f"{name}_psnr"] = im.psnr(y, prediction, selector, data_range=data_range)
        out[f"{name}_ssim"] = im.ssim(y, prediction, selector, data_range=data_range, floor=floor)
    out["baseline_linear_slope"] = float(slope)
    out["baseline_linear_intercept"] = float(intercept)
    return out
