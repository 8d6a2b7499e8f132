"""--space_file: a search space from JSON, in either form, and errors naming the flag."""

from __future__ import annotations

import json

import pytest

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.space import SearchSpace
from tpu_bo.space_file import read_space_file

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
