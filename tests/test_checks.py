"""tfuq.checks: accepted values come back as plain Python types; every refusal is one ValueError line."""

from __future__ import annotations

import numpy as np
import pytest

from tfuq.checks import check_int, check_number, check_seed


def test_check_int_accepts_ints_and_numpy_ints_within_bounds():
    assert check_int(3, "n", minimum=1) == 3
    value = check_int(np.int64(7), "n", minimum=0, maximum=7)
    assert value == 7 and type(value) is int


@pytest.mark.parametrize("bad", [True, 2.0, "3", None, 0, 9])
def test_check_int_refuses_with_the_name_and_the_bounds(bad):
    with pytest.raises(ValueError, match=r"^Expected n to be an int >= 1 and <= 8\. Received: n="):
        check_int(bad, "n", minimum=1, maximum=8)


def test_check_number_closed_and_open_intervals():
    assert check_number(0, "rate", minimum=0.0, maximum=1.0) == 0.0
    with pytest.raises(ValueError, match=r"> 0.0 and < 1.0\. Received: rate=0"):
        check_number(0, "rate", minimum=0.0, maximum=1.0, exclusive=True)
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="finite number"):
            check_number(bad, "rate")


def test_check_seed():
    assert check_seed(None) is None and check_seed(np.int32(4)) == 4
    with pytest.raises(ValueError, match=r"Expected seed to be an int or None\. Received: seed=1.5"):
        check_seed(1.5)
