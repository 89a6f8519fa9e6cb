from __future__ import annotations

import struct

import numpy as np
import pytest

from tfuq.errors import UserError
from tfuq.evaluation import plots


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_calibration_plot_is_a_png_of_the_expected_size(tmp_path):
    x = np.linspace(0, 1, 100)
    path = plots.plot_calibration(tmp_path / "cal.png", x, x**2, x)
    assert png_size(path) == (500, 500)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind
    with pytest.raises(UserError, match="exists"):
        plots.plot_calibration(tmp_path / "cal.png", x, x)
    plots.plot_calibration(tmp_path / "cal.png", x, x, overwrite=True)
    with pytest.raises(ValueError, match="proportions"):
        plots.plot_calibration(tmp_path / "bad.png", x, x[:-1])
    assert not (tmp_path / "bad.png").exists()


def test_sparsification_plot(tmp_path):
    f = np.linspace(0.01, 1, 100)
    path = plots.plot_sparsification(
        tmp_path / "sp.png", f, {"epistemic": 2 + f, "total": 1 + f}, f, units="HU"
    )
    assert png_size(path) == (600, 450)
    with pytest.raises(ValueError, match="oracle"):
        plots.plot_sparsification(tmp_path / "bad.png", f, {"total": f}, f[:3])


def test_error_histograms_and_bin_means(tmp_path):
    rng = np.random.default_rng(0)
    std_e, std_a = rng.gamma(2.0, 5.0, 5000), rng.gamma(3.0, 10.0, 5000)
    error = np.abs(rng.normal(size=5000)) * std_a
    path = plots.plot_error_histograms(
        tmp_path / "h.png", error, {"epistemic": std_e, "aleatoric": std_a}, units="HU"
    )
    assert png_size(path) == (1000, 450)
    one = plots.plot_error_histograms(tmp_path / "h1.png", error, {"aleatoric": std_a})
    assert png_size(one) == (500, 450)
    # The mean-error line: per-bin means against a direct computation.
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    centres, means = plots._mean_per_bin(
        np.array([0.5, 0.6, 2.5, 9.0]), np.array([1.0, 3.0, 5.0, 7.0]), edges
    )
    np.testing.assert_allclose(centres, [0.5, 2.5])
    np.testing.assert_allclose(means, [2.0, 6.0])  # 9.0 is clipped into the last bin
    with pytest.raises(ValueError, match="empty"):
        plots.plot_error_histograms(tmp_path / "e.png", error, {})
    with pytest.raises(ValueError, match="std values"):
        plots.plot_error_histograms(tmp_path / "e.png", error, {"aleatoric": std_a[:10]})
