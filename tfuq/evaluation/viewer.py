"""Interactive slice viewer of report.html: the subjects' volumes packed into the page.

:func:`viewer_payload` packs one subject -- input, target, mean, |error|,
epistemic and aleatoric std -- into a JSON-ready dict; :func:`render_viewer`
turns the payloads of several subjects into an HTML fragment with inline CSS,
the payloads as inline JSON and a plain-JavaScript canvas viewer (no network,
no library). The viewer shows the six maps side by side on the sagittal,
coronal and axial slices through a cursor, with

* one slider per axis (sagittal, coronal, axial slice index; the mouse wheel
  over a panel scrolls its slices, a click moves the cursor there),
* a colour bar per map with its window and units (grey for the images,
  magma for |error|, inferno for the std maps, as in the montages),
* a readout of the stored voxel index, its world (RAS mm) position, and the
  six values at the voxel under the mouse (at the cursor otherwise),
* a subject selector, a radiological-convention switch, crosshair and zoom.

Given the affine, volumes are shown in RAS voxel order (neurological
convention by default: superior and anterior up, the subject's right on the
right), like :func:`tfuq.evaluation.plot_montage`.

Limits (what keeps a page small enough to open at once):

* at most ``max_voxels`` voxels per map and subject, :data:`DEFAULT_MAX_VOXELS`
  by default (about 2.4 MB of page per subject: 6 maps x 1 byte, base64),
  shrunk by :func:`viewer_budget` when many subjects share one page (a
  total of :data:`TOTAL_MAX_VOXELS`, never below :data:`MIN_VOXELS` per
  subject). A larger volume is subsampled by nearest neighbour onto a
  coarser grid that is as isotropic in mm as the budget allows (64x48x96
  stays whole, 240x240x155 becomes about 74x74x48); every shown voxel is a
  stored voxel, and the readout names it;
* 256 levels per map: each map is stored as uint8 with its own offset and
  step, ``value = offset + step * q``, over the map's range, so a readout is
  within half a step (shown under the colour bar) of the stored value.

References:
    Zhao et al., "Bayesian conditional GAN for MRI brain image synthesis",
    Fig. 3 (input, truth, synthesis, absolute error and uncertainty maps).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfuq.evaluation.checks import as_map
from tfuq.evaluation.montage import MONTAGE_COLUMNS, to_ras

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MIN_VOXELS",
    "TOTAL_MAX_VOXELS",
    "VIEWER_PANELS",
    "decode_payload",
    "readout",
    "render_viewer",
    "source_voxel",
    "subsample_indices",
    "viewer_budget",
    "viewer_payload",
]

#: Maps of a subject in the viewer, in column order (colour maps of :data:`MONTAGE_COLUMNS`).
VIEWER_PANELS = tuple(MONTAGE_COLUMNS)
#: Voxels per map and subject embedded by default (6 maps: ~1.8 MB of bytes, ~2.4 MB as base64).
DEFAULT_MAX_VOXELS = 300_000
#: Voxels per map summed over the subjects of one page that :func:`viewer_budget` aims at (~19 MB).
TOTAL_MAX_VOXELS = 2_400_000
#: Fewest voxels per map and subject :func:`viewer_budget` gives (32^3, ~260 kB per subject).
MIN_VOXELS = 32_768
_LEVELS = 255
_SHARED_WINDOW = ("target", "mean")
_ROOT_ID = "tfuq-viewer"


def viewer_budget(
    num_subjects: int,
    *,
    per_subject: int = DEFAULT_MAX_VOXELS,
    total: int = TOTAL_MAX_VOXELS,
    minimum: int = MIN_VOXELS,
) -> int:
    """Voxels per map and subject when ``num_subjects`` share one report.

    Args:
        num_subjects: Subjects in the viewer (at least 1).
        per_subject: Most voxels of one subject.
        total: Voxels aimed at over all subjects.
        minimum: Fewest voxels of one subject, whatever the total.

    Returns:
        ``clip(total // num_subjects, minimum, per_subject)``.

    Raises:
        ValueError: ``num_subjects`` or a budget below 1.
    """
    if num_subjects < 1 or min(per_subject, total, minimum) < 1:
        raise ValueError(
            "Expected num_subjects and the voxel budgets >= 1. Received: "
            f"num_subjects={num_subjects}, per_subject={per_subject}, total={total}, minimum={minimum}"
        )
    return int(min(per_subject, max(minimum, total // num_subjects)))


def subsample_indices(
    shape: Sequence[int], spacing: Sequence[float], max_voxels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a nearest-neighbour subsample of at most ``max_voxels`` voxels.

    The grid is made as isotropic in mm as the budget allows: the finest
    spacing ``d`` such that ``prod(m_a) <= max_voxels`` with
    ``m_a = n_a`` where ``spacing_a >= d`` and ``ceil(n_a * spacing_a / d)``
    elsewhere. Along an axis, display voxel ``k`` is stored voxel
    ``floor((k + 0.5) * n_a / m_a)`` (the centres of ``m_a`` equal bins).

    Args:
        shape: Volume shape ``(n0, n1, n2)``.
        spacing: Voxel size in mm along the three axes (positive).
        max_voxels: Most voxels of the subsample (at least 1).

    Returns:
        Three increasing int arrays, of lengths ``(m0, m1, m2)``; the whole
        axes when the volume has at most ``max_voxels`` voxels.

    Raises:
        ValueError: not 3 axes, an empty axis, non-positive spacing or budget.
    """
    dims = [int(n) for n in shape]
    sizes = [float(s) for s in spacing]
    if len(dims) != 3 or len(sizes) != 3 or min(dims) < 1:
        raise ValueError(f"Expected a non-empty 3D shape and 3 spacings. Received: {shape}, {spacing}")
    if not all(math.isfinite(s) and s > 0 for s in sizes) or max_voxels < 1:
        raise ValueError(
            f"Expected positive spacing and max_voxels >= 1. Received: {spacing}, max_voxels={max_voxels}"
        )

    def grid(d: float) -> list[int]:
        return [n if s >= d else max(1, math.ceil(n * s / d - 1e-9)) for n, s in zip(dims, sizes)]

    if math.prod(dims) > max_voxels:
        low, high = min(sizes), max(n * s for n, s in zip(dims, sizes)) * 2.0
        for _ in range(100):  # the product is non-increasing in d: bisect the finest d that fits
            middle = 0.5 * (low + high)
            low, high = (low, middle) if math.prod(grid(middle)) <= max_voxels else (middle, high)
        dims_out = grid(high)
    else:
        dims_out = dims
    return tuple(  # type: ignore[return-value]
        np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64) for n, m in zip(dims, dims_out)
    )


