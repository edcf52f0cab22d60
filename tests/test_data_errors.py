"""Tests for convnet_gpu.data.errors."""

from __future__ import annotations

from convnet_gpu.data import DataError
from convnet_gpu.data.errors import one_line
from convnet_gpu.errors import UserError


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError)  # the CLI prints it as one line, exit status 2


def test_one_line_collapses_whitespace():
    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line(OSError("x\ny")) == "x y"
