"""The output directory's files: the gfile journal, the one-writer lock, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest

from tests.conftest import ROOT
from tpu_bo.errors import ConfigError
from tpu_bo.storage import (
    JOURNAL,
    LEGACY_JOURNAL,
    GFileJournal,
    StudyDir,
    WriterLock,
    read_json,
    write_atomic,
)


def _journal_study(path, writer=True):
    storage = optuna.storages.JournalStorage(GFileJournal(str(path), writer=writer))
    if optuna.get_all_study_summaries(storage):
        return optuna.load_study(study_name="s", storage=storage)
    return optuna.create_study(study_name="s", storage=storage)


def test_the_journal_round_trips_and_optunas_own_file_backend_reads_it(tmp_path):
    path = tmp_path / JOURNAL
    study = _journal_study(path)
    for x in (1.0, 2.0):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 3)})
        trial.report(x, 1)
        study.tell(trial, x)
    again = _journal_study(path)
    assert [t.value for t in again.trials] == [t.value for t in study.trials]
    # The same format as JournalFileBackend: optuna-dashboard <file> reads it.
    theirs = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    loaded = optuna.load_study(study_name="s", storage=theirs)
    assert [t.intermediate_values for t in loaded.trials] == [{1: t.value} for t in study.trials]


def test_a_torn_last_line_is_dropped_and_the_file_repaired(tmp_path):
    path = tmp_path / JOURNAL
    study = _journal_study(path)
    study.tell(study.ask(), 1.0)
    complete = path.read_bytes()
    path.write_bytes(complete + b'{"op_code": 4, "worker')
    assert len(_journal_study(path, writer=False).trials) == 1
    assert path.read_bytes().endswith(b'"worker')  # a reader never writes
    assert len(_journal_study(path).trials) == 1
    assert path.read_bytes() == complete


def test_corruption_in_the_middle_is_one_sentence_naming_the_flag(tmp_path):
    path = tmp_path / JOURNAL
    study = _journal_study(path)
    study.tell(study.ask(), 1.0)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[0], b"not json", *lines[1:]]))
    with pytest.raises(ConfigError, match="line 2 is not valid JSON") as e:
        _journal_study(path)
    assert e.value.flag == "output_dir"


def test_a_reader_keeps_its_writes_in_memory(tmp_path):
    path = tmp_path / JOURNAL
    study = _journal_study(path)
    study.tell(study.ask(), 1.0)
    before = path.read_bytes()
    shadow = _journal_study(path, writer=False)
    shadow.tell(shadow.ask(), 2.0)
    assert len(shadow.trials) == 2
    assert path.read_bytes() == before


def test_checkpoints_round_trip_and_a_damaged_one_is_none(tmp_path):
    files = StudyDir(str(tmp_path))
    arrays = [np.arange(6.0).reshape(2, 3), np.array(3, np.int64)]
    name = files.save_checkpoint(7, {"epoch": 2}, arrays)
    meta, loaded = files.load_checkpoint(name)
    assert meta == {"epoch": 2}
    for a, b in zip(arrays, loaded, strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / name).write_bytes(b"garbage")
    assert files.load_checkpoint(name) is None
    files.remove(name)
    assert not files.exists(name)
    assert StudyDir(str(tmp_path), writer=False).save_checkpoint(8, {}, arrays)
    assert not files.exists("inflight/trial_0008.npz")


def test_write_atomic_and_read_json(tmp_path):
    path = str(tmp_path / "a.json")
    write_atomic(path, json.dumps({"a": 1}))
    write_atomic(path, json.dumps({"b": 2}))
    assert read_json(path) == {"b": 2}
    assert read_json(str(tmp_path / "missing.json")) is None


def test_a_legacy_directory_is_refused_in_one_sentence(tmp_path):
    (tmp_path / LEGACY_JOURNAL).write_text("{}\n")
    with pytest.raises(ConfigError, match="first version") as e:
        StudyDir(str(tmp_path)).check_not_legacy()
    assert e.value.flag == "output_dir"


_HOLD = """
import sys, time
from tpu_bo.storage import WriterLock
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
    import tpu_bo.storage as storage

    monkeypatch.setattr(storage, "LEASE_TTL", 1.5)
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
