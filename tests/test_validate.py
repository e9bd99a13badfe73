"""The argument checks: exact builtin types take a fast path, every other accepted type the full one, and both
reject the same values."""

import math
import re

import numpy as np
import pytest

from enlight_data._validate import check_bool, check_int, check_real


@pytest.mark.parametrize("value, expected", [(3, 3), (np.int64(3), 3), (np.uint8(3), 3)])
def test_check_int_takes_ints_and_numpy_integers(value, expected):
    got = check_int("n", value, minimum=0)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value, error, message", [
    (True, TypeError, "n should be an int, got n=True of type bool"),
    (3.0, TypeError, "n should be an int, got n=3.0 of type float"),
    (None, TypeError, "n should be an int, got n=None"),
    (-1, ValueError, r"n should be >= 0, got n=-1"),
    (np.int64(-1), ValueError, r"n should be >= 0, got n=" + re.escape(repr(np.int64(-1)))),  # np.int64(-1) in numpy 2
])
def test_check_int_rejects(value, error, message):
    with pytest.raises(error, match=message):
        check_int("n", value, minimum=0)


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), (1, 1.0), (np.float32(0.5), 0.5), (np.int64(2), 2.0)])
def test_check_real_takes_reals(value, expected):
    got = check_real("t", value, minimum=0.0)
    assert got == expected and type(got) is float


@pytest.mark.parametrize("value, error, message", [
    (math.nan, ValueError, "t should be finite, got t=nan"),
    (math.inf, ValueError, "t should be finite, got t=inf"),
    (-math.inf, ValueError, "t should be finite, got t=-inf"),
    (np.float64("nan"), ValueError, "t should be finite"),
    (-0.5, ValueError, r"t should be >= 0, got t=-0.5"),
    (False, TypeError, "t should be a real number, got t=False of type bool"),
    ("0.5", TypeError, "t should be a real number, got t='0.5' of type str"),
])
def test_check_real_rejects(value, error, message):
    with pytest.raises(error, match=message):
        check_real("t", value, minimum=0.0)


def test_none_passes_only_where_allowed():
    assert check_int("n", None, allow_none=True) is None and check_real("t", None, allow_none=True) is None
    with pytest.raises(TypeError, match="t should be a real number, got t=None"):
        check_real("t", None)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), np.bool_(False)])
def test_check_bool_takes_bools(value):
    got = check_bool("flag", value)
    assert got == bool(value) and type(got) is bool


@pytest.mark.parametrize("value", [1, 0, None, "yes", np.int64(1)])
def test_check_bool_rejects_everything_else(value):
    with pytest.raises(TypeError, match=re.escape(f"flag should be a bool, got flag={value!r} of type")):
        check_bool("flag", value)
