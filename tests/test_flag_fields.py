"""Dataclass fields carrying their flag's metadata, and the checks that metadata drives."""

from __future__ import annotations

import dataclasses

import pytest

from tpu_bo import config
from tpu_bo.errors import ConfigError
from tpu_bo.flag_fields import check_field, flag_field, flag_name


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str = flag_field("a", "The mode.", choices=("a", "b"))
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
    }
    assert f["count"].metadata["lower_bound"] == 1 and f["space"].metadata["repeated"]
    s = Settings()
    assert (s.mode, s.count, s.ratio, s.extra) == ("a", 1, 0.5, {})
    assert Settings().extra is not s.extra  # a fresh default per instance
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mode = "b"


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
    from tpu_bo.space_file import read_space_file

    assert config.flag_name is flag_name and config.read_space_file is read_space_file
    with pytest.raises(ConfigError, match="not one of auto, tpu, gpu, cpu"):
        config.Config(accelerator="fpga").validate()
