"""Training windows of one subject: geometry, loaded and normalised arrays, window cutting.

:func:`load_training_subject` loads the sections a training window needs
(inputs, target, mask, sampling map) on the target's grid and normalises
each input with parameters fitted on that subject
(:func:`~tfuq.data.loading.fit_section_normalisation`), and the target
either the same way or, as training does, with fixed parameters passed in
(inference has no target to fit them on, and must undo them), so the
network sees normalised inputs and target.
:func:`sample_windows` then draws window locations with the configured
sampler (:func:`sample_starts`, :mod:`tfuq.data.windows.samplers`), reads the same location in every
section (with an optional random augmentation, :mod:`tfuq.data.augmentation`,
and MultiRes levels, :mod:`tfuq.data.windows.multires`), and returns
``(inputs, targets)`` pairs:

- inputs: ``(*spatial, C_in)`` float32 (one channel per input section, in
  ``[REGRESSION] image`` order), or for MultiRes a tuple of one such array
  per ``[NETWORK] multires_factors`` level, finest first;
- targets: ``(*spatial, 2)`` float32, channels ``[target, mask]``: ``mask``
  is 1 where the loss counts, i.e. inside the volume (not in padding), inside
  the mask section when ``[REGRESSION] mask`` is set, and at least
  ``loss_border`` voxels from the window's sides.

``spatial`` is the window, with the slice axis dropped for 2D networks
(``[NETWORK] spatial_mode``, the rule of :func:`tfuq.networks.factory.input_geometry`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfuq.config import Config, ConfigError, InputSource
from tfuq.data.augmentation import AugmentationSettings, augment_crop, augment_intensity, draw_augmentation
from tfuq.data.checks import check_image_values
from tfuq.data.loading import fit_section_normalisation, load_subject
from tfuq.data.normalisation import NormalisationParams, normalise
from tfuq.data.subjects import Subject
from tfuq.data.windows import (
    PADDING_MODES,
    as_padding,
    as_window,
    check_multires,
    multires_from_context,
    sample_locations,
)
from tfuq.errors import UserError

__all__ = [
    "SubjectArrays",
    "WindowGeometry",
    "load_training_subject",
    "sample_starts",
    "sample_windows",
    "window_geometry",
]


@dataclasses.dataclass(frozen=True)
class WindowGeometry:
    """How windows are cut: size, padding, 2D squeeze, MultiRes levels, loss border.

    Attributes:
        window: Sampled window ``(X, Y, Z)`` (``Z = 1`` for 2D slices).
        squeeze: Drop the last axis (2D networks).
        padding: Volume padding per axis.
        padding_mode: One of :data:`tfuq.data.windows.PADDING_MODES`.
        factors: MultiRes downsampling factors, ``()`` for one resolution.
        loss_border: Voxels at each window side where the mask is 0.
    """

    window: tuple[int, int, int]
    squeeze: bool = False
    padding: tuple[int, int, int] = (0, 0, 0)
    padding_mode: str = "minimum"
    factors: tuple[int, ...] = ()
    loss_border: int = 0

    def __post_init__(self) -> None:
        window = as_window(self.window)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "padding", as_padding(self.padding))
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"Expected padding_mode in {PADDING_MODES}. Received: {self.padding_mode!r}")
        if self.squeeze and window[2] != 1:
            raise ValueError(f"Expected a window (X, Y, 1) to squeeze. Received: window={window}")
        if self.factors:
            check_multires(window, self.factors)
        if any(w > 1 and w <= 2 * self.loss_border for w in window):
            raise ValueError(
                f"Expected windows wider than 2 * loss_border. Received: {window}, {self.loss_border}"
            )

    @property
    def spatial(self) -> tuple[int, ...]:
        """Spatial shape of a network input window."""
        return self.window[:2] if self.squeeze else self.window

    @property
    def region(self) -> tuple[int, int, int]:
        """Size of the crop read per window (``max(factors) * window`` for MultiRes)."""
        scale = self.factors[-1] if self.factors else 1
        return tuple(scale * w for w in self.window)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class SubjectArrays:
    """One subject, loaded, normalised and ready to sample.

    Attributes:
        id: Subject id.
        inputs: ``(X, Y, Z, C_in)`` float32 normalised inputs.
        target: ``(X, Y, Z, 1)`` float32 normalised target.
        mask: ``(X, Y, Z, 1)`` uint8, 1 where the loss counts.
        sampling_map: ``(X, Y, Z)`` weights/labels for weighted/balanced sampling, or None.
        normalisation: Section name -> fitted parameters (inputs and target).
        orders: Spline order per input channel, then the target's.
        minima: Minimum of each input channel, then the target's (the fill of
            ``"minimum"`` padding); computed when not given.
    """

    id: str
    inputs: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    sampling_map: np.ndarray | None
    normalisation: Mapping[str, NormalisationParams]
    orders: tuple[int, ...]
    minima: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.minima:  # per channel: reducing a strided view is ~20x faster than over axes
            channels = [self.inputs[..., c] for c in range(self.inputs.shape[-1])] + [self.target]
            object.__setattr__(self, "minima", tuple(float(c.min()) for c in channels))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape."""
        return tuple(int(n) for n in self.target.shape[:3])  # type: ignore[return-value]


