"""The gfile journal: Optuna's format, a torn last line repaired, a reader's writes in memory."""

from __future__ import annotations

import optuna
import pytest

from tpu_bo.errors import ConfigError
from tpu_bo.study.journal import GFileJournal
from tpu_bo.study.output_dir import JOURNAL


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
