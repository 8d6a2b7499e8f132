"""``--space_file``: a search space read from a JSON file (local or ``gs://``).

This module imports TensorFlow only to read a ``gs://`` path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from tpu_bo.errors import ConfigError
from tpu_bo.space import SearchSpace


def read_space_file(path: str) -> SearchSpace:
    """Reads a search space from a JSON file (local or ``gs://``).

    The file holds either a mapping from name to a parameter (``{"learning_rate": {"kind":
    "log", "low": 1e-4, "high": 1e-2}, "dense_units": ["choice", [128, 256]]}``) or a list of
    parameters each with a ``name`` (the form ``config.json`` records).

    Raises:
      ConfigError: naming ``space_file``, for an unreadable file or an invalid space.
    """
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("space_file", f"{path} is not valid JSON ({e}).") from None
    try:
        if isinstance(data, list):
            if not all(isinstance(d, Mapping) and "name" in d for d in data):
                raise ConfigError("param", "every entry of a list needs a 'name'.")
            return SearchSpace.from_list(data)
        if isinstance(data, Mapping):
            return SearchSpace.from_value(data)
    except ConfigError as e:
        raise ConfigError("space_file", f"{path}: {e.message}") from None
    raise ConfigError("space_file", f"{path} must hold a JSON object or list of parameters.")


def _read_text(path: str) -> str:
    """The file's text; TensorFlow's file system for a URL such as ``gs://``."""
    try:
        if "://" in path:
            import tensorflow as tf

            with tf.io.gfile.GFile(path, "r") as f:
                return f.read()
        with open(path) as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - OSError locally, tf.errors on gs://
        raise ConfigError("space_file", f"cannot read {path}: {e}.") from None
