"""Which way an objective improves, inferred from its Keras metric name."""

from __future__ import annotations

import pytest

from tpu_bo.objectives import infer_maximize


@pytest.mark.parametrize(
    "objective,maximize",
    [
        ("val_accuracy", True),
        ("val_auc", True),
        ("val_auc_1", True),  # Keras may number a second metric of one kind
        ("val_precision", True),
        ("val_sparse_top_k_categorical_accuracy", True),
        ("val_loss", False),
        ("loss", False),
        ("val_mae", False),
        ("val_price_mean_absolute_error", False),  # a multi-output model's prefix
        ("val_rmse", False),
        ("val_binary_crossentropy", False),
        ("val_foo", None),
        ("val_my_score", None),
    ],
)
def test_the_direction_comes_from_the_metric_name(objective, maximize):
    assert infer_maximize(objective) is maximize
