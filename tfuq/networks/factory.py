"""Build the network a configuration names ([NETWORK] name), with its input geometry.

The input shape comes from the input sections ([REGRESSION] image / [GAN]
conditioning): their common ``spatial_window_size`` and one channel per
section. The head predicts ``params_size(config.family)`` channels; epistemic
dropout comes from [UNCERTAINTY] (dropout, dropout_rate, concrete_*) seeded by
[SYSTEM] seed. ``[NETWORK] spatial_mode`` chooses 2D (windows ``H, W`` or
``H, W, 1``: the network then takes ``(B, H, W, C)``), 2.5D slabs or 3D.
MultiRes takes ``len(multires_factors)`` inputs of the window size (the
central crops of one window ``multires_factors[-1]`` times larger).

Every problem the configuration causes (no window, windows that differ,
sizes the network cannot take) is a one-line :class:`~tfuq.config.ConfigError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from tfuq.config import Config, ConfigError
from tfuq.networks.dropout import DropoutSpec
from tfuq.networks.highres3dnet import HighRes3DNet
from tfuq.networks.multires import MultiRes
from tfuq.networks.pix2pix import PatchDiscriminator, Pix2PixGenerator
from tfuq.networks.unet import UNet
from tfuq.networks.upgan import UPGAN

__all__ = [
    "BUILDERS",
    "InputGeometry",
    "build_discriminators",
    "build_model",
    "dropout_spec",
    "fail",
    "input_geometry",
]

#: Networks that accept 2.5D slabs.
_SLAB_NETWORKS = ("unet", "upgan")


@dataclasses.dataclass(frozen=True)
class InputGeometry:
    """What the network sees: one window per input, its mode and channels.

    Attributes:
        spatial: Spatial window of the network input (the singleton slab
            axis dropped for 2D).
        channels: Input channels (one per input section).
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``.
    """

    spatial: tuple[int, ...]
    channels: int
    mode: str

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(*spatial, channels)``."""
        return (*self.spatial, self.channels)


def fail(config: Config, key: str, message: str) -> ConfigError:
    """The one-line ConfigError ``<config path>: <key>: <message>``."""
    return ConfigError(f"{config.path}: {key}: {message}")


def input_geometry(config: Config) -> InputGeometry:
    """Resolve the network input from the input sections and ``[NETWORK] spatial_mode``.

    Raises:
        ConfigError: an input section without ``spatial_window_size``, input
            windows that differ, or a mode the window or network cannot take.
    """
    sections = config.input_sections
    windows = {name: tuple(config.sources[name].spatial_window_size) for name in sections}
    for name, window in windows.items():
        if not window:
            raise fail(
                config, f"[{name}] spatial_window_size", "expected the network window, e.g. 64, 64, 64"
            )
    if len(set(windows.values())) > 1:
        found = ", ".join(f"[{n}] {','.join(map(str, w))}" for n, w in windows.items())
        raise fail(config, "spatial_window_size", f"input sections must share one window, got {found}")
    window = windows[sections[0]]
    network, mode = config.network.name, config.network.spatial_mode
    flat = len(window) == 2 or window[-1] == 1
    if mode == "auto":
        mode = "2d" if flat and network != "multires" else "3d"
    key = "[NETWORK] spatial_mode"
    if mode == "2d" and not flat:
        raise fail(config, key, f"2d needs a window H, W or H, W, 1, got {','.join(map(str, window))}")
    if mode in ("2.5d", "3d") and len(window) != 3:
        raise fail(config, key, f"{mode} needs a 3D spatial_window_size, got {','.join(map(str, window))}")
    if mode == "2.5d" and network not in _SLAB_NETWORKS:
        raise fail(config, key, f"2.5d slabs are for {' and '.join(_SLAB_NETWORKS)}, not {network}")
    if network == "multires" and mode != "3d":
        raise fail(config, key, "multires is 3D only")
    spatial = window[:2] if mode == "2d" else window
    return InputGeometry(spatial=tuple(spatial), channels=len(sections), mode=mode)


def dropout_spec(config: Config) -> DropoutSpec:
    """The [UNCERTAINTY] dropout settings as a :class:`DropoutSpec` seeded by [SYSTEM] seed."""
    u = config.uncertainty
    return DropoutSpec(
        kind=u.dropout,
        rate=u.dropout_rate,
        temperature=u.concrete_temperature,
        weight_regularizer=u.weight_regularizer,
        dropout_regularizer=u.dropout_regularizer,
        init_range=tuple(u.concrete_init_range),
        seed=config.system.seed,
    )


def _common(config: Config) -> dict[str, Any]:
    return {"activation": config.network.activation_function, "normalization": config.network.feature_norm}