def _fail(config: Config, key: str, message: str) -> ConfigError:
    return ConfigError(f"{config.path}: {key}: {message}")


def window_geometry(config: Config) -> WindowGeometry:
    """Training window geometry from the input sections and ``[NETWORK]``.

    Raises:
        ConfigError: no window, windows that differ between the input and
            target sections, or a window the padding/MultiRes/loss border cannot take.
    """
    names = [*config.input_sections, config.target_section]
    windows = {
        n: config.sources[n].spatial_window_size for n in names if config.sources[n].spatial_window_size
    }
    if not all(n in windows for n in config.input_sections):
        missing = next(n for n in config.input_sections if n not in windows)
        raise _fail(
            config, f"[{missing}] spatial_window_size", "expected the training window, e.g. 64, 64, 64"
        )
    if len(set(windows.values())) > 1:
        found = ", ".join(f"[{n}] {','.join(map(str, w))}" for n, w in windows.items())
        raise _fail(
            config, "spatial_window_size", f"input and target sections must share one window, got {found}"
        )
    window = windows[config.input_sections[0]]
    net = config.network
    flat = len(window) == 2 or window[-1] == 1
    squeeze = net.spatial_mode == "2d" or (net.spatial_mode == "auto" and flat and net.name != "multires")
    try:
        return WindowGeometry(
            window=as_window(window),
            squeeze=squeeze,
            padding=as_padding(net.volume_padding_size),
            padding_mode=net.volume_padding_mode,
            factors=tuple(net.multires_factors) if net.name == "multires" else (),
            loss_border=getattr(config.app, "loss_border", 0),
        )
    except ValueError as err:
        raise _fail(config, "spatial_window_size", str(err)) from err


def _sampling_section(config: Config) -> str:
    method = config.network.window_sampling
    name = getattr(config.app, "sampler", "") or getattr(config.app, "mask", "")
    if method in ("weighted", "balanced") and not name:
        raise _fail(
            config,
            "[NETWORK] window_sampling",
            f"{method} needs a [{config.application}] sampler (or mask) section",
        )
    return name if method in ("weighted", "balanced") else ""


def load_training_subject(
    config: Config,
    subject: Subject,
    sources: Mapping[str, InputSource] | None = None,
    *,
    target_normalisation: NormalisationParams | None = None,
) -> SubjectArrays:
    """Load, align and normalise one subject's input, target, mask and sampling sections.

    With ``[NETWORK] window_sampling = resize`` every array is resized to the
    window (spline order per section, nearest for the mask and map).

    Args:
        config: The loaded configuration.
        subject: The subject to load.
        sources: Resolved input sources (default ``config.sources``).
        target_normalisation: Fixed parameters for the target section (e.g.
            fitted once on all training subjects, so that inference can undo
            them without the target); default: fitted on this subject.

    Raises:
        UserError: unreadable files, NaN or infinite voxels, grids that
            differ, an input that is zero everywhere or otherwise constant,
            an empty mask, a multi-channel input, or a sampling map without a
            valid centre.
    """
    sources = config.sources if sources is None else sources
    mask_name = getattr(config.app, "mask", "")
    map_name = _sampling_section(config)
    needed = dict.fromkeys([*config.input_sections, config.target_section, mask_name, map_name])
    files = {n: subject.files[n] for n in needed if n}
    volumes = load_subject(config, Subject(subject.id, files), sources)
    for name in config.input_sections:
        check_image_values(volumes[name], name, role="input")
    if mask_name:
        check_image_values(volumes[mask_name], mask_name, role="mask")
    mask = volumes[mask_name].array > 0 if mask_name else None
    norms, channels = {}, []
    for name in (*config.input_sections, config.target_section):
        if volumes[name].num_channels != 1:
            raise UserError(
                f"{volumes[name].name}: [{name}] expected one channel, found {volumes[name].num_channels}"
            )
        if name == config.target_section and target_normalisation is not None:
            norms[name] = target_normalisation
        else:
            norms[name] = fit_section_normalisation(sources[name], volumes[name], mask)
        channels.append(normalise(volumes[name].array.astype(np.float32), norms[name]).astype(np.float32))
    arrays = {
        "inputs": np.stack(channels[:-1], axis=-1),
        "target": channels[-1][..., None],
        "mask": (np.ones(channels[-1].shape, np.uint8) if mask is None else mask.astype(np.uint8))[..., None],
        "sampling_map": _sampling_map(config, volumes[map_name]) if map_name else None,
    }
    if config.network.window_sampling == "resize":
        arrays = _resize(arrays, window_geometry(config).window, [sources[n].interp_order for n in norms])
    orders = tuple(sources[n].interp_order for n in norms)
    return SubjectArrays(subject.id, normalisation=norms, orders=orders, **arrays)


