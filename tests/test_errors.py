"""ConfigError names its setting for both the Python API and the CLI; first_line shortens."""

from __future__ import annotations

import pytest

from tpu_bo.errors import ConfigError, first_line


def test_config_error_names_the_setting_for_python_and_for_the_cli():
    e = ConfigError("batch_size", "must be a positive whole number, got 0.")
    assert isinstance(e, ValueError)
    assert (e.flag, e.message) == ("batch_size", "must be a positive whole number, got 0.")
    assert str(e) == "batch_size: must be a positive whole number, got 0."
    assert e.for_cli() == "--batch_size: must be a positive whole number, got 0."
    with pytest.raises(ValueError, match="^batch_size: "):
        raise e


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError("no such file.\nTraceback lines follow"), "no such file"),
        (ValueError("  padded message  "), "padded message"),
        (KeyError(), "KeyError"),  # an empty message gives the type's name
        (RuntimeError("   \n"), "RuntimeError"),
        (RuntimeError("ends in dots..."), "ends in dots"),
    ],
)
def test_first_line(error, expected):
    assert first_line(error) == expected


def test_first_line_cuts_a_long_message_to_the_limit():
    assert first_line(ValueError("x" * 20), limit=20) == "x" * 20
    cut = first_line(ValueError("x" * 21), limit=20)
    assert cut == "x" * 17 + "..." and len(cut) == 20
    assert len(first_line(ValueError("y" * 1000))) == 160
