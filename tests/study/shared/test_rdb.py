"""The database side of a shared study, against real servers: the session's PostgreSQL (and a
second one this module stops and starts), and SQLite files. Also the load test: 8 worker
processes x 40 trials through the same storage path, nothing lost or told twice."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from bench.workers import load
from tpu_bo.errors import ConfigError
from tpu_bo.study.shared.local_postgres import LocalPostgres, free_port
from tpu_bo.study.shared.rdb import (
    RELEASED,
    Outage,
    StudyLock,
    count_asked,
    is_shared,
    open_storage,
    orphans,
    where,
)


def storage_at(url: str, lines: list[str] | None = None, patience: float = 60, grace: int = 2):
    outage = Outage(url, patience, say=(lines.append if lines is not None else None))
    return open_storage(url, heartbeat=1, grace=grace, outage=outage)


def test_which_urls_are_shared_and_passwords_are_hidden():
    assert is_shared("postgresql://u@h/db") and is_shared("postgresql+psycopg://u@h/db")
    assert is_shared("sqlite:///x.db") and not is_shared("mysql://u@h/db")
    assert not is_shared("") and not is_shared(None)
    assert where("postgresql://me:secret@host:5432/db") == "postgresql://me:***@host:5432/db"


def test_a_database_restart_is_retried_until_it_is_back():
    lines: list[str] = []
    with LocalPostgres() as pg:
        storage = storage_at(pg.url, lines)
        optuna.create_study(storage=storage, study_name="restart")
        pg.stop(remove=False)
        threading.Timer(3.0, pg.start).start()
        study = optuna.load_study(storage=storage, study_name="restart")  # waits it out
        study.enqueue_trial({"x": 1.0})
        assert [t.state for t in study.get_trials()] == [TrialState.WAITING]
    assert storage.outage.outages == 1
    assert any("is unreachable" in line for line in lines), lines
    assert any("is back after" in line for line in lines), lines
    assert len(lines) <= 4, lines  # one line per attempt, not one per thread or query


def test_an_unreachable_database_stops_the_worker_in_one_sentence_naming_storage():
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/postgres"
    started = time.monotonic()
    with pytest.raises(ConfigError) as e:
        storage_at(url, [], patience=2)
    assert e.value.flag == "storage"
    assert "unreachable for" in e.value.message and "rerun the same command" in e.value.message
    assert time.monotonic() - started < 15


def test_a_database_that_refuses_the_worker_is_one_sentence_at_once(postgres):
    url = postgres.url.rsplit("/", 1)[0] + "/no_such_database"
    started = time.monotonic()
    with pytest.raises(ConfigError) as e:
        storage_at(url, [], patience=600)
    assert e.value.flag == "storage" and "refused this worker" in e.value.message
    assert "no_such_database" in e.value.message and time.monotonic() - started < 10


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_the_study_lock_admits_one_holder_at_a_time(kind, postgres, tmp_path):
    url = postgres.url if kind == "postgresql" else f"sqlite:///{tmp_path}/lock.db"
    locks = [StudyLock(storage_at(url), f"lock-{kind}") for _ in range(3)]
    inside, overlaps = [0], []

    def hold(lock: StudyLock) -> None:
        for _ in range(3):
            with lock.hold(), lock.hold():  # re-entrant in one thread
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.02)
                inside[0] -= 1

    threads = [threading.Thread(target=hold, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [1] * 9


def test_orphans_are_stale_released_or_never_beaten_trials(postgres):
    storage = storage_at(postgres.url, grace=2)
    study = optuna.create_study(storage=storage, study_name="orphans")
    stale, released, silent, live, done = (study.ask() for _ in range(5))
    for t in (stale, released, live, done):
        storage.record_heartbeat(t._trial_id)
    released.set_user_attr("worker", RELEASED)
    study.tell(done, 1.0)
    assert [t.number for t in orphans(storage, study, grace=2)] == [released.number]
    time.sleep(3)
    storage.record_heartbeat(live._trial_id)
    expected = [stale.number, released.number, silent.number]
    assert [t.number for t in orphans(storage, study, grace=2)] == expected


def test_the_budget_counts_every_asked_trial_but_waiting_ones_and_repeats(postgres):
    storage = storage_at(postgres.url)
    study = optuna.create_study(storage=storage, study_name="count")
    study.tell(study.ask(), 1.0)
    study.ask()
    study.enqueue_trial({}, user_attrs={"repeat_of": 0})
    study.ask()  # the repeat, now RUNNING
    study.enqueue_trial({})  # WAITING
    assert count_asked(storage, study._study_id) == 2


def test_eight_workers_share_a_budget_of_320_trials_without_loss_or_duplicates(postgres):
    result = load(postgres.url, workers=8, trials=40, name="load8")
    assert result["trials"] == 320 and sum(result["per_worker"]) == 320
    assert sum(1 for n in result["per_worker"] if n > 0) >= 4, result["per_worker"]
    for key in ("trials_per_second", "ask_p50_ms", "ask_p99_ms", "tell_p50_ms", "tell_p99_ms"):
        assert result[key] > 0
    print(result)
