"""tfuq.data.phantom re-exports the names of its generate module, the same objects."""

from __future__ import annotations

import tfuq.data
import tfuq.data.phantom as phantom
from tfuq.data.phantom import generate


def test_package_reexports_every_name_of_generate() -> None:
    assert sorted(phantom.__all__) == sorted(generate.__all__)
    assert len(phantom.__all__) == len(set(phantom.__all__))
    for name in generate.__all__:
        assert getattr(phantom, name) is getattr(generate, name), name


def test_tfuq_data_reexports_the_phantom_entry_points() -> None:
    for name in ("PhantomSpec", "insert_zero_cube", "make_subject", "write_phantom"):
        assert getattr(tfuq.data, name) is getattr(phantom, name), name
