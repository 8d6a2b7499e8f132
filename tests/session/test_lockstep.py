"""The shared-directory check of a multi-worker study, with TF_CONFIG faked in one process."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from tpu_bo.errors import ConfigError
from tpu_bo.session import lockstep as workers
from tpu_bo.session.lockstep import check_shared_output_dir
from tpu_bo.study.output_dir import WORKERS_CHECK as CHECK_FILE


def fake_cluster(monkeypatch, index, workers=2):
    cluster = {"worker": [f"host{i}:2222" for i in range(workers)]}
    tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))


def test_a_single_process_study_checks_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "study"
    check_shared_output_dir(tf.distribute.get_strategy(), str(out), records=3)
    assert not out.exists()


def test_the_chief_that_reads_its_own_token_passes_and_removes_the_file(tmp_path, monkeypatch):
    fake_cluster(monkeypatch, index=0)
    written = []
    write = workers.write_atomic
    monkeypatch.setattr(workers, "write_atomic", lambda p, t: (written.append(t), write(p, t)))
    out = tmp_path / "study"
    check_shared_output_dir(tf.distribute.OneDeviceStrategy("/cpu:0"), str(out), records=3)
    (text,) = written
    assert 0 < json.loads(text)["token"] < 2**20
    assert out.is_dir() and not (out / CHECK_FILE).exists()


def test_replicas_of_one_worker_count_once_in_the_all_reduce(tmp_path, monkeypatch):
    fake_cluster(monkeypatch, index=0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert workers._all_reduce_sum(strategy, [3.0, 1.5]) == [3.0, 1.5]
    check_shared_output_dir(strategy, str(tmp_path), records=0)
    assert list(tmp_path.iterdir()) == []


def test_a_chief_reading_another_token_stops_with_one_sentence(tmp_path, monkeypatch):
    fake_cluster(monkeypatch, index=0)
    monkeypatch.setattr(workers, "read_json", lambda path: {"token": -1})
    with pytest.raises(ConfigError) as e:
        check_shared_output_dir(tf.distribute.OneDeviceStrategy("/cpu:0"), str(tmp_path), records=0)
    assert e.value.flag == "output_dir" and "worker(s) 0 did not see" in e.value.message
    assert str(tmp_path) in e.value.message
    assert not (tmp_path / CHECK_FILE).exists()  # cleaned up even so


def test_a_worker_that_cannot_read_the_chiefs_file_stops(tmp_path, monkeypatch):
    fake_cluster(monkeypatch, index=1, workers=3)  # not the chief: it writes nothing
    with pytest.raises(ConfigError, match=r"worker\(s\) 1 did not see the chief's files"):
        check_shared_output_dir(tf.distribute.OneDeviceStrategy("/cpu:0"), str(tmp_path), records=0)
    assert list(tmp_path.iterdir()) == []
