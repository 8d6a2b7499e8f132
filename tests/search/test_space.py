"""Search-space parsing, validation, roles and the mapping onto bayes_opt."""

from __future__ import annotations

import math

import pytest

from tpu_bo.errors import ConfigError
from tpu_bo.search.space import Param, SearchSpace, parse_fixed, parse_param


def test_parse_every_kind():
    space = SearchSpace.parse(
        [
            "dropout_2:float:0.1:0.5",
            "learning_rate:log:1e-4:1e-2",
            "num_layers:int:1:4",
            "dense_units:choice:128,256,384",
            "optimizer:choice:adam,rmsprop",
        ]
    )
    assert space.names == ["dropout_2", "learning_rate", "num_layers", "dense_units", "optimizer"]
    assert space["dense_units"].choices == (128, 256, 384)
    assert space["optimizer"].choices == ("adam", "rmsprop")
    assert space["num_layers"].low == 1 and isinstance(space["num_layers"].low, int)


def test_roles_are_inferred_and_overridable():
    space = SearchSpace.parse(
        [
            "dropout_2:float:0.1:0.5",
            "learning_rate:log:1e-4:1e-2",
            "dense_units:choice:128,256",
            "width:int:8:64",
            "scale:float:1:2:structural",
            "ls:choice:0.0,0.1:runtime",
        ]
    )
    roles = {p.name: p.resolved_role for p in space.params}
    assert roles == {
        "dropout_2": "runtime",
        "learning_rate": "runtime",
        "dense_units": "structural",
        "width": "structural",
        "scale": "structural",
        "ls": "runtime",
    }
    assert space.runtime_names() == ["dropout_2", "learning_rate", "ls"]
    key = space.structure_key(
        {
            "dropout_2": 0.2,
            "learning_rate": 1e-3,
            "dense_units": 256,
            "width": 9,
            "scale": 1.5,
            "ls": 0.1,
        }
    )
    assert key == (("dense_units", 256), ("width", 9), ("scale", 1.5))


def test_log_scale_maps_through_log10():
    space = SearchSpace.parse(["learning_rate:log:1e-4:1e-2"])
    assert space.pbounds() == {"learning_rate": (-4.0, -2.0)}
    assert space.from_sampler({"learning_rate": -3.0}) == {"learning_rate": pytest.approx(1e-3)}
    assert space.to_sampler({"learning_rate": 1e-3}) == {"learning_rate": pytest.approx(-3.0)}


def test_int_and_choice_bounds_for_bayes_opt():
    space = SearchSpace.parse(["n:int:1:4", "units:choice:128,256"])
    bounds = space.pbounds()
    assert bounds["n"] == (1, 4, int)
    assert type(bounds["units"]).__name__ == "CategoricalParameter"
    assert bounds["units"].categories == [128, 256]
    assert space.from_sampler({"n": 2.6, "units": 256}) == {"n": 3, "units": 256}


def test_every_suggestion_of_bayes_opt_lands_in_the_space():
    from bayes_opt import BayesianOptimization

    space = SearchSpace.parse(
        [
            "lr:log:1e-5:1e-1",
            "n:int:1:4",
            "units:choice:128,256,384",
            "p:float:0:0.5",
            "width:choice:16,32",
        ]
    )
    with pytest.warns(UserWarning, match="Non-float parameters"):
        opt = BayesianOptimization(f=None, pbounds=space.pbounds(), random_state=0, verbose=0)
    for i in range(12):
        point = opt.suggest() if i >= 3 else opt.random_sample(1)[0]
        values = space.from_sampler(point)
        assert all(space[n].contains(v) for n, v in values.items()), values
        opt.register(params=space.to_sampler(values), target=-abs(math.log10(values["lr"]) + 3))


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("lr:float:0.5:0.1", "low=0.5 >= high=0.1"),
        ("lr:float:0.1:0.1", "low=0.1 >= high=0.1"),
        ("lr:log:0:0.1", "log-scale 'lr' needs bounds > 0"),
        ("lr:log:-1:0.1", "log-scale 'lr' needs bounds > 0"),
        ("units:choice:", "has no values"),
        ("units:choice:128", "single value 128"),
        ("units:choice:128,128", "lists a value twice"),
        ("lr:normal:0:1", "unknown kind 'normal'"),
        ("lr:float:a:1", "'a' in 'lr:float:a:1' is not a number"),
        ("lr:float:0.1", "a float parameter is NAME:float:LOW:HIGH"),
        ("lr", "is not NAME:KIND:LOW:HIGH"),
        ("n:int:1.5:4", "whole-number bounds"),
        ("9lr:float:0:1", "is not a valid name"),
        ("opt:choice:adam,sgd:runtime", "must have numeric values"),
    ],
)
def test_bad_params_give_one_sentence_naming_the_flag(spec, needle):
    with pytest.raises(ConfigError) as info:
        parse_param(spec)
    assert info.value.flag == "param"
    assert needle in info.value.message
    assert "\n" not in str(info.value)
    assert info.value.for_cli().startswith("--param: ")