def _sampling_map(config: Config, volume: Any) -> np.ndarray:
    """The sampling section as a map; for ``weighted`` sampling its negative values count as 0.

    Resampled or skull-stripped MR often has small negative values
    (interpolation undershoot); a weight cannot be negative, and treating
    them as 0 is what such a map means.
    """
    values = volume.array.reshape(volume.shape)
    if config.network.window_sampling == "weighted":
        return np.maximum(values, 0)
    return values


def _resize(arrays: dict[str, Any], window: tuple[int, ...], orders: list[int]) -> dict[str, Any]:
    from scipy import ndimage

    def zoom(a: np.ndarray, order: int) -> np.ndarray:
        factors = [w / n for w, n in zip(window, a.shape[:3])] + [1] * (a.ndim - 3)
        return ndimage.zoom(a, factors, order=order, mode="nearest", grid_mode=True).astype(a.dtype)

    inputs = np.stack([zoom(arrays["inputs"][..., c], o) for c, o in enumerate(orders[:-1])], axis=-1)
    return {
        "inputs": inputs,
        "target": zoom(arrays["target"], orders[-1]),
        "mask": zoom(arrays["mask"], 0),
        "sampling_map": None,
    }


def sample_starts(
    shape: tuple[int, int, int],
    geometry: WindowGeometry,
    n: int,
    rng: np.random.Generator,
    *,
    method: str = "uniform",
    sampling_map: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n`` window starts in a volume of spatial ``shape``, as :func:`sample_windows` does.

    The volume is padded virtually (``geometry.padding``, widened where the
    volume is smaller than the window); ``"resize"`` volumes are sampled uniformly.

    Returns:
        ``(n, 3)`` int64 starts of the (target) window.

    Raises:
        ValueError: a sampler error (e.g. a sampling map that is 0 everywhere).
    """
    window = geometry.window
    padding = [max(p, math.ceil((w - s) / 2)) for p, w, s in zip(geometry.padding, window, shape)]
    method = "uniform" if method == "resize" else method
    return sample_locations(method, shape, window, n, rng, sampling_map=sampling_map, padding=padding)


def sample_windows(
    arrays: SubjectArrays,
    geometry: WindowGeometry,
    n: int,
    rng: np.random.Generator,
    *,
    method: str = "uniform",
    augmentation: AugmentationSettings | None = None,
) -> list[tuple[Any, np.ndarray]]:
    """Cut ``n`` ``(inputs, targets)`` windows from one subject (NumPy; see the module notes).

    The volume is padded virtually (``geometry.padding``, widened where the
    volume is smaller than the window); ``method`` is ``"uniform"``,
    ``"weighted"`` or ``"balanced"`` (``"resize"`` volumes are sampled uniformly).

    Returns:
        ``n`` pairs ``(inputs, targets)``: inputs ``(*spatial, C_in)`` or a
        tuple of them (MultiRes), targets ``(*spatial, 2)``, all float32.

    Raises:
        ValueError: a sampler error (e.g. a sampling map that is 0 everywhere).
    """
    window, region = geometry.window, geometry.region
    starts = sample_starts(arrays.shape, geometry, n, rng, method=method, sampling_map=arrays.sampling_map)
    offset = [(r - w) // 2 for r, w in zip(region, window)]
    out = []
    for start in starts:
        aug = None
        if augmentation is not None and augmentation.enabled:
            aug = draw_augmentation(augmentation, rng, window, arrays.inputs.shape[-1])
        origin = start - np.asarray(offset)
        pad, orders = geometry.padding_mode, arrays.orders[:-1]
        if len(set(orders)) == 1:
            x = augment_crop(
                arrays.inputs, origin, region, aug, order=orders[0], mode=pad, cval=arrays.minima[:-1]
            )
        else:
            channels = [
                augment_crop(
                    arrays.inputs[..., c], origin, region, aug, order=o, mode=pad, cval=arrays.minima[c]
                )
                for c, o in enumerate(orders)
            ]
            x = np.stack(channels, axis=-1)
        x = augment_intensity(x, aug)
        # the transform is about the window's centre, so the target's window is cut directly
        order = arrays.orders[-1]
        t = augment_crop(arrays.target, start, window, aug, order=order, mode=pad, cval=arrays.minima[-1])
        m = augment_crop(arrays.mask, start, window, aug, order=0, mode="constant").astype(np.float32)
        if geometry.loss_border:
            b = geometry.loss_border
            for axis, w in enumerate(window):
                if w > 1:
                    index = [slice(None)] * 4
                    index[axis] = np.r_[0:b, w - b : w]
                    m[tuple(index)] = 0
        targets = np.concatenate([t, m], axis=-1).astype(np.float32)
        inputs: Any = multires_from_context(x, window, geometry.factors) if geometry.factors else [x]
        inputs = [np.asarray(v, np.float32) for v in inputs]
        if geometry.squeeze:
            inputs, targets = [v[:, :, 0] for v in inputs], targets[:, :, 0]
        out.append((tuple(inputs) if geometry.factors else inputs[0], targets))
    return out
