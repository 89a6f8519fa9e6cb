"""Image similarity metrics of a synthesised volume: MAE, MSE, RMSE, PSNR, SSIM, nRMSE, nSTD.

Every metric takes the ground truth first, then the prediction, and an
optional boolean mask (the body or brain); with a mask only the voxels inside
it count. Values are computed in float64 and returned in the target's units
(HU for CT) where they have units.

Mathematical details:
    With errors ``e = y - y_hat`` over the N selected voxels::

        MAE   = (1/N) sum |e|          MSE = (1/N) sum e^2      RMSE = sqrt(MSE)
        PSNR  = 10 log10(R^2 / MSE)    (R: data range, default max(y) - min(y))
        nRMSE = ||e||_2 / ||y||_2      (Zhao et al. eq. 8)
        nSTD  = ||std||_2 / sqrt(N)    (Zhao et al. eq. 9)

    both norms over the masked voxels of one slice (slice level) or of the
    whole volume (volume level). The extracted text of eq. 9 shows ``N``
    under the norm; the radical sign is lost in the extraction and the
    square root is read here, which makes nSTD the root-mean-square std (in
    target units) and independent of the region size. SSIM (Wang et al.
    2004) uses Gaussian-weighted local statistics (sigma 1.5, truncated at
    3.5 sigma, an 11-voxel window, reflected borders), in 2D or 3D::

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    with ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``; the map is averaged inside
    the mask, or, without a mask, over the voxels at least half a window away
    from the border (as scikit-image's ``structural_similarity`` with
    ``gaussian_weights=True, use_sample_covariance=False``).

    SSIM is not shift invariant: its luminance term ``(2 mu_x mu_y + C1) /
    (mu_x^2 + mu_y^2 + C1)`` assumes intensities measured from a true zero
    (Wang et al. define it for non-negative luminance, range ``[0, R]``). In
    units with an arbitrary origin (z-scored MR, whose brain mean is 0; HU)
    it punishes a small error of a local mean near 0 as a large one and can go
    negative. ``ssim(..., floor=f)`` measures both images from ``f``; the
    evaluation passes the truth's minimum inside the mask, so the truth spans
    ``[0, R]`` as SSIM assumes, the same in any units that differ by an offset.

Reference:
    Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error
    visibility to structural similarity", IEEE TIP 13(4), 2004,
    doi:10.1109/TIP.2003.819861.
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis",
    eq. (8)-(9) (nRMSE and nSTD at slice and volume level).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from tfuq.evaluation.checks import as_map, resolve_mask, same_shape_maps

__all__ = [
    "SSIM_SIGMA",
    "SSIM_TRUNCATE",
    "mae",
    "mse",
    "nrmse",
    "nstd",
    "psnr",
    "rmse",
    "ssim",
    "ssim_map",
]

#: Standard deviation (voxels) of the Gaussian SSIM window, as Wang et al.
SSIM_SIGMA = 1.5
#: The Gaussian window is cut at this many sigmas (radius 5 voxels at sigma 1.5).
SSIM_TRUNCATE = 3.5


def _selected_errors(target: Any, prediction: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray]:
    maps = same_shape_maps(target=target, prediction=prediction)
    selector = resolve_mask(mask, maps["target"].shape)
    y = maps["target"][selector]
    return y, y - maps["prediction"][selector]


def mae(target: Any, prediction: Any, mask: Any | None = None) -> float:
    """Mean absolute error ``mean(|y - y_hat|)`` inside the mask.

    Args:
        target: Ground truth, any shape.
        prediction: Prediction (e.g. the MC mean), same shape.
        mask: Optional boolean array of that shape; None selects every voxel.

    Returns:
        float, in target units.

    Raises:
        ValueError: shapes differ, empty or non-finite maps.
        UserError: the mask selects no voxel.

    Example:
        >>> mae([0.0, 1.0, 2.0], [0.0, 2.0, 4.0])
        1.0
    """
    _, error = _selected_errors(target, prediction, mask)
    return float(np.mean(np.abs(error)))


def mse(target: Any, prediction: Any, mask: Any | None = None) -> float:
    """Mean squared error ``mean((y - y_hat)^2)`` inside the mask (arguments as :func:`mae`)."""
    _, error = _selected_errors(target, prediction, mask)
    return float(np.mean(np.square(error)))


def rmse(target: Any, prediction: Any, mask: Any | None = None) -> float:
    """Root mean squared error ``sqrt(MSE)`` inside the mask (arguments as :func:`mae`)."""
    return math.sqrt(mse(target, prediction, mask))


def _data_range(y: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        value = float(np.max(y) - np.min(y))
        if value <= 0:
            raise ValueError(
                "The target is constant, so its range is 0. Expected data_range= given explicitly."
            )
        return value
    value = float(data_range)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"data_range must be a finite number > 0. Received: data_range={data_range!r}")
    return value


def psnr(target: Any, prediction: Any, mask: Any | None = None, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` in dB.

    Args:
        target: Ground truth, any shape.
        prediction: Prediction, same shape.
        mask: Optional boolean array; None selects every voxel.
        data_range: R, the range of possible values (e.g. 4095 for CT
            windowed to [-1024, 3071] HU). Default None: the range of the
            target inside the mask, ``max(y) - min(y)``.

    Returns:
        float in dB; ``inf`` when the prediction is exact.

    Raises:
        ValueError: shapes differ, ``data_range <= 0``, or a constant target
            without ``data_range``.
        UserError: the mask selects no voxel.

    Example:
        >>> psnr([0.0, 10.0], [1.0, 9.0])  # MSE 1, R 10 -> 20 dB
        20.0
    """
    y, error = _selected_errors(target, prediction, mask)
    value = _data_range(y, data_range)
    mse_value = float(np.mean(np.square(error)))
    if mse_value == 0.0:
        return math.inf
    return 10.0 * math.log10(value**2 / mse_value)