def test_duplicate_and_empty_spaces_are_rejected():
    with pytest.raises(ConfigError, match="given more than once"):
        SearchSpace.parse(["a:float:0:1", "a:float:0:2"])
    with pytest.raises(ConfigError, match="search space is empty"):
        SearchSpace.parse([])


def test_space_from_python_values():
    space = SearchSpace.from_value(
        {
            "learning_rate": ("log", 1e-4, 1e-2),
            "dense_units": ("choice", [128, 256]),
            "dropout": {"kind": "float", "low": 0.0, "high": 0.5, "role": "runtime"},
            "width": Param("width", "int", low=2, high=8),
        }
    )
    assert [p.kind for p in space.params] == ["log", "choice", "float", "int"]
    assert SearchSpace.from_list(space.to_list()).to_list() == space.to_list()
    with pytest.raises(ConfigError, match="unknown kind 'gauss'"):
        SearchSpace.from_value({"x": ("gauss", 0, 1)})
    with pytest.raises(ConfigError, match="no 'kind'"):
        SearchSpace.from_value({"x": {"low": 0, "high": 1}})


def test_at_edge_flags_points_near_a_bound():
    space = SearchSpace.parse(["lr:log:1e-4:1e-2", "p:float:0:1", "u:choice:1,2"])
    assert space.at_edge({"lr": 1.01e-4, "p": 0.5, "u": 1}) == ["lr"]
    assert space.at_edge({"lr": 1e-3, "p": 0.995, "u": 2}) == ["p"]
    assert space.at_edge({"lr": 1e-3, "p": 0.5, "u": 2}) == []


def test_parse_fixed():
    assert parse_fixed(["dense_units=256", "dropout_1=0.1", "optimizer=adam"]) == {
        "dense_units": 256,
        "dropout_1": 0.1,
        "optimizer": "adam",
    }
    with pytest.raises(ConfigError, match="is not NAME=VALUE"):
        parse_fixed(["dense_units"])
    with pytest.raises(ConfigError, match="fixed more than once"):
        parse_fixed(["a=1", "a=2"])


def test_values_lists_every_value_of_a_choice_or_int_parameter():
    space = SearchSpace.parse(["b:choice:64,32", "n:int:2:4", "lr:log:1e-4:1e-2"])
    assert space["b"].values() == (64, 32) and space["n"].values() == (2, 3, 4)
    with pytest.raises(ValueError, match="no finite list of values"):
        space["lr"].values()


def test_a_conditional_parameter_is_active_only_under_its_parents_values(tmp_path):
    from tpu_bo.config import read_space_file

    path = tmp_path / "space.json"
    path.write_text(
        '{"model_type": ["choice", ["mlp", "cnn"]],'
        ' "filters": {"kind": "choice", "choices": [16, 32],'
        ' "active_when": [["model_type", ["cnn"]]]}}'
    )
    space = read_space_file(str(path))  # --space_file
    filters = space["filters"]
    assert filters.active_when == (("model_type", ("cnn",)),)
    assert filters.active({"model_type": "cnn"}) and not filters.active({"model_type": "mlp"})
    mlp = [space.structure_key({"model_type": "mlp", "filters": f}) for f in (16, 32)]
    assert mlp[0] == mlp[1] == (("model_type", "mlp"), ("filters", None))
    assert space.structure_key({"model_type": "cnn", "filters": 32})[1] == ("filters", 32)
    assert SearchSpace.from_list(space.to_list()).to_list() == space.to_list()  # config.json
    assert "(when model_type in {cnn})" in filters.describe()
    assert "active_when" not in space["model_type"].to_dict()  # an unconditional one: as before
    with pytest.raises(ConfigError, match="'kind' is not another hyperparameter") as e:
        SearchSpace((Param("a", "float", 0, 1, active_when=[("kind", [1])]),))
    assert e.value.flag == "param"


def test_on_bound_names_the_parameters_within_one_percent_of_a_bound():

    space = SearchSpace.parse(
        ["lr:log:1e-4:1e-2", "dropout:float:0.1:0.5", "units:int:1:8", "act:choice:a,b"]
    )
    inside = {"lr": 1e-3, "dropout": 0.3, "units": 4, "act": "a"}
    assert space.on_bound(inside) == []
    edge = {"lr": 1.04e-4, "dropout": 0.5, "units": 8, "act": "b"}  # lr: 0.9% of the log range
    assert space.on_bound(edge) == ["lr", "dropout", "units"]
    assert space.on_bound({**inside, "dropout": 0.105}) == []  # 1.25%: near, not on
