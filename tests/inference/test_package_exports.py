"""tfuq.inference and tfuq.calibration re-export every public name of their modules."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

#: Modules whose names stay in the module: the CLI stages and a storage-format helper.
NOT_REEXPORTED = {
    "tfuq.inference": set(),
    "tfuq.calibration": {"persistence"},
}
#: Modules the re-export must cover (issue #6); guards against a shrinking module list.
REQUIRED = {
    "tfuq.inference": {"engine", "mc", "derived", "subject_inputs", "prediction"},
    "tfuq.calibration": {"moment_matched", "stored"},
}


@pytest.mark.parametrize("package_name", sorted(NOT_REEXPORTED))
def test_every_public_module_name_is_reachable_from_the_package(package_name: str) -> None:
    package = importlib.import_module(package_name)
    modules = {info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_")}
    assert REQUIRED[package_name] <= modules - NOT_REEXPORTED[package_name]
    checked = 0
    for name in sorted(modules - NOT_REEXPORTED[package_name]):
        module = importlib.import_module(f"{package_name}.{name}")
        for public in module.__all__:
            assert public in package.__all__, f"{package_name}.{name}.{public} not in the package __all__"
            assert getattr(package, public) is getattr(module, public), f"{package_name}.{public}"
            checked += 1
    assert checked >= 30  # the modules were found and read
    assert len(package.__all__) == len(set(package.__all__))
    for public in package.__all__:
        assert hasattr(package, public), public
