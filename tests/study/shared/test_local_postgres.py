"""The throw-away PostgreSQL server: run as a non-root user, on 127.0.0.1 only, and its CLI."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
import sqlalchemy

from tests.conftest import ROOT


def test_the_server_runs_as_a_non_root_user_on_localhost(postgres):
    pid_file = os.path.join(postgres.data, "postmaster.pid")
    owner = pwd.getpwuid(os.stat(pid_file).st_uid).pw_name
    assert owner != "root"
    engine = sqlalchemy.create_engine(postgres.url)
    with engine.connect() as connection:
        user = connection.execute(sqlalchemy.text("SELECT current_user")).scalar()
        listen = connection.execute(sqlalchemy.text("SHOW listen_addresses")).scalar()
    engine.dispose()
    assert (user, listen) == ("tpu_bo", "127.0.0.1")


def test_the_cli_prints_the_url_and_ctrl_c_stops_the_server():
    base = tempfile.mkdtemp(prefix="tpu_bo_pg_test_")
    os.chmod(base, 0o755)  # the server's user must reach the directory
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpu_bo.study.shared.local_postgres", os.path.join(base, "pg")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    line = proc.stdout.readline()
    assert line.startswith("PostgreSQL is up: --storage=postgresql://tpu_bo@127.0.0.1:"), line
    url = line.split("--storage=", 1)[1].strip()
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    engine.dispose()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not os.path.exists(os.path.join(base, "pg", "data", "postmaster.pid"))  # stopped
    assert os.path.exists(os.path.join(base, "pg", "data", "PG_VERSION"))  # a named dir is kept
    shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_a_directory_the_server_user_cannot_reach_is_one_sentence(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    proc = subprocess.run(
        [sys.executable, "-m", "tpu_bo.study.shared.local_postgres", str(private / "pg")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("tpu_bo.study.shared.local_postgres: the user")
    assert "cannot reach" in proc.stderr and "Traceback" not in proc.stderr