def _ssim_window_radius(sigma: float, truncate: float) -> int:
    return int(truncate * sigma + 0.5)


def ssim_map(
    target: Any,
    prediction: Any,
    *,
    data_range: float,
    sigma: float = SSIM_SIGMA,
    truncate: float = SSIM_TRUNCATE,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Local SSIM at every voxel with a Gaussian window (2D or 3D, reflected borders).

    Args:
        target: Ground truth, 2D or 3D.
        prediction: Prediction, same shape.
        data_range: R in ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``; > 0.
        sigma: Window std in voxels. Default 1.5.
        truncate: Window radius in sigmas. Default 3.5.
        k1: Luminance constant. Default 0.01.
        k2: Contrast constant. Default 0.03.

    Returns:
        float64 array of the input shape, values in [-1, 1].

    Raises:
        ValueError: shapes differ, not 2D/3D, non-positive sigma or data_range.
    """
    maps = same_shape_maps(target=target, prediction=prediction)
    x, y = maps["target"], maps["prediction"]
    if x.ndim not in (2, 3):
        raise ValueError(f"SSIM needs 2D or 3D images. Received: shape {x.shape}")
    if not (sigma > 0 and truncate > 0):
        raise ValueError(f"sigma and truncate must be > 0. Received: sigma={sigma!r}, truncate={truncate!r}")
    value = _data_range(x, data_range)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=sigma, truncate=truncate, mode="reflect")

    mu_x, mu_y = smooth(x), smooth(y)
    var_x = smooth(x * x) - mu_x * mu_x
    var_y = smooth(y * y) - mu_y * mu_y
    cov = smooth(x * y) - mu_x * mu_y
    c1, c2 = (k1 * value) ** 2, (k2 * value) ** 2
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(
    target: Any,
    prediction: Any,
    mask: Any | None = None,
    *,
    data_range: float | None = None,
    sigma: float = SSIM_SIGMA,
    truncate: float = SSIM_TRUNCATE,
    floor: float | None = None,
) -> float:
    """Mean structural similarity (Gaussian window, 2D or 3D).

    Args:
        target: Ground truth, 2D or 3D.
        prediction: Prediction, same shape.
        mask: Optional boolean array: average the SSIM map over these voxels
            (statistics still use the neighbours outside). None: average over
            the voxels at least ``radius = int(truncate * sigma + 0.5)`` voxels
            from every border, as scikit-image does.
        data_range: R of the constants; default ``max(y) - min(y)`` of the
            target inside the mask.
        sigma: Window std in voxels. Default 1.5.
        truncate: Window radius in sigmas. Default 3.5.
        floor: Intensity subtracted from both images first (the origin of the
            luminance term, see the module notes); None: 0, the images as
            given (scikit-image's convention).

    Returns:
        float in [-1, 1]; 1 for identical images.

    Raises:
        ValueError: shapes differ, not 2D/3D, or (without a mask) an axis
            shorter than the window ``2 * radius + 1``.
        UserError: the mask selects no voxel.

    Example:
        >>> volume = np.random.default_rng(0).normal(size=(12, 12, 12))
        >>> ssim(volume, volume)
        1.0
    """
    x = as_map(target, "target")
    selector = None if mask is None else resolve_mask(mask, x.shape)
    value = _data_range(x if selector is None else x[selector], data_range)
    y = as_map(prediction, "prediction")
    if floor is not None:
        if not math.isfinite(float(floor)):
            raise ValueError(f"floor must be a finite number. Received: floor={floor!r}")
        x, y = x - float(floor), y - float(floor)
    local = ssim_map(x, y, data_range=value, sigma=sigma, truncate=truncate)
    if selector is not None:
        return float(np.mean(local[selector]))
    radius = _ssim_window_radius(sigma, truncate)
    if min(x.shape) < 2 * radius + 1:
        raise ValueError(
            f"Every axis must be at least the SSIM window, {2 * radius + 1} voxels, without a mask. "
            f"Received: shape {x.shape}"
        )
    inner = tuple(slice(radius, n - radius) for n in x.shape)
    return float(np.mean(local[inner]))


def _per_slice_sums(values: np.ndarray, selector: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    other = tuple(i for i in range(values.ndim) if i != axis % values.ndim)
    return np.sum(np.where(selector, values, 0.0), axis=other), np.sum(selector, axis=other)


def _check_axis(axis: int | None, ndim: int) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be None or an axis of a {ndim}D map. Received: axis={axis!r}")
    return int(axis) % ndim


def nrmse(target: Any, prediction: Any, mask: Any | None = None, *, axis: int | None = None) -> Any:
    """Normalised RMSE ``||y - y_hat||_2 / ||y||_2`` (Zhao et al. eq. 8).

    Args:
        target: Ground truth, any shape.
        prediction: Prediction, same shape.
        mask: Optional boolean array (the brain region Omega).
        axis: None (default) for the volume level; an axis index for the
            slice level, one value per slice along that axis.

    Returns:
        float (volume level), or an array of shape ``(target.shape[axis],)``
        with NaN for slices that hold no masked voxel or whose ``||y||`` is 0.

    Raises:
        ValueError: shapes differ, bad axis.
        UserError: the mask selects no voxel.

    Example:
        >>> nrmse([3.0, 4.0], [3.0, 3.0])  # 1 / 5
        0.2
    """
    maps = same_shape_maps(target=target, prediction=prediction)
    y = maps["target"]
    selector = resolve_mask(mask, y.shape)
    axis = _check_axis(axis, y.ndim)
    squared_error = np.square(y - maps["prediction"])
    if axis is None:
        norm = float(np.sum(np.square(y[selector])))
        return math.sqrt(float(np.sum(squared_error[selector])) / norm) if norm > 0 else math.nan
    error_sum, _ = _per_slice_sums(squared_error, selector, axis)
    norm_sum, _ = _per_slice_sums(np.square(y), selector, axis)
    safe = np.where(norm_sum > 0, norm_sum, 1.0)
    return np.where(norm_sum > 0, np.sqrt(error_sum / safe), np.nan)


def nstd(std: Any, mask: Any | None = None, *, axis: int | None = None) -> Any:
    """Normalised std ``||std||_2 / sqrt(N)`` (Zhao et al. eq. 9), the RMS of a std map.

    Args:
        std: Predictive (or epistemic/aleatoric) std map, >= 0.
        mask: Optional boolean array (the region Omega, N its voxel count).
        axis: None (default) for the volume level, else the slice axis.

    Returns:
        float (volume level), or an array of shape ``(std.shape[axis],)`` with
        NaN for slices that hold no masked voxel; in target units.

    Raises:
        ValueError: negative or non-finite std, bad axis.
        UserError: the mask selects no voxel.

    Example:
        >>> nstd([3.0, 4.0, 0.0, 0.0])  # sqrt(25 / 4)
        2.5
    """
    sd = as_map(std, "std")
    if sd.min() < 0:
        raise ValueError(f"std must be >= 0. Received: min={sd.min()!r}")
    selector = resolve_mask(mask, sd.shape)
    axis = _check_axis(axis, sd.ndim)
    if axis is None:
        return math.sqrt(float(np.mean(np.square(sd[selector]))))
    total, count = _per_slice_sums(np.square(sd), selector, axis)
    return np.where(count > 0, np.sqrt(total / np.maximum(count, 1)), np.nan)
