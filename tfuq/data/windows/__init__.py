"""Window geometry: where windows lie in a volume, what they read past its edge, how they are blended.

Modules:

- :mod:`~tfuq.data.windows.padding`: window and padding sizes, the padding
  modes, :func:`crop_padded` (one window, padded where it leaves the volume)
  and :func:`pad_volume` (the whole padded volume).
- :mod:`~tfuq.data.windows.samplers`: training window samplers and the
  per-axis grid rule :func:`axis_starts`.
- :mod:`~tfuq.data.windows.multires`: MultiRes levels cut around a window.
- :mod:`~tfuq.data.windows.graph_crop`: the same crops and levels as
  TensorFlow ops (tf.data cuts training windows with them; TensorFlow is
  imported when they are called).
- :mod:`~tfuq.data.windows.grid`: the window grid of whole-volume inference
  (:func:`window_grid`, :class:`WindowGrid`, ``[INFERENCE] border``).
- :mod:`~tfuq.data.windows.blending`: the weights of overlapping windows.

The package re-exports every public name of its modules.
"""

from tfuq.data.windows.blending import (
    BLENDING_MODES,
    DEFAULT_SIGMA_SCALE,
    DEFAULT_WEIGHT_FLOOR,
    blending_weights,
)
from tfuq.data.windows.graph_crop import average_pool_tf, crop_padded_tf, multires_windows_tf
from tfuq.data.windows.grid import WindowGrid, check_border, check_window, window_grid
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
    "BLENDING_MODES",
    "DEFAULT_SIGMA_SCALE",
    "DEFAULT_WEIGHT_FLOOR",
    "MULTIRES_FACTORS",
    "PADDING_MODES",
    "SAMPLERS",
    "WindowGrid",
    "as_padding",
    "as_window",
    "average_pool",
    "average_pool_tf",
    "axis_starts",
    "balanced_locations",
    "blending_weights",
    "check_border",
    "check_multires",
    "check_window",
    "crop_padded",
    "crop_padded_tf",
    "grid_locations",
    "multires_from_context",
    "multires_windows",
    "multires_windows_tf",
    "pad_volume",
    "padding_widths",
    "sample_locations",
    "uniform_locations",
    "weighted_locations",
    "window_grid",
]
