"""tpu_bo: Bayesian-optimization hyperparameter search that compiles once per structure.

Importing this package does not import TensorFlow; the names below load on first use. On a
TPU machine it sets the TPU plugin's environment variables, which TensorFlow reads when it is
imported, so import tpu_bo before TensorFlow (see :mod:`tpu_bo.device.tpu_env`). It also sets
``TF_CPP_MIN_LOG_LEVEL=1`` unless it is set (TensorFlow's C++ INFO lines hidden; see
:mod:`tpu_bo.terminal`).

  import tpu_bo
  result = tpu_bo.run_study(dataset="mnist", data_dir="...", epochs=1,
                            space={"learning_rate": ("log", 1e-4, 1e-2)})
  result.best_params, result.best_target

The code is laid out by concept in subpackages whose imports only go down: docs/DESIGN.md,
"Layout"; tests/test_layering.py declares the order and checks it.
"""

from tpu_bo import terminal
from tpu_bo._lazy import exports
from tpu_bo.device import tpu_env

# Before anything imports TensorFlow: v5e and newer TPUs need the PJRT plugin variables, and
# TensorFlow's C++ INFO lines stay off the console unless the user set TF_CPP_MIN_LOG_LEVEL.
tpu_env.ensure_configured()
terminal.set_tf_log_level()

__version__ = "0.2.0"

__all__ = [
    "Config",
    "ConfigError",
    "Observer",
    "Outcome",
    "Param",
    "SearchSpace",
    "Status",
    "Study",
    "StudyResult",
    "Trial",
    "TrialRecord",
    "__version__",
    "load_best_model",
    "load_final_model",
    "load_records",
    "load_summary",
    "run_study",
]
__getattr__, __dir__ = exports(
    __name__,
    {
        "Config": "config",
        "ConfigError": "errors",
        "Observer": "report.observers",
        "Outcome": "records",
        "Param": "search.space",
        "SearchSpace": "search.space",
        "Status": "records",
        "Study": "study.study",
        "StudyResult": "records",
        "Trial": "records",
        "TrialRecord": "records",
        "load_best_model": "results",
        "load_final_model": "results",
        "load_records": "results",
        "load_summary": "results",
        "run_study": "session.run",
    },
)
