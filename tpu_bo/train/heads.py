"""Heads: the loss a tower trains on and the metrics it is scored by.

* The **default head**, for a model the builder returns *uncompiled*: sparse categorical
  cross-entropy (with the runtime ``label_smoothing``) on integer class labels, and accuracy.
  It needs an output of one logit (or probability) per class.
* The **compiled head**, for a model compiled with a loss: training calls its
  ``compute_loss``; evaluation calls it with the padding weights, and updates the compiled
  metrics with them too (Keras itself ignores sample weights in ``compile(metrics=...)``, but
  here the weight only marks the padding, so every example must count once). Each tower keeps
  its own metric state, which the eval program resets at every evaluation: a metric object
  the builder shares between the models it returns (a module-level ``METRICS`` list) is
  copied for each tower. The compiled loss and metrics are built in the strategy's scope when
  the program is built, so no variable is created while a program traces: as Keras's own
  ``_symbolic_build``, one update that changes no state makes the variables of the metrics
  that create them on their first ``update_state`` (``R2Score``, ``F1Score``,
  ``FBetaScore``...). The compiled optimizer is the tower's too, copied by
  :func:`tpu_bo.train.program.make_optimizer`, unless ``--optimizer`` is given.
* **Directions** (:func:`metric_directions`): which way each compiled metric improves, as its
  object says (Keras's own ``_direction``, which ``EarlyStopping`` reads; else its class's or
  wrapped function's name), so that ``--objective=val_r2`` of ``R2Score(name="r2")`` is
  maximised whatever its name (:func:`tpu_bo.objectives.infer_maximize`).

Keras's losses divide by the replicas themselves (``scale_loss_for_distribution``), as the
default head does by dividing by the global batch, so summing over replicas gives the mean in
both heads; ``tests/train/test_user_data.py`` and ``tests/train/test_heads.py`` check the
reported scores against Keras's ``evaluate``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo.data.sources import describe
from tpu_bo.errors import ConfigError, first_line
from tpu_bo.objectives import infer_maximize


def metric_names(tower: Any) -> list[str]:
    """``accuracy`` for the default head, else the compiled model's scalar metrics."""
    if not tower.compiled:
        return ["accuracy"]
    return sorted(compiled_metrics(tower))


def compiled_metrics(tower: Any) -> dict[str, Any]:
    """The compiled model's scalar metric results by name (``{}`` without metrics).

    A one-element result (``F1Score`` of one binary output) is reported as its scalar; a
    per-class vector (``F1Score(average=None)`` of many classes) is not reported.
    """
    results = {name: metric.result() for name, metric in named_metrics(tower.model)}
    return {k: tf.reshape(v, []) for k, v in results.items() if int(np.prod(v.shape)) == 1}


def named_metrics(model: Any) -> Iterator[tuple[str, Any]]:
    """Each compiled metric object under the name ``CompileMetrics.result()`` gives its result.

    The names are Keras's: the metric's name, prefixed by its output's name in a multi-output
    model, a repeated name numbered (``auc_1``), a weighted metric's clash ``weighted_...``
    (``tests/train/test_heads.py`` checks them against ``evaluate``'s).
    """
    metrics = getattr(model, "_compile_metrics", None)
    if metrics is None or not metrics.built:
        return
    counts: dict[str, int] = {}
    for weighted, group in ((False, metrics._flat_metrics), (True, metrics._flat_weighted_metrics)):
        for metrics_list in group:
            if not metrics_list:
                continue
            prefix = f"{metrics_list.output_name}_" if metrics_list.output_name else ""
            for metric in metrics_list.metrics:
                name = prefix + metric.name
                if name in counts and weighted:
                    name = f"{prefix}weighted_{metric.name}"
                if name in counts:
                    counts[name] += 1
                    name = f"{name}_{counts[name] - 1}"
                else:
                    counts[name] = 1
                yield name, metric


