"""Which way an objective improves: from its metric object's declaration, else its name."""

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
        ("val_mean_io_u", True),  # Keras's default name of MeanIoU
        ("val_digit_one_hot_mean_io_u", True),
        ("val_foo", None),
        ("val_my_score", None),
        ("val_r2", None),
    ],
)
def test_the_direction_comes_from_the_metric_name(objective, maximize):
    assert infer_maximize(objective) is maximize


@pytest.mark.parametrize(
    "objective,declared,maximize",
    [
        ("val_r2", {"r2": True}, True),  # R2Score(name="r2"): its object says up
        ("val_err", {"err": False}, False),  # MeanAbsoluteError(name="err")
        ("val_accuracy", {"accuracy": False}, False),  # the object decides over the name
        ("val_price_r2", {"price_r2": True, "r2": False}, True),  # by its full reported name
        ("val_foo", {"r2": True}, None),  # another metric's declaration says nothing of foo
        ("val_loss", {"loss": True}, False),  # the loss is no metric object
        ("loss", {"loss": True}, False),
    ],
)
def test_the_direction_comes_first_from_the_metric_object(objective, declared, maximize):
    assert infer_maximize(objective, declared) is maximize
