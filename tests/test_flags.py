"""The flags are the Config's fields; every flagfile in flags/ documents itself, parses, runs."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest
from absl import flags

from tests.conftest import ROOT, run_cli
from tpu_bo import main
from tpu_bo.config import Config, flag_name
from tpu_bo.errors import ConfigError
from tpu_bo.results import load_records

FLAGFILES = sorted((ROOT / "flags").glob("*.flags"))
RENAMED = {"space": "param"}  # the one field whose flag has another name


def _parsed(*args: str) -> Config:
    try:
        flags.FLAGS(["tpu_bo", *args])
        return main.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()


def test_every_config_field_is_exactly_one_flag_with_its_default_and_help():
    ours = {flag.name: flag for flag in flags.FLAGS.get_flags_for_module(main)}
    fields = dataclasses.fields(Config)
    assert sorted(RENAMED.get(f.name, f.name) for f in fields) == sorted(ours)
    defaults = Config()
    for field in fields:
        flag = ours[flag_name(field)]
        assert flag_name(field) == RENAMED.get(field.name, field.name)
        assert flag.help.strip() and field.metadata["help"] in flag.help, field.name
        if field.name in ("space", "fixed"):
            assert isinstance(flag, flags.MultiFlag) and flag.default is None
        else:
            assert flag.default == getattr(defaults, field.name), field.name
        if field.metadata["choices"]:
            assert flag.parser.enum_values == list(field.metadata["choices"])
        if field.metadata["lower_bound"] is not None:
            assert flag.parser.lower_bound == field.metadata["lower_bound"]
        if isinstance(getattr(defaults, field.name), bool):
            assert isinstance(flag, flags.BooleanFlag), field.name
    assert ours["optimizer"].help.startswith("<rmsprop|adam|sgd|adamw>: ")
    assert ours["model"].parser.flag_type() == "string"


def test_default_flags_give_the_default_config_and_flags_text_lists_every_flag():
    assert _parsed() == Config()
    text = main.flags_text()
    for name in ("accelerator", "sampler", "min_epochs", "reduction_factor", "storage"):
        assert f"--{name}=" in text
    assert "--nowait_for_lock" in text and "--download" in text


def test_flags_text_repeats_a_run(tmp_path):
    args = (
        "--sampler=tpe",
        "--prune=asha",
        "--min_epochs=2",
        "--reduction_factor=4",
        "--storage=sqlite:///study.db",
        "--study_name=mine",
        "--wait_for_lock",
        "--optimizer=adamw",
        "--param=learning_rate:log:1e-4:1e-2",
        "--fixed=dense_units=256",
        "--nodownload",
        "--xi=0.5",
    )
    config = _parsed(*args)
    assert (config.sampler, config.prune, config.min_epochs) == ("tpe", "asha", 2)
    assert (config.reduction_factor, config.storage, config.study_name) == (
        4,
        "sqlite:///study.db",
        "mine",
    )
    assert config.wait_for_lock and not config.download and config.xi == 0.5
    assert config.space.names == ["learning_rate"] and config.fixed == {"dense_units": 256}
    try:
        flags.FLAGS(["tpu_bo", *args])
        text = main.flags_text()
    finally:
        flags.FLAGS.unparse_flags()
    (tmp_path / "flags.txt").write_text(text)
    assert _parsed(f"--flagfile={tmp_path / 'flags.txt'}") == config


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--storage=study.db"], "storage"),
        (["--prune=median", "--epochs=2", "--min_epochs=3"], "min_epochs"),
        (["--param=learning_rate:gauss:0:1"], "param"),
        (["--fixed=dense_units"], "fixed"),
    ],
)
def test_bad_values_name_their_flag(args, flag):
    with pytest.raises(ConfigError) as info:
        _parsed(*args)
    assert info.value.flag == flag


@pytest.mark.parametrize(
    "arg", ["--reduction_factor=1", "--min_epochs=0", "--sampler=cmaes", "--prune=sometimes"]
)
def test_flag_bounds_and_choices_are_checked_while_parsing(arg):
    with pytest.raises(flags.IllegalFlagValueError, match=arg.split("=")[0].lstrip("-")):
        _parsed(arg)


def test_there_are_flagfiles():
    assert len(FLAGFILES) >= 3


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: p.name)
def test_flagfile_opens_with_command_hardware_and_expectations(path: pathlib.Path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert f"--flagfile=flags/{path.name}" in text
    assert "Hardware:" in text and "Expected:" in text


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: p.name)
def test_flagfile_parses_into_a_valid_config(path: pathlib.Path):
    assert _parsed(f"--flagfile={path}").total_trials >= 2


def test_cpu_smoke_flagfile_runs(tmp_path):
    run = run_cli(
        "--flagfile=flags/cpu_smoke.flags",
        "--init_points=1",
        "--n_iter=1",
        "--epochs=1",
        f"--output_dir={tmp_path}",
    )
    assert run.returncode == 0, run.stderr
    assert len(load_records(str(tmp_path))) == 2


def test_mnist_blog_cpu_flagfile_runs(tmp_path, mnist_dir):
    run = run_cli(
        "--flagfile=flags/mnist_blog_cpu.flags",
        f"--data_dir={mnist_dir}",
        "--train_split=train[:5%]",
        "--eval_split=train[95%:]",
        "--test_split=",
        "--init_points=1",
        "--n_iter=1",
        f"--output_dir={tmp_path}",
    )
    assert run.returncode == 0, run.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dataset"] == "mnist" and config["epochs"] == 1
    assert [p["name"] for p in config["space"]] == ["dropout_2", "learning_rate"]
