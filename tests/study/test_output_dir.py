"""The output directory's files: checkpoints, atomic writes, a legacy directory refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tpu_bo.errors import ConfigError
from tpu_bo.records import Checkpoint
from tpu_bo.study.output_dir import LEGACY_JOURNAL, OutputDir, read_json, write_atomic


def test_checkpoints_round_trip_and_a_damaged_one_is_none(tmp_path):
    files = OutputDir(str(tmp_path))
    arrays = [np.arange(6.0).reshape(2, 3), np.array(3, np.int64)]
    history = [{"epoch": 1.0, "val_accuracy": 0.5}, {"epoch": 2.0, "val_accuracy": 0.6}]
    saved = Checkpoint(2, history, arrays[:1], arrays[1:], steps=9, seconds=1.5)
    name = files.save_checkpoint(7, saved)
    loaded = files.load_checkpoint(name)
    assert (loaded.epoch, loaded.history, loaded.steps, loaded.seconds) == (2, history, 9, 1.5)
    for a, b in zip(arrays, [*loaded.model, *loaded.optimizer], strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / name).write_bytes(b"garbage")
    assert files.load_checkpoint(name) is None
    files.remove(name)
    assert not files.exists(name)
    assert OutputDir(str(tmp_path), writer=False).save_checkpoint(8, saved)
    assert not files.exists("inflight/trial_0008.npz")


def test_a_checkpoint_with_executions_round_trips_in_one_file(tmp_path):
    files = OutputDir(str(tmp_path))

    def part(k, n_optimizer):
        history = [{"epoch": 1.0, "val_loss": 0.5 + k}]
        optimizer = [np.full(2, 10.0 * k + i) for i in range(n_optimizer)]
        return Checkpoint(1, history, [np.full(3, float(k))], optimizer, steps=4 + k, seconds=k)

    first = part(0, 1)
    first.executions = [part(1, 2), part(2, 0)]
    name = files.save_checkpoint(3, first)
    assert files.checkpoints() == [name]
    loaded = files.load_checkpoint(name)
    for want, got in zip([first, *first.executions], [loaded, *loaded.executions], strict=True):
        assert (got.epoch, got.history, got.steps, got.seconds) == (
            want.epoch,
            want.history,
            want.steps,
            want.seconds,
        )
        for a, b in zip([*want.model, *want.optimizer], [*got.model, *got.optimizer], strict=True):
            np.testing.assert_array_equal(a, b)
        assert len(got.optimizer) == len(want.optimizer)
    assert not loaded.executions[0].executions


def test_write_atomic_and_read_json(tmp_path):
    path = str(tmp_path / "a.json")
    write_atomic(path, json.dumps({"a": 1}))
    write_atomic(path, json.dumps({"b": 2}))
    assert read_json(path) == {"b": 2}
    assert read_json(str(tmp_path / "missing.json")) is None


def test_a_legacy_directory_is_refused_in_one_sentence(tmp_path):
    (tmp_path / LEGACY_JOURNAL).write_text("{}\n")
    with pytest.raises(ConfigError, match="first version") as e:
        OutputDir(str(tmp_path)).check_not_legacy()
    assert e.value.flag == "output_dir"
