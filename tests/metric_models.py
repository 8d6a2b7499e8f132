"""Models compiled with many Keras metrics, and their data (``tests/train/test_heads.py``).

Reached as ``--model=tests.metric_models:NAME``:

* ``regressor``: the diabetes regression of ``tests.user_data``, compiled with every Keras
  regression metric that scores one output (``R2Score(name="r2")`` among them), a weighted
  metric and a repeated one.
* ``two_heads``: a classifier of the digits with two outputs, ``digit`` (a softmax over
  one-hot labels) and ``even`` (a sigmoid over a binary label), each compiled with the Keras
  classification metrics that fit it (F-scores, AUC, IoUs, precision, recall, top-k...).
* ``unknown_direction``: a regressor whose only metric, ``foo``, says nothing of its direction.

The Keras metric objects of ``two_heads`` are module-level, one object for every model it
builds, as Keras's imbalanced-data tutorial writes them: each tower must still keep its own.
"""

from __future__ import annotations

import keras
import numpy as np

from tests.user_data import diabetes_arrays

REGRESSION = {
    "r2": lambda: keras.metrics.R2Score(name="r2"),
    "mae": lambda: "mae",
    "mse": lambda: "mse",
    "root_mean_squared_error": keras.metrics.RootMeanSquaredError,
    "mean_absolute_percentage_error": keras.metrics.MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": keras.metrics.MeanSquaredLogarithmicError,
    "logcosh": keras.metrics.LogCoshError,
    "cosine_similarity": keras.metrics.CosineSimilarity,
    "r2_score": lambda: keras.metrics.R2Score(class_aggregation="variance_weighted_average"),
}
DIGIT = [
    "categorical_accuracy",
    keras.metrics.TopKCategoricalAccuracy(k=3, name="top3"),
    keras.metrics.F1Score(average="macro"),
    keras.metrics.FBetaScore(beta=2.0, average="weighted"),
    keras.metrics.AUC(name="auc"),
    keras.metrics.AUC(curve="PR", name="prc"),
    keras.metrics.Precision(name="precision"),
    keras.metrics.Recall(name="recall"),
    keras.metrics.MeanIoU(num_classes=10, sparse_y_true=False, sparse_y_pred=False),
    keras.metrics.OneHotMeanIoU(num_classes=10),
    keras.metrics.OneHotIoU(num_classes=10, target_class_ids=[3]),
    keras.metrics.PrecisionAtRecall(0.8),
    keras.metrics.SpecificityAtSensitivity(0.8),
    keras.metrics.TruePositives(),
    keras.metrics.FalseNegatives(),
    keras.metrics.CategoricalCrossentropy(),
    keras.metrics.KLDivergence(),
    keras.metrics.CategoricalHinge(),
]
EVEN = [
    keras.metrics.BinaryAccuracy(),
    keras.metrics.F1Score(threshold=0.5),  # one binary output: a one-element result
    keras.metrics.AUC(name="auc"),  # the same name as digit's, under another output
    keras.metrics.BinaryIoU(target_class_ids=[0, 1]),
    keras.metrics.BinaryCrossentropy(),
    keras.metrics.Hinge(),
    keras.metrics.RecallAtPrecision(0.8),
]


def regression_data() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The diabetes set: 320 train, 90 validation examples (the last batch of 32 padded)."""
    x, y = diabetes_arrays()
    return {"train": (x[:320], y[:320]), "validation": (x[320:410], y[320:410])}


def regressor(hp, input_shape, num_classes):
    """One output compiled with MSE and every metric of ``REGRESSION``, plus a weighted MAE."""
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    metrics = [make() for make in REGRESSION.values()]
    model.compile(loss="mse", metrics=metrics, weighted_metrics=["mae"])
    return model


def digits_data() -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """scikit-learn's digits as 64 features in [0, 1] and two labels: ``digit`` one-hot and
    ``even`` binary; 512 train and 200 validation examples."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    labels = {
        "digit": np.eye(10, dtype=np.float32)[y],
        "even": (y % 2 == 0).astype(np.float32)[:, None],
    }
    part = slice(0, 512), slice(512, 712)
    return {
        name: (x[s], {k: v[s] for k, v in labels.items()})
        for name, s in zip(("train", "validation"), part, strict=True)
    }


def two_heads(hp, input_shape, num_classes):
    """Two outputs, each compiled with its own loss and the Keras metrics that fit it."""
    features = keras.Input(input_shape)
    hidden = keras.layers.Dense(32, activation="relu")(features)
    digit = keras.layers.Dense(10, activation="softmax", name="digit")(hidden)
    even = keras.layers.Dense(1, activation="sigmoid", name="even")(hidden)
    model = keras.Model(features, {"digit": digit, "even": even})
    model.compile(
        loss={"digit": "categorical_crossentropy", "even": "binary_crossentropy"},
        metrics={"digit": DIGIT, "even": EVEN},
    )
    return model


def foo(y_true, y_pred):
    """A metric whose name and object say nothing of which way it improves."""
    return keras.ops.abs(y_true - keras.ops.squeeze(y_pred, -1))


def unknown_direction(hp, input_shape, num_classes):
    """The regressor compiled with ``foo`` as its only metric."""
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Dense(1)])
    model.compile(loss="mse", metrics=[foo])
    return model
