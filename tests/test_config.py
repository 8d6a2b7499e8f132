"""The frozen Config: defaults, validation across fields, and study identity."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError


def test_defaults_are_valid_and_offline():
    config = Config().validate()
    assert config.dataset == "digits"
    assert config.total_trials == 15
    assert config.resolved_space().names == ["dropout_2", "learning_rate"]
    assert config.resolved_output_dir.endswith("digits-mnist_cnn")
    json.loads(config.to_json())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3


def test_model_default_spaces():
    assert Config(model="mlp").resolved_space().names == ["dropout", "learning_rate"]
    assert Config(model="pkg.mod:build").resolved_space().names == ["learning_rate"]


@pytest.mark.parametrize(
    ("fields", "flag", "needle"),
    [
        ({"accelerator": "fpga"}, "accelerator", "'fpga' is not one of"),
        ({"n_iter": 0}, "n_iter", "positive whole number"),
        ({"init_points": 0}, "init_points", "at least 1"),
        ({"epochs": -1}, "epochs", "positive whole number"),
        ({"batch_size": 0}, "batch_size", "positive whole number"),
        ({"cpu_replicas": 3, "accelerator": "cpu"}, "batch_size", "does not divide by the 3"),
        ({"cpu_replicas": 2, "accelerator": "tpu"}, "cpu_replicas", "only applies"),
        ({"optimizer": "lamb"}, "optimizer", "not one of"),
        ({"fixed": {"dropout_2": 0.1}}, "fixed", "both fixed and searched"),
        ({"space": ["optimizer:choice:adam,lamb"]}, "param", "optimizer must be a choice"),
        ({"dataset": " "}, "dataset", "must not be empty"),
    ],
)
def test_invalid_fields_name_their_flag(fields, flag, needle):
    with pytest.raises(ConfigError) as info:
        Config(**fields).validate()
    assert info.value.flag == flag
    assert needle in info.value.message


def test_identity_ignores_budget_and_device_but_not_the_space():
    a = Config(dataset="mnist", epochs=1)
    assert (
        a.study_identity()
        == dataclasses.replace(
            a, n_iter=30, accelerator="tpu", output_dir="elsewhere"
        ).study_identity()
    )
    assert (
        a.study_identity()
        != Config(dataset="mnist", epochs=1, space=["learning_rate:log:1e-5:1e-2"]).study_identity()
    )
