"""The one-writer lock: refused while held, released when its holder dies, a lease on gs://."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tpu_bo.errors import ConfigError
from tpu_bo.study import writer_lock
from tpu_bo.study.writer_lock import WriterLock

_HOLD = """
import sys, time
from tpu_bo.study.writer_lock import WriterLock
lock = WriterLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(path, seconds):
    """A process that takes the lock on ``path``, holds it ``seconds`` and exits; returned
    once it holds the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_the_lock_refuses_a_second_writer_and_dies_with_its_holder(tmp_path):
    holder = hold_lock(tmp_path, 60)
    try:
        assert WriterLock(str(tmp_path)).holder()["pid"] == holder.pid  # takes nothing
        with pytest.raises(ConfigError, match=f"pid {holder.pid}") as e:
            WriterLock(str(tmp_path)).acquire()
        assert e.value.flag == "output_dir"
        assert "--wait_for_lock" in e.value.message
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    lock = WriterLock(str(tmp_path))
    assert lock.holder() is None
    lock.acquire()
    lock.release()
    assert WriterLock(str(tmp_path / "never_used")).holder() is None
    assert not (tmp_path / "never_used").exists()


def test_a_lease_on_a_filesystem_without_locks(monkeypatch):
    monkeypatch.setattr(writer_lock, "LEASE_TTL", 1.5)
    first, second = WriterLock("ram://lease"), WriterLock("ram://lease")
    first.acquire()
    with pytest.raises(ConfigError, match="another process"):
        second.acquire()
    first._stop.set()  # the holder dies: it stops renewing
    first._thread.join()
    time.sleep(1.6)
    second.acquire()
    second.release()


def test_wait_for_lock_waits_for_the_holder_to_end(tmp_path):
    holder = hold_lock(tmp_path, 2)
    try:
        started = time.monotonic()
        lock = WriterLock(str(tmp_path), wait=True)
        lock.acquire()
        assert holder.poll() is not None and time.monotonic() - started > 0.5
        lock.release()
    finally:
        holder.kill()
        holder.wait()