def metric_directions(tower: Any) -> dict[str, bool]:
    """Which way each of a tower's reported metrics improves, where its object says it.

    Returns ``{name: True}`` for a metric that is better larger, ``False`` smaller, for every
    metric whose object declares it: Keras's ``_direction`` (``"up"``/``"down"``, set by each
    Keras metric and readable by ``EarlyStopping``; a custom metric may set it too), else its
    class's name or, for a ``MeanMetricWrapper``, its function's name, read as a Keras metric
    name (``TruePositives`` up, ``def pinball_loss`` down). The default head's accuracy is up.
    """
    if not tower.compiled:
        return {"accuracy": True}
    directions = {}
    for name, metric in named_metrics(tower.model):
        declared = {"up": True, "down": False}.get(getattr(metric, "_direction", None))
        if declared is None:
            fn = getattr(metric, "_fn", None)
            named = getattr(fn, "__name__", None) or _SNAKE.sub("_", type(metric).__name__)
            declared = infer_maximize(named.lower())
        if declared is not None:
            directions[name] = declared
    return directions


_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


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
        for metrics_list, a, b in zip(group, y_true, y_pred, strict=False):
            for metric in metrics_list.metrics if metrics_list is not None else ():
                # An integer metric (the IoUs' confusion counts) takes the 0/1 weight exactly.
                dtype = str(getattr(metric, "dtype", ""))
                w = tf.cast(weight, dtype) if "int" in dtype else weight
                metric.update_state(a, b, sample_weight=w)


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
    metrics = model._compile_metrics
    if metrics is None:
        return
    _own_metrics(metrics)
    metrics.build(y, outputs)
    # A metric that makes its variables on its first update (R2Score, F1Score...) makes them
    # at this scope's exit, in the strategy's scope, not while a program traces; the update
    # itself changes no variable (Keras's _symbolic_build does the same).
    with keras.StatelessScope():
        try:
            weight = tf.ones(tf.shape(tf.nest.flatten(y)[0])[:1])
            update_compiled_metrics(model, y, outputs, weight)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a mismatch
            spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape[1:], t.dtype), y)
            raise ConfigError(
                "label",
                f"the labels ({describe(spec)}) do not fit model {name}'s output and compiled "
                f"metrics: {first_line(e)}.",
            ) from None


def _own_metrics(metrics: Any) -> None:
    """Gives a tower's unbuilt compiled metrics Keras metric objects of their own.

    A builder that passes one metric object to every model it compiles (a module-level
    ``METRICS`` list, as Keras's imbalanced-data tutorial has) would make every tower, and the
    host models, update one state. Each Keras metric object is therefore replaced by a copy
    from its config, which Keras's own classes round-trip; the user's object stays with the
    host models. A custom class's object is kept as it is (its config may not name every
    argument): such a metric is created inside the builder.
    """

    def own(metric: Any) -> Any:
        if not isinstance(metric, keras.metrics.Metric):
            return metric
        if not type(metric).__module__.startswith("keras."):
            return metric
        try:
            return type(metric).from_config(metric.get_config())
        except Exception:  # noqa: BLE001 - e.g. a wrapped function Keras cannot deserialize
            return metric

    for attr in ("_user_metrics", "_user_weighted_metrics"):
        given = getattr(metrics, attr)
        if given is not None:
            setattr(metrics, attr, keras.tree.map_structure(own, given))


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
    replica context is needed for its metric updates, and in a ``keras.StatelessScope``, so
    the probe leaves no state behind.
    """
    x, y = zeros
    what = f"labels ({describe(label)})"
    if tower.compiled:
        host = host_model()
        try:
            # The forward pass and the loss change no state; they run outside the stateless
            # scope, where a regularizer's loss (it reads its variable) cannot be computed.
            outputs = host(x, training=False)
            host.compute_loss(x, y, outputs, None)
            # Stateless: the host model's metric objects may be the user's own, which a
            # builder can share with every model it compiles (see _own_metrics).
            with keras.StatelessScope():
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
