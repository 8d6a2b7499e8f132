"""The rules between a Config's fields: the objective and its direction, the final model."""

from __future__ import annotations

import pytest

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError


@pytest.mark.parametrize(
    "fields,maximize",
    [
        ({}, True),
        ({"objective": "val_mae"}, False),
        ({"objective": "val_auc"}, True),
        ({"objective": "val_my_score", "objective_mode": "min"}, False),
        ({"objective": "val_loss", "objective_mode": "max"}, True),
    ],
)
def test_the_objective_direction_is_inferred_or_given(fields, maximize):
    assert Config(**fields).validate().maximize is maximize


@pytest.mark.parametrize(
    "fields,flag,words",
    [
        ({"objective": "accuracy"}, "objective", "use loss, val_loss or val_<metric>"),
        ({"objective": "val_my_score"}, "objective_mode", "cannot tell whether val_my_score"),
        ({"final_on_train_and_val": True}, "final_on_train_and_val", "needs --final_epochs"),
        ({"final_epochs": -1}, "final_epochs", ""),
    ],
)
def test_rules_name_the_flag(fields, flag, words):
    with pytest.raises(ConfigError) as error:
        Config(**fields).validate()
    assert error.value.flag == flag and words in error.value.message


def test_data_flags_join_the_identity_only_when_set():
    """Studies journaled before --features existed still match their own identity."""
    assert "features" not in Config().study_identity()
    identity = Config(features="a,b", label="y", augment="m:f").study_identity()
    assert (identity["features"], identity["label"], identity["augment"]) == ("a,b", "y", "m:f")


def test_pbt_joins_the_identity_so_a_fifo_study_is_not_continued_as_pbt():
    assert "scheduler" not in Config().study_identity()  # older studies still match
    pbt = Config(scheduler="pbt", parallel_trials=4).study_identity()
    assert pbt["scheduler"] == "pbt"
    assert {k: v for k, v in pbt.items() if k != "scheduler"} == Config().study_identity()
