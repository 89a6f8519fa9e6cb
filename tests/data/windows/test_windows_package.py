"""tfuq.data.windows re-exports every public name of its modules, the same objects, without tfuq.inference."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import tfuq.data
import tfuq.data.windows as windows

#: What tfuq.data re-exported before the move, plus the grid names tfuq.inference re-exported.
DATA_REEXPORTS = {
    *("MULTIRES_FACTORS", "SAMPLERS", "crop_padded", "multires_windows", "sample_locations"),
    *("BLENDING_MODES", "PADDING_MODES", "WindowGrid", "blending_weights", "pad_volume", "window_grid"),
}


def test_package_reexports_every_public_name_of_its_modules() -> None:
    modules = [info.name for info in pkgutil.iter_modules(windows.__path__) if not info.name.startswith("_")]
    assert {"blending", "grid", "multires", "padding", "samplers"} <= set(modules)
    names = []
    for name in modules:
        module = importlib.import_module(f"tfuq.data.windows.{name}")
        for public in module.__all__:
            assert getattr(windows, public) is getattr(module, public), f"{name}.{public}"
            names.append(public)
    assert sorted(windows.__all__) == sorted(names)
    assert len(names) == len(set(names))  # each name lives in one module


def test_tfuq_data_reexports_are_the_window_objects() -> None:
    shared = set(tfuq.data.__all__) & set(windows.__all__)
    assert shared >= DATA_REEXPORTS
    for name in shared:
        assert getattr(tfuq.data, name) is getattr(windows, name), name


def test_window_geometry_does_not_import_inference() -> None:
    code = "import sys, tfuq.data.windows; print([m for m in sys.modules if m.startswith('tfuq.inference')])"
    root = str(Path(tfuq.data.__file__).resolve().parents[2])  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"
