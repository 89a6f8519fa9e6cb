from __future__ import annotations

import struct

import numpy as np
import pytest

from tfuq.evaluation.montage import mid_slices, plot_montage, to_ras


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
    # 6 columns x 2.6 in; rows 2 in wide, as tall as the slices' physical aspect
    # (16/12 + 16/10 + 12/10 with 2 mm along axis 2), + 1 in for the title; 100 dpi.
    height = round(2.0 * (16 / 12 + 16 / 10 + 12 / 10) + 1.0, 2)
    assert struct.unpack(">II", data[16:24]) == (1560, round(100 * height))
    with pytest.raises(ValueError, match="one shape"):
        plot_montage(tmp_path / "x.png", {"a": vol, "b": vol[:5]})
    with pytest.raises(ValueError, match="empty"):
        plot_montage(tmp_path / "x.png", {})
    # A constant map still gets a valid colour window.
    plot_montage(tmp_path / "c.png", {"target": np.zeros((4, 4, 4))})


def test_to_ras_reorients_lps_and_permuted_volumes():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    ras, spacing = to_ras(volume, lps)
    np.testing.assert_array_equal(ras, volume[::-1, ::-1, :])
    assert spacing == (1.0, 1.0, 2.0)
    # Stored axes (S, R, A) with 3 mm along S: RAS order is a transpose.
    permuted = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [3, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    ras, spacing = to_ras(volume, permuted)
    np.testing.assert_array_equal(ras, volume.transpose(1, 2, 0))
    assert spacing == (1.0, 1.0, 3.0)
    with pytest.raises(ValueError, match="4x4"):
        to_ras(volume, np.eye(3))


def test_montage_with_an_affine(tmp_path):
    volume = np.random.default_rng(1).random((6, 8, 4))
    path = plot_montage(tmp_path / "a.png", {"target": volume}, affine=np.diag([-1.0, -1.0, 3.0, 1.0]))
    height = round(2.0 * (12 / 8 + 12 / 6 + 8 / 6) + 0.6, 2)
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (260, round(100 * height))
