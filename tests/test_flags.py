"""Every flagfile in flags/ documents itself, parses, and (for CPU setups) runs."""

from __future__ import annotations

import json
import pathlib

import pytest
from absl import flags

from tests.conftest import ROOT, run_cli
from tpu_bo import main

FLAGFILES = sorted((ROOT / "flags").glob("*.flags"))


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
    try:
        flags.FLAGS(["tpu_bo", f"--flagfile={path}"])
        config = main.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    assert config.total_trials >= 2


def test_cpu_smoke_flagfile_runs(tmp_path):
    run = run_cli(
        "--flagfile=flags/cpu_smoke.flags",
        "--init_points=1",
        "--n_iter=1",
        "--epochs=1",
        f"--output_dir={tmp_path}",
    )
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 2


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
