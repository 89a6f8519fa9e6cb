from __future__ import annotations

import struct

import numpy as np
import pytest

from tfuq.evaluation.montage import mid_slices, plot_montage


def test_mid_slices_are_the_three_orthogonal_planes():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    sag, cor, axi = mid_slices(volume)
    np.testing.assert_array_equal(sag, volume[2].T)
    np.testing.assert_array_equal(cor, volume[:, 2].T)
    np.testing.assert_array_equal(axi, volume[:, :, 3].T)
    assert sag.shape == (6, 5) and cor.shape == (6, 4) and axi.shape == (5, 4)
    sag, _, _ = mid_slices(volume, (0, 0, 0))
    np.testing.assert_array_equal(sag, volume[0].T)
    with pytest.raises(ValueError, match="center"):
        mid_slices(volume, (4, 0, 0))
    with pytest.raises(ValueError, match="3D"):
        mid_slices(volume[0])


def test_montage_png_size_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(10, 12, 8))
    names = ["input", "target", "mean", "|error|", "epistemic std", "aleatoric std"]
    volumes = {name: np.abs(vol) + i for i, name in enumerate(names)}
    path = plot_montage(tmp_path / "m.png", volumes, units={"target": "HU"}, spacing=(1, 1, 2), title="s1")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # 6 columns x 2.6 in, 3 rows x 2.4 in + 0.4 in title, at 100 dpi.
    assert struct.unpack(">II", data[16:24]) == (1560, 760)
    with pytest.raises(ValueError, match="one shape"):
        plot_montage(tmp_path / "x.png", {"a": vol, "b": vol[:5]})
    with pytest.raises(ValueError, match="empty"):
        plot_montage(tmp_path / "x.png", {})
    # A constant map still gets a valid colour window.
    plot_montage(tmp_path / "c.png", {"target": np.zeros((4, 4, 4))})
