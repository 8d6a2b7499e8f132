"""The frozen Config: defaults, field metadata, validation across fields, and study identity."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tpu_bo.config import OPTIMIZERS, Config, flag_name
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
        ({"seed": -1}, "seed", "must be a whole number >= 0, got -1"),
        ({"init_points": 0}, "init_points", "positive whole number"),
        ({"epochs": -1}, "epochs", "positive whole number"),
        ({"batch_size": 0}, "batch_size", "positive whole number"),
        ({"cpu_replicas": 3, "accelerator": "cpu"}, "batch_size", "does not divide by the 3"),
        ({"cpu_replicas": 2, "accelerator": "tpu"}, "cpu_replicas", "only applies"),
        ({"optimizer": "lamb"}, "optimizer", "not one of"),
        ({"fixed": {"dropout_2": 0.1}}, "fixed", "both fixed and searched"),
        ({"space": ["optimizer:choice:adam,lamb"]}, "param", "optimizer must be a choice"),
        ({"dataset": " "}, "dataset", "must not be empty"),
        ({"fixed": {"optimizer": "lamb"}}, "fixed", "one of rmsprop, adam, sgd, adamw"),
        ({"sampler": "cmaes"}, "sampler", "'cmaes' is not one of bayes_opt, tpe, gp, random"),
        ({"prune": "percentile"}, "prune", "not one of none, median, asha, hyperband"),
        ({"prune": "asha", "epochs": 2, "min_epochs": 3}, "min_epochs", "must not exceed"),
        ({"prune": "hyperband", "epochs": 2, "min_epochs": 3}, "min_epochs", "must not exceed"),
        ({"prune": "median", "min_epochs": 6}, "min_epochs", "--epochs=5"),
        ({"min_epochs": 0}, "min_epochs", "positive whole number"),
        ({"reduction_factor": 1}, "reduction_factor", "whole number >= 2, got 1"),
        ({"prune_after": 0}, "prune_after", "positive whole number"),
        ({"shuffle_buffer": -1}, "shuffle_buffer", ">= 0"),
        ({"storage": "study.db"}, "storage", "not a storage URL"),
        ({"storage": "/tmp/study.db"}, "storage", "sqlite:///study.db"),
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


@pytest.mark.parametrize(
    "fields",
    [
        {"prune": "none", "epochs": 1, "min_epochs": 3},  # min_epochs only matters when pruning
        {"prune": "asha", "epochs": 3, "min_epochs": 3, "reduction_factor": 2},
        {
            "sampler": "tpe",
            "storage": "sqlite:///study.db",
            "study_name": "s",
            "wait_for_lock": True,
        },
        {"sampler": "random", "storage": "postgresql://user@host/db"},
        {"fixed": {"optimizer": "adamw"}},
        {"space": ["optimizer:choice:sgd,adam", "learning_rate:log:1e-4:1e-2"]},
    ],
)
def test_valid_new_fields(fields):
    Config(**fields).validate()


def test_new_fields_default_to_bayes_opt_in_the_output_dir():
    config = Config()
    assert (config.sampler, config.storage, config.study_name) == ("bayes_opt", "", "")
    assert (config.min_epochs, config.reduction_factor, config.wait_for_lock) == (1, 3, False)
    assert config.prune == "none"


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"study_name": "mine", "output_dir": "runs/x"}, "mine"),
        ({}, "digits-mnist_cnn"),
        ({"dataset": "mnist", "model": "pkg.mod:build"}, "mnist-pkg.mod_build"),
        ({"output_dir": "runs/x"}, "x"),
        ({"output_dir": "runs/x/"}, "x"),
        ({"output_dir": "/abs/runs/x//"}, "x"),
        ({"output_dir": "gs://bucket/studies/x"}, "x"),
        ({"output_dir": "gs://bucket/studies/x/"}, "x"),
        ({"output_dir": "gs://bucket"}, "bucket"),
    ],
)
def test_resolved_study_name(fields, name):
    assert Config(**fields).resolved_study_name == name


def test_resolved_study_name_of_the_current_directory_is_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Config(output_dir=".").resolved_study_name == tmp_path.name


def test_every_field_carries_its_flag_help_and_valid_default():
    defaults = Config()
    for field in dataclasses.fields(Config):
        meta = field.metadata
        assert meta["help"].strip(), field.name
        assert meta["help"].rstrip().endswith("."), field.name
        if meta["choices"]:
            assert getattr(defaults, field.name) in meta["choices"], field.name
        if meta["lower_bound"] is not None:
            assert getattr(defaults, field.name) >= meta["lower_bound"], field.name
    assert [flag_name(f) for f in dataclasses.fields(Config) if f.metadata["repeated"]] == [
        "fixed",
        "param",
    ]
    assert dataclasses.fields(Config)[0].metadata["choices"] == ("auto", "tpu", "gpu", "cpu")


def test_optimizers_name_keras_classes_in_their_listed_order():
    import keras

    assert list(OPTIMIZERS) == ["rmsprop", "adam", "sgd", "adamw"]
    for name, (cls, learning_rate) in OPTIMIZERS.items():
        assert isinstance(getattr(keras.optimizers, cls)(learning_rate), keras.optimizers.Optimizer)
        assert cls.lower() == name and 0 < learning_rate < 1


def test_config_imports_neither_tensorflow_nor_absl_nor_optuna():
    code = (
        "import sys, tpu_bo.config; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'absl', 'optuna'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
