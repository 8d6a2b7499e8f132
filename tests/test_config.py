"""The frozen Config: defaults, field metadata, validation across fields, and study identity.

Also: the rules between a Config's fields (the objective and its direction, the final model);
the dataclass fields carrying their flag's metadata, and the checks that metadata drives;
--space_file, a search space from JSON in either form, and errors naming the flag.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tpu_bo import config
from tpu_bo.config import (
    FLAG_GROUPS,
    OPTIMIZERS,
    Config,
    check_field,
    flag_field,
    flag_name,
    read_space_file,
)
from tpu_bo.errors import ConfigError
from tpu_bo.search.space import SearchSpace


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
        ({"n_iter": -1}, "n_iter", "must be a whole number >= 0, got -1"),
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
        if meta["choices"] and field.default is not None:  # None: --optimizer's "not given"
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


def test_a_direction_the_name_does_not_say_is_settled_by_the_metric_object():
    config = Config(objective="val_my_score").validate()  # the model may say it
    with pytest.raises(ConfigError) as error:
        _ = config.maximize
    assert error.value.flag == "objective_mode" and "val_my_score" in error.value.message
    settled = config.settle_direction({"my_score": True})
    assert settled.objective_mode == "max" and settled.maximize
    with pytest.raises(ConfigError, match="cannot tell whether val_my_score"):
        config.settle_direction({"other": False})
    named = Config(objective="val_mae").validate()  # the object decides over the name
    assert named.settle_direction({"mae": False}) is named
    assert named.settle_direction({"mae": True}).objective_mode == "max"
    given = Config(objective="val_mae", objective_mode="min").validate()
    assert given.settle_direction({"mae": True}) is given


@pytest.mark.parametrize(
    "fields,flag,words",
    [
        ({"objective": "accuracy"}, "objective", "use loss, val_loss or val_<metric>"),
        ({"final_on_train_and_val": True}, "final_on_train_and_val", "needs --final_epochs"),
        ({"final_epochs": -1}, "final_epochs", ""),
    ],
)
def test_rules_name_the_flag(fields, flag, words):
    with pytest.raises(ConfigError) as error:
        Config(**fields).validate()
    assert error.value.flag == flag and words in error.value.message


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str = flag_field("a", "The mode.", choices=("a", "b"), group="data")
    count: int = flag_field(1, "How many.", lower_bound=1)
    offset: int = flag_field(0, "Where from.", lower_bound=0)
    ratio: float = flag_field(0.5, "Any number.")
    space: tuple = flag_field((), "Searched.", flag="param", repeated=True)
    extra: dict = flag_field(help="Fixed.", repeated=True, default_factory=dict)


def fields():
    return {f.name: f for f in dataclasses.fields(Settings)}


def test_flag_field_records_the_flags_metadata_and_the_default():
    f = fields()
    assert dict(f["mode"].metadata) == {
        "help": "The mode.",
        "choices": ("a", "b"),
        "lower_bound": None,
        "flag": None,
        "repeated": False,
        "group": "data",
    }
    assert f["count"].metadata["lower_bound"] == 1 and f["space"].metadata["repeated"]
    s = Settings()
    assert (s.mode, s.count, s.ratio, s.extra) == ("a", 1, 0.5, {})
    assert Settings().extra is not s.extra  # a fresh default per instance
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mode = "b"


def test_every_field_names_one_heading_of_help_and_every_heading_has_flags():
    groups = {f.name: f.metadata["group"] for f in dataclasses.fields(Config)}
    assert not [name for name, group in groups.items() if group not in FLAG_GROUPS]
    assert set(groups.values()) == set(FLAG_GROUPS)


def test_flag_name_is_the_field_name_unless_the_flag_is_renamed():
    assert [flag_name(f) for f in fields().values()] == [
        "mode",
        "count",
        "offset",
        "ratio",
        "param",
        "extra",
    ]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("mode", "c", "'c' is not one of a, b."),
        ("count", 0, "must be a positive whole number, got 0."),
        ("count", 2.0, "must be a positive whole number, got 2.0."),
        ("count", True, "must be a positive whole number, got True."),
        ("offset", -1, "must be a whole number >= 0, got -1."),
        ("offset", "3", "must be a whole number >= 0, got '3'."),
    ],
)
def test_check_field_refuses_values_outside_the_metadata(name, value, needle):
    with pytest.raises(ConfigError) as e:
        check_field(fields()[name], value)
    assert e.value.flag == name and e.value.message == needle


@pytest.mark.parametrize(
    ("name", "value"), [("mode", "b"), ("count", 7), ("offset", 0), ("ratio", -3.5), ("space", ())]
)
def test_check_field_accepts_values_inside_the_metadata(name, value):
    check_field(fields()[name], value)


def test_config_still_exports_what_moved_out_of_it():
    from tpu_bo.config import read_space_file

    assert config.flag_name is flag_name and config.read_space_file is read_space_file
    with pytest.raises(ConfigError, match="not one of auto, tpu, gpu, cpu"):
        config.Config(accelerator="fpga").validate()


SPACE = SearchSpace.from_value(
    {
        "learning_rate": ("log", 1e-4, 1e-2),
        "dense_units": ("choice", [128, 256]),
        "dropout": ("float", 0.1, 0.5, "structural"),
    }
)


def write(tmp_path, content):
    path = tmp_path / "space.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_a_mapping_of_names_to_params(tmp_path):
    path = write(
        tmp_path,
        {
            "learning_rate": {"kind": "log", "low": 1e-4, "high": 1e-2},
            "dense_units": ["choice", [128, 256]],
            "dropout": ["float", 0.1, 0.5, "structural"],
        },
    )
    assert read_space_file(path) == SPACE


def test_the_list_that_config_json_records_reads_back_as_the_same_space(tmp_path):
    path = write(tmp_path, SPACE.to_list())
    assert read_space_file(path).to_list() == SPACE.to_list()  # roles now explicit
    assert Config(space_file=path).validate().resolved_space() == read_space_file(path)


def test_a_url_is_read_through_tensorflows_file_system(tmp_path):
    path = write(tmp_path, SPACE.to_list())
    assert read_space_file(f"file://{path}") == read_space_file(path)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        ("", "is not valid JSON"),
        ([{"kind": "log", "low": 0.1, "high": 1}], "every entry of a list needs a 'name'."),
        ([["lr", "log", 0.1, 1]], "every entry of a list needs a 'name'."),
        (3, "must hold a JSON object or list of parameters."),
        ({}, "the search space is empty"),
        ({"lr": ["log", 0.1]}, "lr"),
        ({"bad name": ["float", 0, 1]}, "not a valid name"),
    ],
)
def test_bad_files_name_the_flag_and_the_file(tmp_path, content, needle):
    path = str(tmp_path / "space.json") if content is None else write(tmp_path, content)
    with pytest.raises(ConfigError) as e:
        read_space_file(path)
    assert e.value.flag == "space_file"
    assert needle in e.value.message and path in e.value.message
