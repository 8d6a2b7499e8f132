"""What reaches a terminal (tpu_bo.terminal): TensorFlow's load-time INFO lines, kept off it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT
from tpu_bo import terminal

BANNER = (
    "I0000 00:00:1796318442.580243   19696 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors.\n"
)
NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
REAL = "W0000 00:00:1796318442.580243   19696 cuda.cc:1] a real warning stays\n"


def _load(monkeypatch) -> None:
    """Writes what TF 2.21 writes at load time, as if TensorFlow were not imported yet."""
    monkeypatch.delitem(sys.modules, "tensorflow")
    with terminal.quiet_tensorflow_load():
        for line in (NOTICE, BANNER, REAL, NOTICE, BANNER):
            os.write(2, line.encode())


def test_the_load_time_info_lines_go_and_everything_else_is_written_back(monkeypatch, capfd):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    _load(monkeypatch)
    assert capfd.readouterr().err == REAL


def test_a_users_own_tf_log_level_wins(monkeypatch, capfd):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    terminal.set_tf_log_level()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    _load(monkeypatch)
    assert capfd.readouterr().err == NOTICE + BANNER + REAL + NOTICE + BANNER
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    terminal.set_tf_log_level()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == terminal.TF_LOG_LEVEL


def test_a_notebooks_first_use_of_tpu_bo_loads_tensorflow_without_its_banner():
    """As a notebook cell does: ``tpu_bo.run_study`` (a lazy export) imports TensorFlow."""
    code = "import sys, tpu_bo; tpu_bo.run_study; print('tensorflow' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert run.stdout.strip() == "True"
    assert "oneDNN" not in run.stderr and "absl::InitializeLog" not in run.stderr, run.stderr
