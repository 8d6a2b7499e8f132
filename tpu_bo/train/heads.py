"""Heads: the loss a tower trains on and the metrics it is scored by.

* The **default head**, for a model the builder returns *uncompiled*: sparse categorical
  cross-entropy (with the runtime ``label_smoothing``) on integer class labels, and accuracy.
  It needs an output of one logit (or probability) per class.
* The **compiled head**, for a model compiled with a loss: training calls its
  ``compute_loss``; evaluation calls it with the padding weights, and updates the compiled
  metrics with them too (Keras itself ignores sample weights in ``compile(metrics=...)``, but
  here the weight only marks the padding, so every example must count once). Each tower keeps
  its own metric state, which the eval program resets at every evaluation. The compiled loss
  and metrics are built in the strategy's scope when the program is built, so no variable is
  created while a program traces. The compiled optimizer is the tower's too, copied by
  :func:`tpu_bo.train.program.make_optimizer`, unless ``--optimizer`` is given.

Keras's losses divide by the replicas themselves (``scale_loss_for_distribution``), as the
default head does by dividing by the global batch, so summing over replicas gives the mean in
both heads; ``tests/test_user_data.py`` checks the reported scores against Keras's ``evaluate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tpu_bo.data.sources import describe
from tpu_bo.errors import ConfigError, first_line


def metric_names(tower: Any) -> list[str]:
    """``accuracy`` for the default head, else the compiled model's scalar metrics."""
    if not tower.compiled:
        return ["accuracy"]
    return sorted(compiled_metrics(tower))


def compiled_metrics(tower: Any) -> dict[str, Any]:
    """The compiled model's scalar metric results by name (``{}`` without metrics)."""
    metrics = getattr(tower.model, "_compile_metrics", None)
    if metrics is None or not metrics.built:
        return {}
    results = metrics.result()
    return {k: v for k, v in results.items() if int(np.prod(v.shape)) == 1}


def update_compiled_metrics(model: Any, y: Any, outputs: Any, weight: tf.Tensor) -> None:
    """Updates every compiled metric with the padding ``weight``, plain and weighted ones alike.

    Keras ignores sample weights in ``compile(metrics=...)``; here the weight only marks the
    padding of the last eval batch, so every metric must honour it to count each example once.
    """
    metrics = model._compile_metrics
    if metrics is None:
        return
    y_true, y_pred = metrics._flatten_y(y), metrics._flatten_y(outputs)
    for group in (metrics._flat_metrics, metrics._flat_weighted_metrics):
        for metric, a, b in zip(group, y_true, y_pred, strict=False):
            if metric is not None:
                metric.update_state(a, b, sample_weight=weight)


def reset_compiled_metrics(towers: list[Any]) -> None:
    """Zeroes the compiled metrics of every tower (inside the eval program, per evaluation)."""
    for tower in towers:
        metrics = getattr(tower.model, "_compile_metrics", None)
        if tower.compiled and metrics is not None:
            metrics.reset_state()


def compute_loss(model: Any, x: Any, y: Any, outputs: Any, weight: Any, *, training: bool) -> Any:
    """A compiled model's ``compute_loss`` (Keras 3; older overrides lack ``training``)."""
    if "training" in inspect.signature(model.compute_loss).parameters:
        return model.compute_loss(x, y, outputs, weight, training=training)
    return model.compute_loss(x, y, outputs, weight)


def default_loss(
    logits: tf.Tensor, labels: tf.Tensor, smoothing: Any, probabilities: bool
) -> tf.Tensor:
    """The default head's per-example cross-entropy, label-smoothed when ``smoothing`` is set.

    Args:
      logits: ``[batch, classes]`` outputs: logits, or probabilities if ``probabilities``.
      labels: Integer class labels, ``[batch]`` or ``[batch, 1]``.
      smoothing: The runtime label-smoothing variable, or ``None`` for plain cross-entropy.
      probabilities: Whether the model ends in a softmax.
    """
    outputs = tf.cast(logits, tf.float32)
    if probabilities:
        log_probs = tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))
    else:
        log_probs = tf.nn.log_softmax(outputs)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    nll = -tf.gather(log_probs, labels, axis=1, batch_dims=1)
    if smoothing is None:
        return nll
    return (1.0 - smoothing) * nll - smoothing * tf.reduce_mean(log_probs, axis=-1)


def attach(tower: Any, zeros: Any, *, name: str, smoothing: bool) -> None:
    """Gives ``tower`` the compiled head when its model was compiled with a loss.

    Args:
      tower: A :class:`tpu_bo.train.program.Tower` whose model was just built (in the scope).
      zeros: ``(features, label)`` of a small all-zero batch.
      name: The model's name, for messages.
      smoothing: Whether ``label_smoothing`` is searched or fixed (the default head's).
    """
    model = tower.model
    if not getattr(model, "compiled", False):
        return
    if getattr(model, "_compile_loss", None) is None:
        raise ConfigError(
            "model",
            f"builder {name} compiled its model without a loss; compile it with loss=... or "
            "return it uncompiled for the default classification loss.",
        )
    if smoothing:
        raise ConfigError(
            "param",
            f"label_smoothing belongs to the default loss, but model {name} brings its own "
            "compiled loss; give that loss its label_smoothing instead.",
        )
    tower.compiled = True
    x, y = zeros
    outputs = model(x, training=False)
    model._compile_loss.build(y, outputs)
    if model._compile_metrics is not None:
        model._compile_metrics.build(y, outputs)


def check_labels(
    tower: Any,
    zeros: Any,
    label: Any,
    num_classes: int | None,
    *,
    name: str,
    host_model: Callable[[], Any],
) -> None:
    """One sentence naming ``label`` when the labels do not fit the model's output and head.

    A compiled head is probed on ``host_model()``, a fresh model outside the strategy, so no
    replica context is needed for its metric updates.
    """
    x, y = zeros
    what = f"labels ({describe(label)})"
    if tower.compiled:
        host = host_model()
        try:
            outputs = host(x, training=False)
            host.compute_loss(x, y, outputs, None)
            if host._compile_metrics is not None:
                host._compile_metrics.update_state(y, outputs)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a mismatch
            raise ConfigError(
                "label",
                f"the {what} do not fit model {name}'s output and compiled loss or metrics: "
                f"{first_line(e)}.",
            ) from None
        return
    outputs = tower.model(x, training=False)
    integer = isinstance(label, tf.TensorSpec) and label.dtype.is_integer
    if not integer or label.shape.num_elements() != 1 or outputs.shape[-1] != num_classes:
        raise ConfigError(
            "label",
            f"the default loss needs integer class labels and an output of one logit per "
            f"class ({num_classes} classes), but got {what} and an output of shape "
            f"{list(outputs.shape[1:])}; compile your model with its own loss and metrics "
            "for any other task.",
        )
