"""Which way an objective improves: from its metric object, else from its Keras metric name.

``--objective`` names any metric a trial reports: ``loss`` (training), ``val_loss``, or
``val_<metric>`` for each metric of the model (``val_accuracy`` by default; ``val_mae``,
``val_auc``... for a model compiled with those metrics). Its direction comes first from the
metric object, once the model is built: each Keras metric says it (``_direction``, which
Keras's ``EarlyStopping`` reads too: ``R2Score``, F-scores, AUC, IoUs up; errors down), so
``val_r2`` of ``R2Score(name="r2")`` is maximised whatever its name
(:func:`tpu_bo.train.heads.metric_directions` reads the objects, ``Config.settle_direction``
applies them). Else, and before the model is built, from Keras's metric names, as KerasTuner
does: losses, errors and divergences are minimised; accuracies, AUC, precision, recall,
F-scores, IoU and correlations are maximised. A multi-output model prefixes its output's name
(``val_price_mae``) and Keras may suffix a number (``auc_1``); both are understood. Anything
else needs ``--objective_mode``.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Keras 3 metric names (the class's default ``name`` and the string aliases ``compile`` takes).
MAXIMIZED = frozenset(
    {
        "accuracy", "acc", "binary_accuracy", "categorical_accuracy",
        "sparse_categorical_accuracy", "top_k_categorical_accuracy",
        "sparse_top_k_categorical_accuracy", "auc", "prc", "precision", "recall",
        "f1_score", "fbeta_score", "r2_score", "iou", "mean_iou", "binary_iou", "one_hot_iou",
        "one_hot_mean_iou", "io_u", "mean_io_u", "binary_io_u", "one_hot_io_u",
        "one_hot_mean_io_u", "cosine_similarity", "true_positives", "true_negatives",
        "precision_at_recall", "recall_at_precision", "sensitivity_at_specificity",
        "specificity_at_sensitivity", "pearson_correlation", "concordance_correlation",
    }
)  # fmt: skip
MINIMIZED = frozenset(
    {
        "loss", "mae", "mse", "rmse", "mape", "msle", "mean_absolute_error",
        "mean_squared_error", "root_mean_squared_error", "mean_absolute_percentage_error",
        "mean_squared_logarithmic_error", "log_cosh_error", "logcosh", "log_cosh",
        "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
        "binary_focal_crossentropy", "categorical_focal_crossentropy", "hinge",
        "squared_hinge", "categorical_hinge", "kl_divergence", "kld", "kullback_leibler_divergence",
        "poisson", "false_positives", "false_negatives", "huber", "error",
    }
)  # fmt: skip
_NUMBERED = re.compile(r"_\d+$")


def infer_maximize(objective: str, declared: Mapping[str, bool] | None = None) -> bool | None:
    """Whether ``objective`` is better when larger; ``None`` when neither says.

    Args:
      objective: ``loss``, ``val_loss`` or ``val_<metric>`` (or a bare metric name).
      declared: The direction each reported metric's object declares, by its reported name
        without ``val_`` (``{"r2": True}``); it decides over the name.

    >>> infer_maximize("val_auc"), infer_maximize("val_price_mae"), infer_maximize("val_foo")
    (True, False, None)
    >>> infer_maximize("val_r2"), infer_maximize("val_r2", {"r2": True})
    (None, True)
    """
    name = objective[4:] if objective.startswith("val_") else objective
    if declared and name != "loss" and name in declared:
        return declared[name]
    name = _NUMBERED.sub("", name)
    for known, answer in ((MINIMIZED, False), (MAXIMIZED, True)):
        if name in known or any(name.endswith("_" + k) for k in known):
            return answer
    return None
