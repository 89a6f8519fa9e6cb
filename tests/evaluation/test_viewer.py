"""The report's slice viewer: packing against NumPy, and the page driven in a real headless Chromium."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tfuq.evaluation.report import write_report
from tfuq.evaluation.viewer import (
    DEFAULT_MAX_VOXELS,
    MIN_VOXELS,
    VIEWER_PANELS,
    decode_payload,
    readout,
    render_viewer,
    source_voxel,
    subsample_indices,
    viewer_budget,
    viewer_payload,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Stored axes L, P, S (as many DICOM-derived files): RAS display flips the first two.
LPS = np.array([[-1.5, 0, 0, 40.0], [0, -1.5, 0, 30.0], [0, 0, 2.0, -20.0], [0, 0, 0, 1]])


def _maps(shape, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(0.0, 300.0, size=shape)
    mean = target + rng.normal(0.0, 40.0, size=shape)
    return {
        "input_image": rng.uniform(0.0, 1.0, size=shape),
        "target": target,
        "mean": mean,
        "epistemic_std": rng.uniform(1.0, 30.0, size=shape),
        "aleatoric_std": rng.uniform(5.0, 60.0, size=shape),
    }


def _stored(maps):
    """The six maps of the viewer, in stored voxel order, from the arrays given to it."""
    out = {
        "input": maps["input_image"],
        "target": maps["target"],
        "mean": maps["mean"],
        "epistemic std": maps["epistemic_std"],
        "aleatoric std": maps["aleatoric_std"],
    }
    out["|error|"] = np.abs(out["target"] - out["mean"])
    return out


def _steps(payload):
    return {p["name"]: p["step"] for p in payload["panels"]}


def test_viewer_budget_and_subsample_indices():
    assert viewer_budget(1) == DEFAULT_MAX_VOXELS
    assert viewer_budget(20) == 120_000 and viewer_budget(10_000) == MIN_VOXELS
    with pytest.raises(ValueError, match="num_subjects"):
        viewer_budget(0)
    # Small enough: every voxel.
    picks = subsample_indices((4, 5, 6), (1, 1, 1), 120)
    assert [p.tolist() for p in picks] == [list(range(4)), list(range(5)), list(range(6))]
    # 240 x 240 x 155 at 1 mm to 300k voxels: about (300k / 8.9M)^(1/3) of each axis, centred bins.
    picks = subsample_indices((240, 240, 155), (1, 1, 1), 300_000)
    sizes = [p.size for p in picks]
    assert math.prod(sizes) <= 300_000 and math.prod(s + 1 for s in sizes) > 300_000
    assert sizes[0] == sizes[1] and abs(sizes[0] / 240 - sizes[2] / 155) < 0.02
    for p, n in zip(picks, (240, 240, 155)):
        assert p[0] >= 0 and p[-1] < n and np.all(np.diff(p) > 0)
        assert p.tolist() == np.floor((np.arange(p.size) + 0.5) * n / p.size).astype(int).tolist()
    # Thick slices (0.5 x 0.5 x 3 mm) are kept whole while the fine axes are thinned first.
    picks = subsample_indices((512, 512, 40), (0.5, 0.5, 3.0), 300_000)
    assert picks[2].size == 40 and picks[0].size == picks[1].size < 512
    with pytest.raises(ValueError, match="positive spacing"):
        subsample_indices((4, 4, 4), (1, 0, 1), 10)
    with pytest.raises(ValueError, match="3D shape"):
        subsample_indices((4, 4), (1, 1), 10)


def test_quantisation_round_trip_is_within_half_a_step():
    maps = _maps((20, 18, 16))
    payload = viewer_payload("s", **maps, units="HU")
    assert payload["shape"] == [20, 18, 16] and payload["affine"] is None
    assert [p["name"] for p in payload["panels"]] == list(VIEWER_PANELS)
    decoded, stored, steps = decode_payload(payload), _stored(maps), _steps(payload)
    for name, values in stored.items():
        assert decoded[name].shape == values.shape
        span = values.max() - values.min()
        assert steps[name] == pytest.approx(span / 255)
        # the extremes are exact, every value within half a step (one step is the brief's bound)
        assert np.max(np.abs(decoded[name] - values)) <= steps[name] / 2 * (1 + 1e-9)
        assert decoded[name].min() == pytest.approx(values.min()) and decoded[name].max() == pytest.approx(
            values.max()
        )
    units = {p["name"]: p["units"] for p in payload["panels"]}
    assert units["input"] == "a.u." and units["target"] == units["aleatoric std"] == "HU"
    windows = {p["name"]: p["window"] for p in payload["panels"]}
    assert windows["target"] == windows["mean"]  # one window, so the two compare
    assert windows["|error|"][0] == windows["epistemic std"][0] == 0.0
    # a constant map decodes exactly
    flat = viewer_payload("c", **{**maps, "epistemic_std": np.full((20, 18, 16), 7.5)})
    assert np.all(decode_payload(flat)["epistemic std"] == 7.5) and _steps(flat)["epistemic std"] == 0.0
    with pytest.raises(ValueError, match="one shape"):
        viewer_payload("x", **{**maps, "mean": maps["mean"][:5]})
    bad = maps["target"].copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        viewer_payload("x", **{**maps, "target": bad})


def test_readout_of_a_hand_made_volume_equals_numpy_at_that_voxel():
    # Values on an exact 256-level grid of each map, so the readout is the stored value itself.
    shape = (5, 6, 7)
    rng = np.random.default_rng(3)
    codes = {name: rng.integers(0, 256, size=shape) for name in ("in", "t", "m", "e", "a")}
    for c in codes.values():
        c.flat[:2] = (0, 255)  # the full range, so the step is the grid's
    maps = {
        "input_image": 0.5 + codes["in"] / 256.0,
        "target": -1000.0 + 4.0 * codes["t"],
        "mean": -990.0 + 4.0 * codes["m"],
        "epistemic_std": 0.25 * codes["e"],
        "aleatoric_std": 2.0 + 0.5 * codes["a"],
    }
    stored = _stored(maps)
    payload = viewer_payload("hand", **maps, units="HU", affine=LPS)
    assert payload["shape"] == [5, 6, 7] and payload["spacing"] == [1.5, 1.5, 2.0]
    assert payload["source_axis"] == [0, 1, 2]
    steps = _steps(payload)
    for k0, k1, k2 in [(0, 0, 0), (4, 5, 6), (1, 2, 3), (3, 0, 5)]:
        values = readout(payload, (k0, k1, k2))
        # RAS display of L-P-S storage: x and y run backwards through the stored axes (hand-made oracle).
        voxel = (4 - k0, 5 - k1, k2)
        assert values["voxel"] == voxel
        for name in ("input", "target", "mean", "epistemic std", "aleatoric std"):
            assert values[name] == pytest.approx(stored[name][voxel], rel=1e-12, abs=1e-12), name
        assert abs(values["|error|"] - stored["|error|"][voxel]) <= steps["|error|"] / 2 * (1 + 1e-9)
    # Stored axes S, R, A (3 mm along S): the display's x runs along stored axis 1, and so on.
    permuted = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [3, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    payload = viewer_payload("perm", **maps, affine=permuted)
    assert payload["shape"] == [6, 7, 5] and payload["source_axis"] == [1, 2, 0]
    assert payload["spacing"] == [1.0, 1.0, 3.0]
    assert source_voxel(payload, (2, 6, 4)) == (4, 2, 6)
    assert readout(payload, (2, 6, 4))["target"] == pytest.approx(stored["target"][4, 2, 6])
    with pytest.raises(IndexError, match="outside"):
        source_voxel(payload, (6, 0, 0))


def test_file_affine_names_the_voxels_of_the_file():
    # Maps loaded reoriented to RAS (as tfuq.data.load_volume does) from an L-P-S file.
    maps = _maps((8, 7, 6), seed=2)
    ras = {k: v[::-1, ::-1, :] for k, v in maps.items()}
    flip = np.array([[-1.0, 0, 0, 7], [0, -1, 0, 6], [0, 0, 1, 0], [0, 0, 0, 1]])
    from_ras = viewer_payload("s", **ras, affine=LPS @ flip, file_affine=LPS)
    from_file = viewer_payload("s", **maps, affine=LPS)
    assert from_ras == from_file
    assert from_ras["source_shape"] == [8, 7, 6] and from_ras["affine"] == LPS.tolist()
    assert readout(from_ras, (0, 0, 0))["voxel"] == (7, 6, 0)
    with pytest.raises(ValueError, match="axis order and directions"):
        viewer_payload("s", **ras, affine=LPS @ flip, file_affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="needs affine"):
        viewer_payload("s", **ras, file_affine=LPS)


def test_subsampled_readout_names_the_stored_voxel_it_shows():
    maps = _maps((40, 36, 30), seed=1)
    stored = _stored(maps)
    payload = viewer_payload("big", **maps, affine=LPS, max_voxels=4000)
    shape = payload["shape"]
    assert math.prod(shape) <= 4000 and payload["source_shape"] == [40, 36, 30]
    steps = _steps(payload)
    rng = np.random.default_rng(0)
    for _ in range(50):
        index = tuple(int(rng.integers(0, n)) for n in shape)
        values = readout(payload, index)
        for name, volume in stored.items():
            assert abs(values[name] - volume[values["voxel"]]) <= steps[name] / 2 * (1 + 1e-9)


def test_payload_size_for_typical_volumes():
    maps = _maps((64, 48, 96))
    small = len(json.dumps(viewer_payload("s", **maps)))
    assert small < 2.5e6  # whole 64x48x96: 6 maps x 294,912 bytes as base64
    shape = (240, 240, 155)
    big = {k: np.broadcast_to(np.float32(i + 1), shape) for i, k in enumerate(maps)}
    big["target"] = np.broadcast_to(np.arange(155, dtype=np.float32), shape)
    payload = viewer_payload("b", **big)
    assert math.prod(payload["shape"]) <= DEFAULT_MAX_VOXELS
    assert len(json.dumps(payload)) < 2.5e6


def test_render_viewer_is_self_contained():
    maps = _maps((6, 5, 4))
    payloads = [viewer_payload("a</script><b>", **maps), viewer_payload("b", **maps)]
    fragment = render_viewer(payloads)
    assert render_viewer([]) == ""
    assert "://" not in fragment  # no network address at all
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", fragment)
    assert fragment.count("</script>") == 4  # meta, two subjects, the viewer
    assert "a&lt;/script&gt;&lt;b&gt;" in fragment  # option text escaped
    blob = re.search(r'id="tfuq-viewer-subject-0">(.*?)</script>', fragment, re.S).group(1)
    assert json.loads(blob)["subject"] == "a</script><b>"
    options = re.search(r'<select class="tfuq-subject">(.*?)</select>', fragment).group(1)
    assert options.count("<option") == 2
    assert fragment.count('class="tfuq-slider"') == 3 and fragment.count('class="tfuq-cbar"') == 6


# --------------------------------------------------------------------------- the page in Chromium

_DRIVER = r"""
<script>
(function () {
  var plan = JSON.parse(document.getElementById("tfuq-test-plan").textContent);
  var root = document.getElementById("tfuq-viewer");
  function checksum(row) {
    var h = 2166136261;
    root.querySelectorAll("canvas.tfuq-panel").forEach(function (c) {
      if (+c.dataset.row !== row) { return; }
      var d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (var i = 0; i < d.length; i++) { h = Math.imul(h ^ d[i], 16777619) >>> 0; }
    });
    return h;
  }
  function record(step) {
    var values = {};
    root.querySelectorAll(".tfuq-readout td[data-key]").forEach(function (td) {
      var value = td.dataset.value === undefined ? null : td.dataset.value;
      values[td.dataset.key] = {text: td.textContent, value: value};
    });
    var sliders = Array.prototype.map.call(root.querySelectorAll(".tfuq-slider"), function (s) {
      return [+s.value, +s.max];
    });
    var bars = Array.prototype.map.call(root.querySelectorAll(".tfuq-cbar-label"), function (e) {
      return e.textContent;
    });
    var pixel = null;
    if (step.do === "pixel") {
      var canvas = root.querySelector(
        'canvas.tfuq-panel[data-row="' + step.row + '"][data-col="' + step.col + '"]');
      var x = Math.floor(step.fx * canvas.width), y = Math.floor(step.fy * canvas.height);
      pixel = Array.prototype.slice.call(canvas.getContext("2d").getImageData(x, y, 1, 1).data, 0, 3);
    }
    return {step: step, pictures: [0, 1, 2].map(checksum), readout: values, sliders: sliders, pixel: pixel,
            where: root.querySelector(".tfuq-readout th").textContent, bars: bars};
  }
  var out = [];
  try {
    plan.forEach(function (step) {
      if (step.do === "slide") {
        var s = root.querySelector('.tfuq-slider[data-axis="' + step.axis + '"]');
        s.value = step.value;
        s.dispatchEvent(new Event("input", {bubbles: true}));
      } else if (step.do === "hover" || step.do === "leave") {
        var c = root.querySelector(
          'canvas.tfuq-panel[data-row="' + step.row + '"][data-col="' + step.col + '"]');
        var rect = c.getBoundingClientRect();
        c.dispatchEvent(new MouseEvent(step.do === "hover" ? "mousemove" : "mouseleave", {
          bubbles: true,
          clientX: rect.left + (step.fx || 0) * rect.width,
          clientY: rect.top + (step.fy || 0) * rect.height}));
      } else if (step.do === "check") {
        var box = root.querySelector(step.selector);
        box.checked = !box.checked;
        box.dispatchEvent(new Event("change", {bubbles: true}));
      } else if (step.do === "select") {
        var select = root.querySelector(".tfuq-subject");
        select.value = String(step.value);
        select.dispatchEvent(new Event("change", {bubbles: true}));
      }
      out.push(record(step));
    });
  } catch (error) {
    out.push({error: String(error) + " " + error.stack});
  }
  var pre = document.createElement("pre");
  pre.id = "tfuq-test-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def _drive(page: Path, plan: list[dict], tmp_path: Path) -> list[dict]:
    """Open a copy of ``page`` with the driver appended in headless Chromium; the driver's records."""
    text = page.read_text(encoding="utf-8")
    script = f'<script type="application/json" id="tfuq-test-plan">{json.dumps(plan)}</script>{_DRIVER}'
    driven = tmp_path / "driven.html"
    driven.write_text(text.replace("</body>", script + "</body>"), encoding="utf-8")
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1600,1200",
            "--virtual-time-budget=5000",
            "--dump-dom",
            driven.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    found = re.search(r'<pre id="tfuq-test-result">(.*?)</pre>', result.stdout, re.S)
    assert found, f"no result in the dumped page (exit {result.returncode}): {result.stderr[-2000:]}"
    records = json.loads(html.unescape(found.group(1)))
    assert "error" not in records[-1], records[-1]
    return records


def _values(record: dict) -> dict[str, float]:
    return {k: float(v["value"]) for k, v in record["readout"].items() if k in VIEWER_PANELS}


def _voxel(record: dict) -> tuple[int, ...]:
    return tuple(int(v) for v in record["readout"]["voxel"]["value"].split(","))


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install chromium) for the browser test"
)
def test_report_viewer_in_headless_chromium(tmp_path: Path) -> None:
    first = _maps((20, 16, 12), seed=5)
    second = _maps((30, 24, 20), seed=6)
    payloads = [
        viewer_payload("p01", **first, units="HU", affine=LPS),
        viewer_payload("p02", **second, units="HU", affine=LPS, max_voxels=3000),  # subsampled
    ]
    rows = [{"subject": "p01", "mae": 1.0}, {"subject": "p02", "mae": 2.0}]
    report = write_report(tmp_path / "eval", rows, units="HU", viewers=payloads)["html"]
    page = report.read_text()
    assert "<h2>Slice viewer</h2>" in page and "://" not in page
    plan = [
        {"do": "start"},
        {"do": "slide", "axis": 2, "value": 2},  # axial
        {"do": "slide", "axis": 0, "value": 15},  # sagittal
        {"do": "slide", "axis": 1, "value": 3},  # coronal
        # axial input panel at display voxel x=4, y=11 (neurological: x to the right, y up)
        {"do": "hover", "row": 2, "col": 0, "fx": 4.5 / 20, "fy": (16 - 1 - 11 + 0.5) / 16},
        {"do": "leave", "row": 2, "col": 0},
        # the colour drawn inside display voxel (4, 11) of the axial target panel, off the crosshair
        {"do": "pixel", "row": 2, "col": 1, "fx": 4.25 / 20, "fy": (16 - 1 - 11 + 0.25) / 16},
        {"do": "check", "selector": ".tfuq-radiological"},
        {"do": "pixel", "row": 2, "col": 1, "fx": 4.25 / 20, "fy": (16 - 1 - 11 + 0.25) / 16},
        {"do": "hover", "row": 2, "col": 0, "fx": 4.5 / 20, "fy": (16 - 1 - 11 + 0.5) / 16},
        {"do": "select", "value": 1},
    ]
    records = _drive(report, plan, tmp_path)
    start, axial, sagittal, coronal, hover, leave, pixel, radiological, flipped, mirrored, other = records
    stored, steps = _stored(first), _steps(payloads[0])

    def matches(record, voxel, volumes=stored, step=steps):
        assert _voxel(record) == voxel
        for name, value in _values(record).items():
            assert abs(value - volumes[name][voxel]) <= step[name] / 2 * (1 + 1e-9), (name, voxel)

    # the start: cursor at the centre (10, 8, 6) of the RAS grid = stored (19 - 10, 15 - 8, 6)
    assert start["sliders"] == [[10, 19], [8, 15], [6, 11]] and start["where"] == "cursor"
    matches(start, (9, 7, 6))
    assert start["readout"]["subject"]["text"] == "p01"
    assert all(start["pictures"])
    assert "HU" in start["bars"][1] and "a.u." in start["bars"][0] and "step" in start["bars"][3]
    # every slider changes the picture of its plane, and the readout follows the cursor
    assert axial["pictures"][2] != start["pictures"][2]
    matches(axial, (9, 7, 2))
    assert sagittal["pictures"][0] != axial["pictures"][0]
    matches(sagittal, (4, 7, 2))
    assert coronal["pictures"][1] != sagittal["pictures"][1]
    matches(coronal, (4, 12, 2))
    # the mouse over the axial input panel: display (4, 11, 2) = stored (15, 4, 2), the subject's left
    assert hover["where"] == "mouse"
    matches(hover, (15, 4, 2))
    shown = hover["readout"]["target"]
    assert abs(float(shown["text"]) - float(shown["value"])) <= max(0.5, 1e-3 * abs(float(shown["value"])))
    assert hover["pictures"] == coronal["pictures"]
    matches(leave, (4, 12, 2))
    # the picture there is the grey of the target at display voxel (4, 11, 2) in its window
    target = decode_payload(payloads[0])["target"]
    low, high = next(p["window"] for p in payloads[0]["panels"] if p["name"] == "target")

    def grey(index):
        return round(255 * min(1.0, max(0.0, (target[index] - low) / (high - low))))

    assert pixel["pixel"][0] == pixel["pixel"][1] == pixel["pixel"][2]
    assert abs(pixel["pixel"][0] - grey((4, 11, 2))) <= 1
    # radiological convention mirrors left and right: same place on screen, x = 19 - 4
    assert radiological["pictures"][2] != leave["pictures"][2]
    assert abs(flipped["pixel"][0] - grey((15, 11, 2))) <= 1
    assert abs(grey((15, 11, 2)) - grey((4, 11, 2))) > 2  # the two voxels differ, so the check can fail
    matches(mirrored, (19 - 15, 4, 2))
    # the second subject: its own grid (subsampled to <= 3000 voxels), picture and values
    grid = payloads[1]["shape"]
    assert other["sliders"] == [[n // 2, n - 1] for n in grid]
    assert other["readout"]["subject"]["text"] == "p02" and other["pictures"] != mirrored["pictures"]
    centre = tuple(n // 2 for n in grid)
    matches(other, source_voxel(payloads[1], centre), _stored(second), _steps(payloads[1]))
