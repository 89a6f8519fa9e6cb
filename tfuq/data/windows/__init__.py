"""Window geometry: where windows lie in a volume and what they read past its edge.

Modules:

- :mod:`~tfuq.data.windows.padding`: window and padding sizes, the padding
  modes, :func:`crop_padded` (one window, padded where it leaves the volume)
  and :func:`pad_volume` (the whole padded volume).
- :mod:`~tfuq.data.windows.samplers`: training window samplers and the
  per-axis grid rule :func:`axis_starts`.
- :mod:`~tfuq.data.windows.multires`: MultiRes levels cut around a window.

The package re-exports every public name of its modules.
"""

from tfuq.data.windows.multires import (
    MULTIRES_FACTORS,
    average_pool,
    check_multires,
    multires_from_context,
    multires_windows,
)
from tfuq.data.windows.padding import (
    PADDING_MODES,
    as_padding,
    as_window,
    crop_padded,
    pad_volume,
    padding_widths,
)
from tfuq.data.windows.samplers import (
    SAMPLERS,
    axis_starts,
    balanced_locations,
    grid_locations,
    sample_locations,
    uniform_locations,
    weighted_locations,
)

__all__ = [
    "MULTIRES_FACTORS",
    "PADDING_MODES",
    "SAMPLERS",
    "as_padding",
    "as_window",
    "average_pool",
    "axis_starts",
    "balanced_locations",
    "check_multires",
    "crop_padded",
    "grid_locations",
    "multires_from_context",
    "multires_windows",
    "pad_volume",
    "padding_widths",
    "sample_locations",
    "uniform_locations",
    "weighted_locations",
]