def _window(values: Sequence[np.ndarray], grey: bool) -> list[float]:
    data = np.concatenate([v.reshape(-1) for v in values])
    low = float(np.percentile(data, 0.5)) if grey else 0.0
    high = float(np.percentile(data, 99.5))
    return [low, high] if high > low else [low, low + 1.0]


def _quantise(values: np.ndarray) -> tuple[float, float, np.ndarray]:
    low, high = float(values.min()), float(values.max())
    if high <= low:  # a constant map: exact with step 0
        return low, 0.0, np.zeros(values.shape, dtype=np.uint8)
    step = (high - low) / _LEVELS
    codes = np.clip(np.rint((values - low) / step), 0, _LEVELS).astype(np.uint8)
    return low, step, codes


def _source_axes(shape: Sequence[int], affine: np.ndarray | None) -> tuple[list[int], list[np.ndarray]]:
    """Per display axis: the stored axis it runs along and the stored index of each display index."""
    if affine is None:
        return [0, 1, 2], [np.arange(n) for n in shape]
    lengths = (2, 3, 4)  # distinct lengths tell where each stored axis goes
    moved = to_ras(np.zeros(lengths), affine)[0].shape
    axes = [lengths.index(length) for length in moved]
    index = []
    for axis in axes:
        probe = np.arange(shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
        index.append(to_ras(probe, affine)[0].reshape(-1))
    return axes, index


def _on_file_grid(
    shape: Sequence[int], axes: list[int], index: list[np.ndarray], affine: np.ndarray, file_affine: Any
) -> tuple[list[int], list[int], list[np.ndarray], np.ndarray]:
    """Re-express the stored axes and indices on the grid of ``file_affine`` (same voxels, other order)."""
    target = np.asarray(file_affine, dtype=np.float64)
    if target.shape != (4, 4):
        raise ValueError(f"Expected a 4x4 file_affine. Received: shape {target.shape}")
    change = np.linalg.solve(target, affine)  # array voxel -> file voxel
    rounded = np.rint(change)
    signed_permutation = np.all(np.abs(rounded[:3, :3]).sum(axis=0) == 1) and np.all(
        np.abs(rounded[:3, :3]).sum(axis=1) == 1
    )
    if not signed_permutation or not np.allclose(change, rounded, atol=1e-3):
        raise ValueError(
            "Expected file_affine to differ from affine by axis order and directions only (the same "
            f"voxels). Received: voxel map\n{change}"
        )
    file_shape = [0, 0, 0]
    file_axes = []
    file_index = []
    for axis, values in zip(axes, index):
        column = int(np.argmax(np.abs(rounded[:3, axis])))
        file_axes.append(column)
        file_shape[column] = int(shape[axis])
        file_index.append((rounded[column, axis] * values + rounded[column, 3]).astype(np.int64))
    return file_shape, file_axes, file_index, target


def viewer_payload(
    subject: str,
    *,
    input_image: Any,
    target: Any,
    mean: Any,
    epistemic_std: Any,
    aleatoric_std: Any,
    units: str = "",
    input_units: str = "a.u.",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    affine: Any | None = None,
    file_affine: Any | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
) -> dict[str, Any]:
    """Pack one subject's maps for :func:`render_viewer` (JSON-ready, uint8 per map).

    Args:
        subject: Subject id shown in the selector.
        input_image: Input volume (e.g. the MR), shape ``(n0, n1, n2)``.
        target: Ground truth, same shape, target units.
        mean: Predictive mean, same shape.
        epistemic_std: Epistemic std, same shape.
        aleatoric_std: Aleatoric std, same shape.
        units: Target units (e.g. ``"HU"``) of every map but the input.
        input_units: Units of the input.
        spacing: Voxel size in mm; ignored when ``affine`` is given.
        affine: Optional 4x4 voxel-to-world matrix: the maps are shown in RAS
            voxel order and the readout gives world positions.
        file_affine: Optional 4x4 affine of the same grid as stored on disk
            (e.g. :attr:`tfuq.data.Volume.original_affine` of maps loaded
            reoriented): the readout then names voxels in the file's order.
            It may differ from ``affine`` by axis order and directions only.
            Default: the arrays' own order.
        max_voxels: Most voxels per map (see :func:`subsample_indices`).

    Returns:
        dict with ``subject``; ``shape`` ``[m0, m1, m2]`` of the display grid
        (RAS voxel order given an affine) and its mean ``spacing`` in mm;
        ``source_shape`` (the stored shape: of the arrays, or of the file
        given ``file_affine``), ``source_axis`` (stored axis of each display
        axis) and ``source_index`` (per display axis, the stored index of
        each display index: display voxel ``(k0, k1, k2)`` is the stored
        voxel whose index along ``source_axis[a]`` is
        ``source_index[a][k_a]``); ``affine`` (4x4 list or None: the
        voxel-to-world map of the stored voxels);
        ``panels``: one dict per map of :data:`VIEWER_PANELS` with ``name``,
        ``units``, ``cmap``, display ``window`` ``[low, high]``, ``offset``,
        ``step`` and ``data``: base64 of the uint8 codes ``q`` of the display
        grid in C order, ``value = offset + step * q``.

    Raises:
        ValueError: maps of several shapes, not 3D, non-finite values on the
            display grid, a bad affine, spacing or budget, or a
            ``file_affine`` of other voxels (or without ``affine``).
    """
    arrays = {
        "input": np.asarray(input_image),
        "target": np.asarray(target),
        "mean": np.asarray(mean),
        "epistemic std": np.asarray(epistemic_std),
        "aleatoric std": np.asarray(aleatoric_std),
    }
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len(shapes["target"]) != 3:
        raise ValueError(f"Expected 3D maps of one shape. Received: {shapes}")
    shape = shapes["target"]
    matrix = None
    if affine is not None:
        matrix = np.asarray(affine, dtype=np.float64)
        oriented = {name: to_ras(a, matrix) for name, a in arrays.items()}
        arrays = {name: pair[0] for name, pair in oriented.items()}
        spacing = oriented["target"][1]
    picks = subsample_indices(arrays["target"].shape, spacing, max_voxels)
    grid = np.ix_(*picks)
    small = {name: as_map(a[grid], name) for name, a in arrays.items()}
    small["|error|"] = np.abs(small["target"] - small["mean"])
    axes, index = _source_axes(shape, matrix)
    source_shape = [int(n) for n in shape]
    if file_affine is not None:
        if matrix is None:
            raise ValueError("file_affine needs affine (the arrays' own voxel-to-world matrix).")
        source_shape, axes, index, matrix = _on_file_grid(shape, axes, index, matrix, file_affine)
    sizes = arrays["target"].shape
    shared = _window([small[n] for n in _SHARED_WINDOW], grey=True)
    panels = []
    for name in VIEWER_PANELS:
        cmap = MONTAGE_COLUMNS[name]
        window = shared if name in _SHARED_WINDOW else _window([small[name]], grey=cmap == "gray")
        offset, step, codes = _quantise(small[name])
        panels.append(
            {
                "name": name,
                "units": input_units if name == "input" else units,
                "cmap": cmap,
                "window": window,
                "offset": offset,
                "step": step,
                "data": base64.b64encode(np.ascontiguousarray(codes).tobytes()).decode("ascii"),
            }
        )
    return {
        "subject": str(subject),
        "shape": [int(p.size) for p in picks],
        "spacing": [float(s) * n / p.size for s, n, p in zip(spacing, sizes, picks)],
        "source_shape": source_shape,
        "source_axis": axes,
        "source_index": [index[a][p].tolist() for a, p in enumerate(picks)],
        "affine": None if matrix is None else matrix.tolist(),
        "panels": panels,
    }


def decode_payload(payload: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The values the viewer shows: map name -> float64 array of the display grid ``shape``.

    ``offset + step * q`` in float64, the same arithmetic as the page's script.
    """
    shape = tuple(payload["shape"])
    out = {}
    for panel in payload["panels"]:
        codes = np.frombuffer(base64.b64decode(panel["data"]), dtype=np.uint8).reshape(shape)
        out[panel["name"]] = panel["offset"] + panel["step"] * codes.astype(np.float64)
    return out


def source_voxel(payload: Mapping[str, Any], index: Sequence[int]) -> tuple[int, int, int]:
    """The stored voxel ``(i, j, k)`` a display voxel ``(k0, k1, k2)`` shows.

    Raises:
        IndexError: ``index`` outside the display grid.
    """
    voxel = [0, 0, 0]
    for axis, k in enumerate(index):
        if not 0 <= int(k) < payload["shape"][axis]:
            raise IndexError(f"Display index {tuple(index)} outside the grid {payload['shape']}.")
        voxel[payload["source_axis"][axis]] = int(payload["source_index"][axis][int(k)])
    return voxel[0], voxel[1], voxel[2]


def readout(payload: Mapping[str, Any], index: Sequence[int]) -> dict[str, Any]:
    """What the viewer's readout shows at a display voxel: stored voxel and the six values.

    Returns:
        dict with ``voxel`` (stored index, see :func:`source_voxel`) and map
        name -> value (``offset + step * q``).
    """
    values = decode_payload(payload)
    point = tuple(int(k) for k in index)
    return {"voxel": source_voxel(payload, point), **{name: float(v[point]) for name, v in values.items()}}


def _lut(name: str) -> str:
    from matplotlib import colormaps

    colours = colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return base64.b64encode(np.rint(colours * 255.0).astype(np.uint8).tobytes()).decode("ascii")


def _json_script(element_id: str, value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def render_viewer(payloads: Sequence[Mapping[str, Any]]) -> str:
    """HTML fragment of the slice viewer for report.html (empty without payloads).

    Args:
        payloads: One :func:`viewer_payload` per subject, in selector order.

    Returns:
        The fragment: inline ``<style>``, the controls, one canvas per map
        and plane, a colour bar per map, the readout, one
        ``<script type="application/json">`` per subject (parsed when
        selected) and the viewer ``<script>``. Element ids start with
        ``tfuq-viewer``; one viewer per page.
    """
    if not payloads:
        return ""
    names = [str(p["subject"]) for p in payloads]
    options = "".join(f'<option value="{i}">{html.escape(n)}</option>' for i, n in enumerate(names))
    hidden = "" if len(names) > 1 else ' style="display:none"'
    sliders = "".join(
        f'<label>{plane} <input type="range" class="tfuq-slider" data-axis="{axis}" min="0" max="0" '
        f'value="0"> <output class="tfuq-position" data-axis="{axis}"></output></label>'
        for axis, plane in enumerate(("sagittal", "coronal", "axial"))
    )
    header = "".join(f"<th>{html.escape(name)}</th>" for name in VIEWER_PANELS)
    rows = "".join(
        f"<tr><th>{plane}</th>"
        + "".join(
            f'<td><canvas class="tfuq-panel" data-row="{row}" data-col="{col}" width="1" height="1">'
            "</canvas></td>"
            for col in range(len(VIEWER_PANELS))
        )
        + "</tr>"
        for row, plane in enumerate(("sagittal", "coronal", "axial"))
    )
    bars = "".join(
        f'<td><canvas class="tfuq-cbar" data-col="{col}" width="160" height="12"></canvas>'
        f'<div class="tfuq-cbar-label" data-col="{col}"></div></td>'
        for col in range(len(VIEWER_PANELS))
    )
    meta = {
        "subjects": names,
        "luts": {name: _lut(name) for name in sorted(set(MONTAGE_COLUMNS.values()))},
    }
    parts = [
        f"<style>{_STYLE}</style>",
        f'<div class="tfuq-viewer" id="{_ROOT_ID}">',
        '<div class="tfuq-controls">',
        f'<label{hidden}>subject <select class="tfuq-subject">{options}</select></label>',
        sliders,
        '</div><div class="tfuq-controls">',
        '<label><input type="checkbox" class="tfuq-radiological"> radiological convention '
        "(subject's right on the left)</label>",
        '<label><input type="checkbox" class="tfuq-crosshair" checked> crosshair</label>',
        '<label>zoom <select class="tfuq-zoom"><option value="1">1x</option>'
        '<option value="1.5">1.5x</option><option value="2">2x</option><option value="3">3x</option>'
        "</select></label>",
        "</div>",
        '<div class="tfuq-readout" aria-live="polite"></div>',
        f'<table class="tfuq-grid"><tr><th></th>{header}</tr>{rows}',
        f"<tr><th>colour bar</th>{bars}</tr></table>",
        '<p class="tfuq-info"></p>',
        '<p class="tfuq-note">Hover a panel to read the values at that voxel (the cursor\'s otherwise); '
        "click to move the cursor there; the mouse wheel over a panel scrolls its slices. Each map is "
        "embedded with 256 levels (readouts within half the step given under its colour bar) on a "
        "grid of a few hundred thousand voxels at most (fewer with many subjects; the grid is given "
        "above): larger volumes are subsampled by nearest neighbour, and the readout names the stored "
        "voxel shown. "
        "The full-resolution maps are the NIfTI files of <code>tfuq infer</code>.</p>",
        "<noscript><p>The slice viewer needs JavaScript.</p></noscript>",
        "</div>",
        _json_script(f"{_ROOT_ID}-meta", meta),
        *(_json_script(f"{_ROOT_ID}-subject-{i}", p) for i, p in enumerate(payloads)),
        f"<script>{_SCRIPT}</script>",
    ]
    return "\n".join(parts)


_STYLE = (
    ".tfuq-viewer{margin:1em 0}"
    ".tfuq-viewer .tfuq-controls{display:flex;flex-wrap:wrap;gap:1.5em;align-items:center;margin:.4em 0}"
    ".tfuq-viewer .tfuq-slider{width:14em;vertical-align:middle}"
    ".tfuq-viewer output{display:inline-block;min-width:5em;font-variant-numeric:tabular-nums}"
    ".tfuq-viewer table.tfuq-grid td,.tfuq-viewer table.tfuq-grid th{border:none;padding:2px 4px;"
    "text-align:center;vertical-align:middle;background:none}"
    ".tfuq-viewer table.tfuq-grid td{background:#000}"
    ".tfuq-viewer table.tfuq-grid tr:last-child td{background:none;vertical-align:top}"
    ".tfuq-viewer canvas.tfuq-panel{display:block;margin:auto;cursor:crosshair;image-rendering:pixelated}"
    ".tfuq-viewer canvas.tfuq-cbar{display:block;margin:auto;border:1px solid #999}"
    ".tfuq-viewer .tfuq-cbar-label{font-size:85%;display:flex;justify-content:space-between;"
    "flex-wrap:wrap;max-width:162px;margin:auto}"
    ".tfuq-viewer .tfuq-readout{font-family:monospace;min-height:3.2em;margin:.4em 0}"
    ".tfuq-viewer .tfuq-readout table{margin:0}"
    ".tfuq-viewer .tfuq-readout td,.tfuq-viewer .tfuq-readout th{text-align:right;padding:1px 8px}"
    ".tfuq-viewer .tfuq-info,.tfuq-viewer .tfuq-note{color:#444;font-size:90%}"
)

_SCRIPT = r"""
(function () {
  "use strict";
  var root = document.getElementById("tfuq-viewer");
  if (!root) { return; }
  var meta = JSON.parse(document.getElementById("tfuq-viewer-meta").textContent);
  var PLANE = [[1, 2], [0, 2], [0, 1]];  // [horizontal, vertical] display axes of each row
  var ENDS = [["L", "R"], ["P", "A"], ["I", "S"]];  // RAS axes: low and high end
  var BASE = 180;  // CSS px of the longest extent at zoom 1
  var select = root.querySelector(".tfuq-subject");
  var sliders = Array.prototype.slice.call(root.querySelectorAll(".tfuq-slider"));
  var positions = Array.prototype.slice.call(root.querySelectorAll(".tfuq-position"));
  var radiological = root.querySelector(".tfuq-radiological");
  var crosshair = root.querySelector(".tfuq-crosshair");
  var zoom = root.querySelector(".tfuq-zoom");
  var readoutBox = root.querySelector(".tfuq-readout");
  var info = root.querySelector(".tfuq-info");
  var panels = [[], [], []];
  Array.prototype.forEach.call(root.querySelectorAll("canvas.tfuq-panel"), function (c) {
    panels[+c.dataset.row][+c.dataset.col] = c;
  });
  var bars = root.querySelectorAll("canvas.tfuq-cbar");
  var barLabels = root.querySelectorAll(".tfuq-cbar-label");
  var cache = {};
  var luts = {};
  var state = {p: null, cursor: [0, 0, 0]};
  var scratch = document.createElement("canvas");

  function bytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); }
    return out;
  }
  Object.keys(meta.luts).forEach(function (k) { luts[k] = bytes(meta.luts[k]); });

  function fmt(v) {
    var a = Math.abs(v);
    if (a >= 100) { return v.toFixed(0); }
    if (a >= 0.01 || a === 0) { return String(parseFloat(v.toPrecision(4))); }
    return v.toExponential(2);
  }

  function load(i) {
    if (cache[i]) { return cache[i]; }
    var p = JSON.parse(document.getElementById("tfuq-viewer-subject-" + i).textContent);
    p.panels.forEach(function (panel) {
      panel.q = bytes(panel.data);
      panel.data = null;
      var lut = luts[panel.cmap], lo = panel.window[0], hi = panel.window[1];
      panel.colours = new Uint8Array(256 * 3);
      for (var q = 0; q < 256; q++) {
        var t = (panel.offset + panel.step * q - lo) / (hi - lo);
        var k = Math.round(Math.min(1, Math.max(0, t)) * 255);
        panel.colours[3 * q] = lut[3 * k];
        panel.colours[3 * q + 1] = lut[3 * k + 1];
        panel.colours[3 * q + 2] = lut[3 * k + 2];
      }
    });
    p.strides = [p.shape[1] * p.shape[2], p.shape[2], 1];
    cache[i] = p;
    return p;
  }

  function flat(p, idx) { return idx[0] * p.strides[0] + idx[1] * p.strides[1] + idx[2]; }

  function flipped(axis) { return axis === 0 && radiological.checked; }

  function layout() {
    var p = state.p, z = parseFloat(zoom.value) || 1;
    var ext = [0, 1, 2].map(function (a) { return p.shape[a] * p.spacing[a]; });
    var scale = BASE * z / Math.max(ext[0], ext[1], ext[2]);
    for (var r = 0; r < 3; r++) {
      var w = Math.max(1, Math.round(ext[PLANE[r][0]] * scale));
      var h = Math.max(1, Math.round(ext[PLANE[r][1]] * scale));
      panels[r].forEach(function (c) { c.width = w; c.height = h; });
    }
  }

  function drawRow(r) {
    var p = state.p, c = state.cursor, hAxis = PLANE[r][0], vAxis = PLANE[r][1];
    var mh = p.shape[hAxis], mv = p.shape[vAxis], flip = flipped(hAxis);
    scratch.width = mh;
    scratch.height = mv;
    var sctx = scratch.getContext("2d");
    var image = sctx.createImageData(mh, mv), data = image.data;
    var base = c[r] * p.strides[r], sh = p.strides[hAxis], sv = p.strides[vAxis];
    p.panels.forEach(function (panel, col) {
      var q = panel.q, colours = panel.colours;
      for (var py = 0; py < mv; py++) {
        var rowStart = base + (mv - 1 - py) * sv;
        for (var px = 0; px < mh; px++) {
          var k = 3 * q[rowStart + (flip ? mh - 1 - px : px) * sh], o = 4 * (py * mh + px);
          data[o] = colours[k];
          data[o + 1] = colours[k + 1];
          data[o + 2] = colours[k + 2];
          data[o + 3] = 255;
        }
      }
      sctx.putImageData(image, 0, 0);
      var canvas = panels[r][col], ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(scratch, 0, 0, mh, mv, 0, 0, w, h);
      if (crosshair.checked) {
        var x = Math.floor(((flip ? mh - 1 - c[hAxis] : c[hAxis]) + 0.5) * w / mh) + 0.5;
        var y = Math.floor((mv - 1 - c[vAxis] + 0.5) * h / mv) + 0.5;
        ctx.strokeStyle = "rgba(0, 255, 255, 0.55)";
        ctx.lineWidth = 1;
        ctx.beginPath();
        ctx.moveTo(x, 0); ctx.lineTo(x, h);
        ctx.moveTo(0, y); ctx.lineTo(w, y);
        ctx.stroke();
      }
      if (p.affine && col === 0) {
        ctx.fillStyle = "rgba(255, 255, 0, 0.9)";
        ctx.font = "11px sans-serif";
        var ends = ENDS[hAxis];
        ctx.textBaseline = "middle";
        ctx.textAlign = "left";
        ctx.fillText(flip ? ends[1] : ends[0], 2, h / 2);
        ctx.textAlign = "right";
        ctx.fillText(flip ? ends[0] : ends[1], w - 2, h / 2);
        ctx.textAlign = "center";
        ctx.textBaseline = "top";
        ctx.fillText(ENDS[vAxis][1], w / 2, 2);
        ctx.textBaseline = "bottom";
        ctx.fillText(ENDS[vAxis][0], w / 2, h - 1);
      }
    });
  }

  function render() {
    for (var r = 0; r < 3; r++) { drawRow(r); }
    var p = state.p;
    for (var a = 0; a < 3; a++) {
      positions[a].textContent = (state.cursor[a] + 1) + " / " + p.shape[a];
    }
  }

  function cell(tag, text, key, value) {
    var e = document.createElement(tag);
    e.textContent = text;
    if (key !== undefined) { e.dataset.key = key; }
    if (value !== undefined) { e.dataset.value = String(value); }
    return e;
  }

  function showReadout(idx, where) {
    var p = state.p, voxel = [0, 0, 0];
    for (var a = 0; a < 3; a++) { voxel[p.source_axis[a]] = p.source_index[a][idx[a]]; }
    var table = document.createElement("table"), head = document.createElement("tr");
    var body = document.createElement("tr");
    head.appendChild(cell("th", where));
    head.appendChild(cell("th", "voxel (i, j, k)"));
    body.appendChild(cell("td", p.subject, "subject"));
    body.appendChild(cell("td", "(" + voxel.join(", ") + ")", "voxel", voxel.join(",")));
    if (p.affine) {
      var m = p.affine, world = [0, 1, 2].map(function (i) {
        return m[i][0] * voxel[0] + m[i][1] * voxel[1] + m[i][2] * voxel[2] + m[i][3];
      });
      head.appendChild(cell("th", "world (x, y, z) [mm]"));
      body.appendChild(cell("td", "(" + world.map(function (v) { return v.toFixed(1); }).join(", ") + ")",
        "world", world.join(",")));
    }
    var n = flat(p, idx);
    p.panels.forEach(function (panel) {
      var v = panel.offset + panel.step * panel.q[n];
      head.appendChild(cell("th", panel.name + (panel.units ? " [" + panel.units + "]" : "")));
      body.appendChild(cell("td", fmt(v), panel.name, v));
    });
    table.appendChild(head);
    table.appendChild(body);
    readoutBox.replaceChildren(table);
  }

  function drawBars() {
    var p = state.p;
    p.panels.forEach(function (panel, col) {
      var canvas = bars[col], ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
      var lut = luts[panel.cmap];
      for (var x = 0; x < w; x++) {
        var k = 3 * Math.round(x / Math.max(1, w - 1) * 255);
        ctx.fillStyle = "rgb(" + lut[k] + "," + lut[k + 1] + "," + lut[k + 2] + ")";
        ctx.fillRect(x, 0, 1, h);
      }
      var unit = panel.units ? " " + panel.units : "";
      var label = barLabels[col];
      label.replaceChildren(cell("span", fmt(panel.window[0]) + unit));
      label.appendChild(cell("span", fmt(panel.window[1]) + unit));
      label.appendChild(cell("span", "step " + fmt(panel.step) + unit));
      label.title = panel.name + ": window " + panel.window[0] + " to " + panel.window[1] + unit;
    });
  }

  function setSubject(i) {
    var p = load(i);
    state.p = p;
    state.cursor = p.shape.map(function (n) { return Math.floor(n / 2); });
    sliders.forEach(function (s, a) { s.max = p.shape[a] - 1; s.value = state.cursor[a]; });
    var mm = p.spacing.map(function (s) { return s.toFixed(2); }).join(" x ");
    info.textContent = p.subject + ": display grid " + p.shape.join(" x ") + " of the stored " +
      p.source_shape.join(" x ") + " voxels, " + mm + " mm per shown voxel" +
      (p.affine ? " (RAS order)" : " (stored order, no affine)") + ".";
    layout();
    drawBars();
    render();
    showReadout(state.cursor, "cursor");
  }

  function voxelAt(event, r) {
    var p = state.p, canvas = event.currentTarget, rect = canvas.getBoundingClientRect();
    var hAxis = PLANE[r][0], vAxis = PLANE[r][1], mh = p.shape[hAxis], mv = p.shape[vAxis];
    var px = Math.min(mh - 1, Math.max(0, Math.floor((event.clientX - rect.left) / rect.width * mh)));
    var py = Math.min(mv - 1, Math.max(0, Math.floor((event.clientY - rect.top) / rect.height * mv)));
    var idx = state.cursor.slice();
    idx[hAxis] = flipped(hAxis) ? mh - 1 - px : px;
    idx[vAxis] = mv - 1 - py;
    return idx;
  }

  function moveCursor(a, k) {
    var p = state.p;
    state.cursor[a] = Math.min(p.shape[a] - 1, Math.max(0, k));
    sliders[a].value = state.cursor[a];
  }

  sliders.forEach(function (s, a) {
    s.addEventListener("input", function () {
      moveCursor(a, parseInt(s.value, 10));
      render();
      showReadout(state.cursor, "cursor");
    });
  });
  panels.forEach(function (row, r) {
    row.forEach(function (canvas) {
      canvas.addEventListener("mousemove", function (e) { showReadout(voxelAt(e, r), "mouse"); });
      canvas.addEventListener("mouseleave", function () { showReadout(state.cursor, "cursor"); });
      canvas.addEventListener("click", function (e) {
        var idx = voxelAt(e, r);
        moveCursor(PLANE[r][0], idx[PLANE[r][0]]);
        moveCursor(PLANE[r][1], idx[PLANE[r][1]]);
        render();
        showReadout(state.cursor, "cursor");
      });
      canvas.addEventListener("wheel", function (e) {
        e.preventDefault();
        moveCursor(r, state.cursor[r] + (e.deltaY > 0 ? -1 : 1));
        render();
        showReadout(state.cursor, "cursor");
      }, {passive: false});
    });
  });
  select.addEventListener("change", function () { setSubject(parseInt(select.value, 10)); });
  [radiological, crosshair].forEach(function (box) {
    box.addEventListener("change", function () { render(); });
  });
  zoom.addEventListener("change", function () { layout(); render(); });
  setSubject(0);
})();
"""
