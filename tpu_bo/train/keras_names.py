"""The private Keras names the trainer relies on, checked once before anything is built.

Keras has no public API for four things tpu_bo does (verified on Keras 3.15.1, the version
requirements-tpu.txt pins):

* ``keras.Variable._initialize_with_initializer`` (keras/src/backend/tensorflow/core.py
  ``Variable``; called by ``keras/src/backend/common/variables.py`` ``Variable.__init__``):
  :func:`tpu_bo.train.reset.recording` wraps it to learn each variable's initializer, which
  Keras keeps nowhere. Renamed, nothing would be recorded and every trial would silently
  start from the weights its program was built with.
* ``model._compile_loss`` (keras/src/trainers/trainer.py ``Trainer.compile``: a
  ``CompileLoss``) and ``model._compile_metrics`` with ``CompileMetrics._flatten_y``,
  ``_flat_metrics`` and ``_flat_weighted_metrics`` (keras/src/trainers/compile_utils.py):
  the compiled head (:mod:`tpu_bo.train.heads`) builds and updates a compiled model's loss
  and metrics through them. Gone, a compiled model would look uncompiled.

:func:`check` probes each one on a tiny compiled model and raises :class:`KerasChanged`, one
sentence naming the Keras version and the missing name, rather than let a study run wrong.
"""

from __future__ import annotations

import keras
import numpy as np

VERIFIED = "3.15.1"

_CHECKED: list[bool] = []


class KerasChanged(RuntimeError):
    """This Keras lacks a private name tpu_bo relies on (one sentence)."""


def missing() -> list[str]:
    """The private names this Keras lacks, as ``owner.name``."""
    if not callable(getattr(keras.Variable, "_initialize_with_initializer", None)):
        return ["keras.Variable._initialize_with_initializer"]  # no probe model can be built
    names = []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse", metrics=["mae"], weighted_metrics=["mse"])
    if getattr(model, "_compile_loss", None) is None:
        names.append("Model._compile_loss")
    metrics = getattr(model, "_compile_metrics", None)
    if metrics is None:
        return [*names, "Model._compile_metrics"]
    if not callable(getattr(metrics, "_flatten_y", None)):
        return [*names, "CompileMetrics._flatten_y"]
    y = np.zeros((1, 1), np.float32)
    metrics.build(metrics._flatten_y(y), metrics._flatten_y(y))
    names += [
        f"CompileMetrics.{name}"
        for name in ("_flat_metrics", "_flat_weighted_metrics")
        if not isinstance(getattr(metrics, name, None), list)
    ]
    return names


def check() -> None:
    """Raises :class:`KerasChanged` if this Keras lacks a name (probed once per process)."""
    if _CHECKED:
        return
    gone = missing()
    if gone:
        raise KerasChanged(
            f"Keras {keras.__version__} has no {', '.join(gone)}, which tpu_bo relies on "
            f"(verified on Keras {VERIFIED}); install keras=={VERIFIED} "
            "(requirements-tpu.txt pins it)."
        )
    _CHECKED.append(True)