def _unet(config: Config, geometry: InputGeometry) -> keras.Model:
    net = config.network
    return UNet(
        geometry.image_shape,
        family=config.family,
        mode=geometry.mode,
        depth=net.depth or 3,
        base_filters=net.base_filters or 32,
        dropout=dropout_spec(config),
        **_common(config),
    )


def _highres3dnet(config: Config, geometry: InputGeometry) -> keras.Model:
    net = config.network
    return HighRes3DNet(
        geometry.image_shape,
        family=config.family,
        base_filters=net.base_filters or 16,
        blocks_per_stack=net.blocks_per_stack,
        residual_matching=net.residual_matching,
        dropout=dropout_spec(config),
        dropout_blocks=config.uncertainty.dropout_layers == "all",
        **_common(config),
    )


def _multires(config: Config, geometry: InputGeometry) -> keras.Model:
    net = config.network
    return MultiRes(
        geometry.image_shape,
        family=config.family,
        factors=net.multires_factors,
        branch_filters=net.branch_filters,
        deep_supervision=net.deep_supervision,
        base_filters=net.base_filters or 16,
        blocks_per_stack=net.blocks_per_stack,
        residual_matching=net.residual_matching,
        dropout=dropout_spec(config),
        dropout_blocks=config.uncertainty.dropout_layers == "all",
        **_common(config),
    )


def _pix2pix(config: Config, geometry: InputGeometry) -> keras.Model:
    depth = config.network.depth or 8
    return Pix2PixGenerator(
        geometry.image_shape,
        family=config.family,
        depth=depth,
        base_filters=config.network.base_filters or 64,
        normalization=config.network.feature_norm,
        dropout=dropout_spec(config),
        dropout_after=tuple(k for k in (2, 3, 4) if k < depth),
    )


def _upgan(config: Config, geometry: InputGeometry) -> keras.Model:
    net = config.network
    if config.family == "point":
        raise fail(config, "[UNCERTAINTY] family", "upgan guides its phases by the predicted scale, not none")
    return UPGAN(
        geometry.image_shape,
        family=config.family,
        num_phases=net.num_phases,
        mode=geometry.mode,
        depth=net.depth or 3,
        base_filters=net.base_filters or 32,
        dropout=dropout_spec(config),
        **_common(config),
    )


#: [NETWORK] name -> builder(config, geometry).
BUILDERS: dict[str, Callable[[Config, InputGeometry], keras.Model]] = {
    "unet": _unet,
    "highres3dnet": _highres3dnet,
    "multires": _multires,
    "pix2pix": _pix2pix,
    "upgan": _upgan,
}


def build_model(config: Config) -> keras.Model:
    """Build the (generator) network of a configuration, not compiled.

    Args:
        config: A loaded :class:`~tfuq.config.Config`.

    Returns:
        keras.Model: maps the input window(s) to ``params_size(config.family)``
        unconstrained distribution-parameter channels (see each network for
        multi-input/-output variants: MultiRes, UP-GAN).

    Raises:
        ConfigError: a window or setting the network cannot take (one line).

    Example:
        >>> model = build_model(load_config("configs/demo_mr2ct.ini"))
    """
    name = config.network.name
    if name.startswith("keras:"):
        raise fail(
            config, "[NETWORK] name", "a keras: model is read from its file by tfuq.model_store.build_network"
        )
    if name not in BUILDERS:
        raise fail(config, "[NETWORK] name", f"expected one of {', '.join(BUILDERS)}, got {name!r}")
    geometry = input_geometry(config)
    try:
        return BUILDERS[name](config, geometry)
    except ValueError as err:
        raise fail(config, f"[NETWORK] name = {name}", str(err)) from None


def build_discriminators(config: Config) -> list[keras.Model]:
    """The patch discriminators of a GAN network: one for pix2pix, ``num_phases`` for UP-GAN.

    pix2pix's is conditional (input sections + target); UP-GAN's judge the
    generated (mean) image alone, as in the paper.

    Raises:
        ConfigError: the network is not a GAN, or the window is too small.
    """
    name = config.network.name
    if name not in ("pix2pix", "upgan"):
        raise fail(config, "[NETWORK] name", f"{name} has no discriminator (pix2pix and upgan do)")
    geometry = input_geometry(config)
    target = (*geometry.spatial, 1)
    norm = config.network.feature_norm
    try:
        if name == "pix2pix":
            return [
                PatchDiscriminator(
                    target, condition_channels=geometry.channels, normalization=norm, name="discriminator"
                )
            ]
        phases = range(config.network.num_phases)
        return [PatchDiscriminator(target, normalization=norm, name=f"discriminator_{m}") for m in phases]
    except ValueError as err:
        raise fail(config, "spatial_window_size", str(err)) from None
