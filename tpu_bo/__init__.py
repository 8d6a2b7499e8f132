"""tpu_bo: Bayesian-optimization hyperparameter search that compiles once per structure.

Importing this package does not import TensorFlow; the names below load on first use. On a
TPU machine it sets the TPU plugin's environment variables, which TensorFlow reads when it is
imported, so import tpu_bo before TensorFlow (see :mod:`tpu_bo.tpu_env`).

  import tpu_bo
  result = tpu_bo.run_study(dataset="mnist", data_dir="...", epochs=1,
                            space={"learning_rate": ("log", 1e-4, 1e-2)})
  result.best_params, result.best_target
"""

from __future__ import annotations

import importlib
from typing import Any

from tpu_bo import tpu_env

# Before anything imports TensorFlow: v5e and newer TPUs need the PJRT plugin variables.
tpu_env.ensure_configured()

__version__ = "0.2.0"

_EXPORTS = {
    "Config": "tpu_bo.config",
    "ConfigError": "tpu_bo.errors",
    "Param": "tpu_bo.space",
    "SearchSpace": "tpu_bo.space",
    "StudyResult": "tpu_bo.study",
    "run_study": "tpu_bo.study",
    "load_best_model": "tpu_bo.results",
    "load_final_model": "tpu_bo.results",
    "load_records": "tpu_bo.results",
    "Study": "tpu_bo.engine",
    "Trial": "tpu_bo.engine",
    "TrialRecord": "tpu_bo.engine",
    "Status": "tpu_bo.engine",
    "Observer": "tpu_bo.observers",
    "get_strategy": "tpu_bo.accelerator",
    "load_datasets": "tpu_bo.input_pipeline",
    "Trainer": "tpu_bo.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tpu_bo' has no attribute {name!r}")
