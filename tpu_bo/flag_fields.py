"""Dataclass fields that are command-line flags: their metadata and its checks.

A :class:`tpu_bo.config.Config` field made by :func:`flag_field` carries its flag's help text,
choices and lower bound in its metadata. ``tpu_bo/main.py`` defines the absl flags from it, and
:func:`check_field` enforces the same choices and bound on a value set from Python.
:func:`import_function` resolves a flag that names ``package.module:function`` (``--model``,
``--dataset``, ``--preprocess``, ``--augment``).

This module imports neither TensorFlow nor absl.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Collection
from typing import Any

from tpu_bo.errors import ConfigError


def flag_field(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: Collection[str] = (),
    lower_bound: int | None = None,
    flag: str | None = None,
    repeated: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field together with its command-line flag's metadata.

    Args:
      default: The field's default, and its flag's.
      help: The flag's help text (``--helpfull``).
      choices: The allowed values: the flag is an enum and :func:`check_field` checks them.
      lower_bound: The least allowed whole number, for the flag and for :func:`check_field`.
      flag: The flag's name when it differs from the field's (``space`` is set by ``--param``).
      repeated: The flag is a repeatable string (``--param``, ``--fixed``) whose values the CLI
        parses into the field.
      default_factory: As for :func:`dataclasses.field`.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices),
        "lower_bound": lower_bound,
        "flag": flag,
        "repeated": repeated,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    """The name of the command-line flag that sets ``field`` (its own name but for ``space``)."""
    return field.metadata.get("flag") or field.name


def check_field(field: dataclasses.Field, value: Any) -> None:
    """Checks ``value`` against the choices and lower bound in ``field``'s metadata.

    Raises:
      ConfigError: naming the field, for a value outside its choices or below its bound.
    """
    choices = field.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(field.name, f"{value!r} is not one of {', '.join(choices)}.")
    lower = field.metadata.get("lower_bound")
    if lower is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < lower:
        if lower == 1:
            raise ConfigError(field.name, f"must be a positive whole number, got {value!r}.")
        raise ConfigError(field.name, f"must be a whole number >= {lower}, got {value!r}.")


def import_function(spec: str, flag: str) -> Callable[..., Any]:
    """The function named by ``package.module:function``, or a ConfigError naming ``flag``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(flag, f"{spec!r} is not package.module:function.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(flag, f"cannot import module {module_name!r} ({e}).") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(flag, f"module {module_name!r} has no function {attr!r}.")
    return function
