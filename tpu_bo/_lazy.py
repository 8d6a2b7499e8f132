"""Public names of a package that load on first use (PEP 562).

A package's ``__init__`` lists its public names and the module that defines each; importing
the package then imports none of them, so ``import tpu_bo`` (or ``tpu_bo.device.tpu_env``,
which must run before TensorFlow is imported) costs no TensorFlow, Optuna or ``bayes_opt``.
A name whose module imports TensorFlow first does so without TensorFlow's load-time INFO lines
(:func:`tpu_bo.terminal.quiet_tensorflow_load`): this is where a notebook's first use of
tpu_bo, e.g. ``tpu_bo.run_study``, loads it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tpu_bo.terminal import quiet_tensorflow_load


def exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose public ``names`` map to the
    module defining each, relative to the package (``"space"`` for ``package.space``)."""

    def __getattr__(name: str) -> Any:
        if name in names:
            with quiet_tensorflow_load():
                module = importlib.import_module(f"{package}.{names[name]}")
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
