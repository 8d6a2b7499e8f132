"""``search``'s arguments, as ``model.fit`` takes them, as a tpu_bo study's data and fields.

* :func:`fit_kwargs`: ``search(*args, **kwargs)`` as ``fit``'s keywords, each one checked (a fit
  argument tpu_bo cannot honour is one ``ConfigError`` naming it).
* :func:`data`: arrays as an ``(x, y)`` pair, a batched ``tf.data.Dataset`` unbatched (its batch
  is the study's), ``validation_split`` as the last fraction of the arrays (Keras's rule).
* :func:`callbacks_fields`: ``keras.callbacks.EarlyStopping`` on the objective as the study's
  ``patience`` and ``min_delta``, ``TensorBoard`` as its ``tensorboard_dir``; any other
  callback refused, by name.

TensorFlow is imported only for a Dataset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_bo.errors import ConfigError

# model.fit's arguments a search passes on; every other one is refused, by name.
_FIT_ARGS = {"x", "y", "epochs", "batch_size", "validation_data", "validation_split",
             "callbacks", "verbose", "shuffle"}  # fmt: skip


def fit_kwargs(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``search``'s arguments as ``fit``'s keywords, each one checked."""
    if len(args) > 2:
        raise ConfigError("search", "takes x and y positionally; give the rest by keyword.")
    out = dict(zip(("x", "y"), args, strict=False))
    for name, value in kwargs.items():
        if name in out:
            raise ConfigError(name, "is given twice.")
        if name not in _FIT_ARGS:
            raise ConfigError(
                name,
                "is a model.fit argument tpu_bo.keras_tuner does not support (it takes x, y, "
                "epochs, batch_size, validation_data, validation_split, verbose); drop it.",
            )
        out[name] = value
    if out.get("shuffle", True) is not True:
        raise ConfigError("shuffle", "tpu_bo shuffles the training data every epoch; drop it.")
    epochs = out.get("epochs", 1)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError("epochs", f"must be a positive whole number, got {epochs!r}.")
    return out


def callbacks_fields(callbacks: Sequence[Any], objective: Any) -> dict[str, Any]:
    """The study fields of ``search``'s callbacks: ``keras.callbacks.EarlyStopping`` on the
    objective is tpu_bo's early stopping per trial (``patience``, ``min_delta``),
    ``keras.callbacks.TensorBoard`` the study's ``tensorboard_dir`` (its ``log_dir``); every
    other callback is refused, by name.

    Args:
      callbacks: ``search``'s callbacks.
      objective: The tuner's ``Objective`` (its ``name`` and ``direction``).

    Raises:
      ConfigError: naming ``callbacks``.
    """
    out: dict[str, Any] = {}
    for callback in callbacks:
        name = f"{type(callback).__module__.split('.')[0]}.callbacks.{type(callback).__name__}"
        if type(callback).__name__ == "EarlyStopping" and hasattr(callback, "patience"):
            out.update(_early_stopping(callback, objective))
            continue
        if type(callback).__name__ == "TensorBoard" and hasattr(callback, "log_dir"):
            # The study's own events (per-epoch scalars, HParams) go where the user points.
            out["tensorboard_dir"] = str(callback.log_dir)
            continue
        raise ConfigError(
            "callbacks",
            f"{name} does not run under tpu_bo.keras_tuner: every trial trains in tpu_bo's "
            "compiled loop, which calls no Keras callback (EarlyStopping and TensorBoard are "
            "taken as study settings); drop it.",
        )
    return out


def _early_stopping(callback: Any, objective: Any) -> dict[str, Any]:
    """``EarlyStopping``'s settings as the study's ``patience`` and ``min_delta``."""
    if callback.monitor != objective.name:
        raise ConfigError(
            "callbacks",
            f"EarlyStopping monitors {callback.monitor}, but tpu_bo stops a trial on its "
            f"objective; give EarlyStopping(monitor={objective.name!r}, ...).",
        )
    if callback.mode in ("min", "max") and callback.mode != objective.direction:
        raise ConfigError(
            "callbacks",
            f"EarlyStopping's mode {callback.mode!r} contradicts the objective's direction "
            f"{objective.direction!r}.",
        )
    for attribute, default in (("baseline", None), ("start_from_epoch", 0)):
        if getattr(callback, attribute, default) != default:
            raise ConfigError(
                "callbacks",
                f"EarlyStopping's {attribute} is not supported by tpu_bo's early stopping; drop "
                "it.",
            )
    # restore_best_weights either way: a trial is scored, and its weights kept, at its best epoch.
    return {"patience": int(callback.patience), "min_delta": abs(float(callback.min_delta))}


def data(kwargs: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """``(data, validation_data, study fields)`` for :func:`tpu_bo.run_study` from ``fit``'s
    arguments: arrays as an ``(x, y)`` pair, a batched Dataset unbatched (its batch is the
    study's), ``validation_split`` as the last fraction of the arrays (Keras's rule)."""
    x, y = kwargs.get("x"), kwargs.get("y")
    batch = kwargs.get("batch_size")
    study: dict[str, Any] = {}
    if x is None:
        raise ConfigError("x", "give the training data, as model.fit takes it.")
    if _is_dataset(x):
        if y is not None:
            raise ConfigError("y", "give the labels inside the tf.data.Dataset x, not as y.")
        if batch is not None:
            raise ConfigError("batch_size", "a tf.data.Dataset is batched already; drop it.")
        data, batch = _unbatched(x, "x")
    else:
        if y is None:
            raise ConfigError("y", "give the labels (or a tf.data.Dataset of (features, labels)).")
        data = (x, y)
    validation = kwargs.get("validation_data")
    if validation is not None and _is_dataset(validation):
        validation, _ = _unbatched(validation, "validation_data")
    elif validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ConfigError(
                "validation_data",
                "give an (x, y) pair or a tf.data.Dataset (sample weights are not supported).",
            )
        validation = tuple(validation)
    split = kwargs.get("validation_split") or 0.0
    if split:
        if validation is not None:
            raise ConfigError(
                "validation_split", "give validation_data or validation_split, not both."
            )
        if _is_dataset(x) or not 0 < split < 1:
            raise ConfigError(
                "validation_split", "must lie in (0, 1) and needs arrays (as in Keras)."
            )
        import numpy as np

        n = len(np.asarray(y))
        at = int(math.floor(n * (1.0 - split)))
        study.update(train_split=f"train[:{at}]", eval_split=f"train[{at}:]")
    study["batch_size"] = 32 if batch is None else int(batch)
    return data, validation, study


def _is_dataset(value: Any) -> bool:
    return any(c.__name__ in ("DatasetV2", "Dataset") for c in type(value).__mro__) and hasattr(
        value, "element_spec"
    )


def _unbatched(ds: Any, flag: str) -> tuple[Any, int | None]:
    """A batched Dataset of ``(features, labels)`` as unbatched examples, and its batch size
    (``None`` when it was unbatched already: scalar labels)."""
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ConfigError(
            flag, "a tf.data.Dataset must yield (features, labels) pairs (no sample weights)."
        )
    import tensorflow as tf

    label = tf.nest.flatten(spec[1])[0]
    if label.shape.rank == 0:
        return ds, None
    first = next(iter(ds.take(1)))
    return ds.unbatch(), int(tf.nest.flatten(first[1])[0].shape[0])
