"""tfuq.config.fields: parsing and formatting of typed INI values."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfuq.config import APPLICATIONS, SECTIONS, InputSource, field_specs, format_value, parse_value, setting
from tfuq.config.fields import ConfigValueError


@dataclasses.dataclass(frozen=True)
class Toy:
    """A toy section."""

    count: int = setting(1, "a count", min=1, max=10)
    ratio: float = setting(0.5, "a ratio", min=0.0, max=1.0, max_exclusive=True)
    flag: bool = setting(False, "a flag")
    mode: str = setting("a", "a mode", choices=("a", "b"))
    sizes: tuple[int, ...] = setting((), "sizes", min=1, length=(2, 3))
    scales: tuple[float, ...] = setting((1.0, 2.0), "scales")


SPECS = field_specs(Toy)


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("count", " 3 ", 3),
        ("count", "10", 10),
        ("ratio", "0", 0.0),
        ("ratio", "1e-3", 1e-3),
        ("flag", "TRUE", True),
        ("flag", "off", False),
        ("flag", "1", True),
        ("mode", "b", "b"),
        ("sizes", "", ()),
        ("sizes", "4, 5", (4, 5)),
        ("sizes", "4,5,6,", (4, 5, 6)),
        ("scales", "-1.5", (-1.5,)),
    ],
)
def test_parse_valid(key: str, text: str, value: object) -> None:
    assert parse_value(SPECS[key], text) == value


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("count", "0", "an integer >= 1 and <= 10"),
        ("count", "11", "an integer >= 1 and <= 10"),
        ("count", "2.0", "an integer"),
        ("ratio", "1", "a number >= 0 and < 1"),
        ("ratio", "inf", "a number"),
        ("flag", "2", "true or false"),
        ("mode", "c", "one of a, b"),
        ("sizes", "4", "2/3 comma-separated values"),
        ("sizes", "4, 0", ">= 1"),
        ("sizes", "1, 2, 3, 4", "2/3 comma-separated values"),
    ],
)
def test_parse_invalid_says_what_is_expected(key: str, text: str, expected: str) -> None:
    with pytest.raises(ConfigValueError, match=expected):
        parse_value(SPECS[key], text)


@given(
    count=st.integers(1, 10),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
    flag=st.booleans(),
    sizes=st.lists(st.integers(1, 10**6), min_size=2, max_size=3),
    scales=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5),
)
def test_format_is_the_inverse_of_parse(
    count: int, ratio: float, flag: bool, sizes: list[int], scales: list[float]
) -> None:
    values = {"count": count, "ratio": ratio, "flag": flag, "sizes": tuple(sizes), "scales": tuple(scales)}
    for key, value in values.items():
        assert parse_value(SPECS[key], format_value(value)) == value


@pytest.mark.parametrize("cls", [*SECTIONS.values(), *APPLICATIONS.values(), InputSource])
def test_every_default_is_valid_under_its_own_spec(cls: type) -> None:
    specs = field_specs(cls)
    assert specs, cls
    for key, spec in specs.items():
        assert spec.help.strip() and "\n" not in spec.help, key
        assert parse_value(spec, format_value(spec.default)) == spec.default, (cls.__name__, key)
