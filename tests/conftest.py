"""Shared test setup: three logical CPU devices, the prepared MNIST, small configs.

The CPU is split into three logical devices before TensorFlow starts, so one test process can
run the default strategy, a two-replica MirroredStrategy (the multi-replica path, on CPU:0 and
CPU:1) and the TPUStrategy stand-in of tests/device/packed.py, whose replicas (CPU:1, CPU:2)
leave CPU:0 to be the host, as a TPU VM's CPU is no TPU.
"""

from __future__ import annotations

import gc
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MNIST_DIR = pathlib.Path(os.environ.get("TPU_BO_TFDS_DIR", ROOT.parent / "shared" / "tfds"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config: pytest.Config) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(3)]
    )
    # TensorFlow's, Keras's and Optuna's modules are hundreds of thousands of objects that
    # live to the end; frozen, a full collection (one after each test, below) skips them.
    import keras  # noqa: F401
    import optuna  # noqa: F401

    import tpu_bo.session.run  # noqa: F401

    gc.collect()
    gc.freeze()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Frees each test's trainers and input pipelines in the background, as ``run_study``
    does after a study (tpu_bo.data.pipeline.release_in_background): tests that build
    trainers themselves would otherwise leave the waits of tf.data's iterator destructors
    to whichever later test runs the next full collection."""
    from tpu_bo.data.pipeline import release_in_background

    release_in_background()


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    """The prepared TFDS data dir holding real MNIST (read-only)."""
    if not (MNIST_DIR / "mnist").is_dir():
        message = f"the prepared MNIST data dir {MNIST_DIR} is missing"
        if os.environ.get("TPU_BO_REQUIRE_DATA") == "1":
            pytest.fail(message + " (TPU_BO_REQUIRE_DATA=1)")
        pytest.skip(message + "; set TPU_BO_TFDS_DIR")
    return str(MNIST_DIR)


@pytest.fixture(scope="session")
def postgres() -> Any:
    """A throw-away PostgreSQL server for the session (tpu_bo.study.shared.local_postgres): its
    own data directory in /tmp, a free port on 127.0.0.1, run as a non-root user. Tests use
    their own study names; a test that stops it starts it again on the same port."""
    from tpu_bo.study.shared.local_postgres import LocalPostgres, binaries

    if binaries() is None:
        if os.environ.get("TPU_BO_REQUIRE_DATA") == "1":
            pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed (TPU_BO_REQUIRE_DATA=1)")
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    server = LocalPostgres().start()
    yield server
    server.stop()


def start_cli(*args: str, env: dict[str, str | None] | None = None) -> subprocess.Popen:
    """Starts ``python -m tpu_bo.main`` with ``args`` in the background, text pipes; ``env``
    adds variables, and takes out those it maps to ``None``.

    The child gets the default SIGINT disposition: a test run started as a background job of
    a non-interactive shell inherits SIGINT *ignored*, and Python then never raises
    KeyboardInterrupt, so a Ctrl-C test would test the shell, not tpu_bo.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "tpu_bo.main", *args],
        cwd=ROOT,
        env={
            name: value
            for name, value in {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}.items()
            if value is not None
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(
    *args: str, timeout: float = 600, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python -m tpu_bo.main`` with ``args`` (and more ``env``) to the end."""
    proc = start_cli(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
