"""The journal: one line per trial, torn tails repaired, atomic rewrites."""

from __future__ import annotations

import json

import pytest

from tpu_bo.errors import ConfigError
from tpu_bo.journal import Journal, read_json, write_atomic


def test_append_and_load_round_trip(tmp_path):
    journal = Journal(str(tmp_path / "study"))
    assert journal.load() == []
    for i in range(3):
        journal.append({"trial": i + 1, "target": 0.5 + i / 10})
    assert [r["trial"] for r in Journal(str(tmp_path / "study")).load()] == [1, 2, 3]
    lines = (tmp_path / "study" / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_a_torn_last_line_is_dropped_and_the_file_repaired(tmp_path):
    journal = Journal(str(tmp_path))
    journal.append({"trial": 1})
    with open(journal.path, "a") as f:
        f.write('{"trial": 2, "par')  # a kill in the middle of a write
    assert Journal(str(tmp_path)).load() == [{"trial": 1}]
    journal.append({"trial": 2})
    assert [r["trial"] for r in journal.load()] == [1, 2]
    assert open(journal.path).read() == '{"trial": 1}\n{"trial": 2}\n'


def test_a_complete_record_missing_its_newline_is_kept(tmp_path):
    journal = Journal(str(tmp_path))
    with open(journal.path, "w") as f:
        f.write('{"trial": 1}\n{"trial": 2}')
    assert [r["trial"] for r in journal.load()] == [1, 2]
    journal.append({"trial": 3})
    assert [r["trial"] for r in journal.load()] == [1, 2, 3]


def test_corruption_in_the_middle_is_an_error(tmp_path):
    journal = Journal(str(tmp_path))
    with open(journal.path, "w") as f:
        f.write('{"trial": 1}\nnot json\n{"trial": 3}\n')
    with pytest.raises(ConfigError, match="line 2 is not valid JSON") as info:
        journal.load()
    assert info.value.flag == "output_dir"


def test_write_atomic_replaces_whole_files(tmp_path):
    path = str(tmp_path / "summary.json")
    write_atomic(path, '{"a": 1}')
    write_atomic(path, '{"a": 2}')
    assert read_json(path) == {"a": 2}
    assert read_json(str(tmp_path / "missing.json")) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_non_chief_worker_reads_but_never_writes(tmp_path):
    chief = Journal(str(tmp_path))
    chief.append({"trial": 1})
    worker = Journal(str(tmp_path), writer=False)
    worker.append({"trial": 2})
    worker.write_file("summary.json", "{}")
    assert worker.load() == [{"trial": 1}]
    assert not (tmp_path / "summary.json").exists()
    assert not Journal(str(tmp_path / "new"), writer=False).load()
    assert not (tmp_path / "new").exists()
