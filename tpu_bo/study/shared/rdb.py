"""A study in a database that many workers share (``--storage=postgresql://...`` or ``sqlite:///...``).

Optuna's RDB storage keeps the trials; this module adds what several workers of one study need
from it (:class:`tpu_bo.study.study.Study` uses it):

* :func:`open_storage`: Optuna's ``RDBStorage`` with its heartbeats on (``heartbeat_interval``,
  ``grace_period``), wrapped in :class:`Retrying`: a database that goes away is retried with
  backoff, one line per attempt, until it is back or ``--storage_patience`` seconds have passed
  (then one sentence naming ``--storage``);
* :class:`StudyLock`: one study-wide lock in the database itself (a PostgreSQL advisory lock;
  an ``flock`` beside a SQLite file), released by the server when its holder dies. A worker
  holds it to ask a trial (so the budget is exact and enqueued structures are not taken by
  another worker), to take over a stale trial, and to tell one;
* :class:`Heartbeats`: a thread recording a heartbeat for each of this worker's trials;
* :func:`orphans`: the RUNNING trials nobody beats for: a stale heartbeat, a worker that let
  its trials go on Ctrl-C, or (a kill between creating a trial and its first beat) none at all.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from tpu_bo.errors import ConfigError, first_line

SCHEMES = ("postgresql", "sqlite")
# Optuna warns when heartbeats are used outside Study.optimize; ask/tell is our loop, and the
# heartbeats are recorded by Heartbeats below.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


class _QuietOutage(logging.Filter):
    """Drops Optuna's own multi-line report of a failed query (the SQL and its parameters):
    :class:`Outage` says in one line that the database is unreachable, and retries."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Caught an error from sqlalchemy")


logging.getLogger("optuna.storages._rdb.storage").addFilter(_QuietOutage())
RELEASED = "released"  # a trial's ``worker`` attribute after its worker let it go
# A server that answers with these refuses for good: no point in retrying.
REFUSED = ("authentication failed", "does not exist", "no password supplied", "pg_hba.conf")


def scheme(url: str) -> str:
    """``postgresql`` for ``postgresql+psycopg://...``, and so on."""
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def is_shared(url: str | None) -> bool:
    """Whether ``url`` is a database several workers can share."""
    return bool(url) and scheme(url) in SCHEMES


def where(url: str) -> str:
    """The URL without its password, to print."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _unreachable(e: BaseException) -> BaseException | None:
    """The connection error behind ``e`` (Optuna wraps SQLAlchemy's), or None."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return seen
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Outage:
    """Retries calls while the database is unreachable, with backoff, printing one line per
    attempt (shared by every thread of the worker, so an outage is a few lines, not a storm).

    Args:
      url: The storage URL (printed without its password).
      patience: Seconds of retrying after which the worker gives up, naming ``--storage``.
      say: Prints one line.
    """

    def __init__(self, url: str, patience: float, say: Callable[[str], None] | None = None):
        self.url, self.patience = where(url), patience
        self.say = say or (lambda line: print(f"tpu_bo: {line}", file=sys.stderr, flush=True))
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_said = 0.0
        self.outages = 0  # how many times the database went away (the tests read it)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        delay = 1.0
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                cause = _unreachable(e)
                if cause is None:
                    raise
                if any(words in str(cause) for words in REFUSED):
                    raise ConfigError(
                        "storage",
                        f"the study's database {self.url} refused this worker "
                        f"({first_line(cause)}); check the user, password and database name.",
                    ) from None
                self._failed(cause, delay)
                time.sleep(delay)
                delay = min(2 * delay, 30.0)
                continue
            self._back()
            return result

    def _failed(self, cause: BaseException, delay: float) -> None:
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                self.outages += 1
            down = now - self._down_since
            if down > self.patience:
                raise ConfigError(
                    "storage",
                    f"the study's database {self.url} has been unreachable for {down:.0f} s "
                    f"({first_line(cause)}); every told trial is kept there: rerun the same "
                    "command once it is back.",
                ) from None
            if now - self._last_said >= delay:
                self._last_said = now
                self.say(
                    f"the study's database {self.url} is unreachable ({first_line(cause, 80)});"
                    f" retrying in {delay:.0f} s, for up to {self.patience:.0f} s"
                )

    def _back(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                self.say(f"the study's database is back after {self._seconds_down():.0f} s")
                self._down_since = None

    def _seconds_down(self) -> float:
        return time.monotonic() - (self._down_since or time.monotonic())


class Retrying(BaseStorage, BaseHeartbeat):
    """An Optuna storage whose every call goes through an :class:`Outage`."""

    def __init__(self, backend: RDBStorage, outage: Outage) -> None:
        self.backend, self.outage = backend, outage


def _forward(name: str) -> Callable[..., Any]:
    def method(self: Retrying, *args: Any, **kwargs: Any) -> Any:
        return self.outage.call(getattr(self.backend, name), *args, **kwargs)

    method.__name__ = name
    return method


for _name in sorted({*dir(BaseStorage), *dir(BaseHeartbeat)} - {"_abc_impl"}):
    if not _name.startswith("__"):
        setattr(Retrying, _name, _forward(_name))
Retrying.__abstractmethods__ = frozenset()


def open_storage(url: str, *, heartbeat: int, grace: int, outage: Outage) -> Retrying:
    """Optuna's RDB storage at ``url`` with heartbeats, retried through ``outage``."""
    engine: dict[str, Any] = {}  # a connection lost to a restart fails once and is retried
    if scheme(url) == "sqlite":
        engine["connect_args"] = {"timeout": 60}  # wait for another process's write

    def create() -> RDBStorage:
        with warnings.catch_warnings(), _schema_lock(url):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=grace
            )

    return Retrying(outage.call(create), outage)


SCHEMA_LOCK = 0x7470755F626F  # one advisory lock key for creating Optuna's tables


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Serialises the creation of Optuna's tables: workers that start together on a new
    PostgreSQL database would otherwise race to create the same types and fail."""
    if scheme(url) != "postgresql":
        yield  # SQLite serialises its own schema changes
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        release = _advisory_lock(engine, SCHEMA_LOCK)
        try:
            yield
        finally:
            release()
    finally:
        engine.dispose()


def _advisory_lock(engine: sqlalchemy.Engine, key: int) -> Callable[[], None]:
    """Takes PostgreSQL's session advisory lock ``key`` on a connection of its own (waiting for
    its holder); returns what releases it. The server releases it if this process dies."""
    connection = engine.connect()
    try:
        connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({key})"))
    except BaseException:
        connection.close()
        raise

    def release() -> None:
        try:
            connection.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({key})"))
        finally:
            connection.close()

    return release


class StudyLock:
    """One lock per study, shared by every worker through the database (see the module
    docstring). Re-entrant in one thread; other threads of the same worker wait like other
    workers."""

    def __init__(self, storage: Retrying, study_name: str) -> None:
        self.storage, self.name = storage, study_name
        self.key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big") >> 1
        self._local = threading.local()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        release = self.storage.outage.call(self._acquire)
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with contextlib.suppress(Exception):  # a lost connection released it already
                release()

    def _acquire(self) -> Callable[[], None]:
        url = str(self.storage.backend.url)
        if scheme(url) == "sqlite":
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if not path:
                return lambda: None  # an in-memory database: one process
            f = open(path + ".tpu_bo-lock", "a")  # noqa: SIM115 - closed by the release
            fcntl.flock(f, fcntl.LOCK_EX)
            return f.close
        return _advisory_lock(self.storage.backend.engine, self.key)


class Heartbeats:
    """Records a heartbeat every ``interval`` seconds for each trial ``live()`` names."""

    def __init__(self, storage: Retrying, interval: float, live: Callable[[], list[int]]):
        self.storage, self.interval, self.live = storage, interval, live
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tpu_bo-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in self.live():
                try:
                    self.storage.record_heartbeat(trial_id)
                except ConfigError:
                    return  # the database is gone for good; the main thread says so
                except Exception:  # noqa: BLE001,S112 - a trial told meanwhile; go on
                    continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval)  # a daemon: a beat stuck retrying is left


def orphans(storage: Retrying, study: optuna.Study, grace: float) -> list[FrozenTrial]:
    """The study's RUNNING trials that no live worker beats for, by number."""
    stale = set(storage._get_stale_trial_ids(study._study_id))
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    beating = storage.outage.call(_beating, storage.backend, [t._trial_id for t in running])
    now = datetime.datetime.now()
    out = []
    for t in running:
        never = t._trial_id not in beating and t.datetime_start is not None
        never = never and (now - t.datetime_start).total_seconds() > grace
        if t._trial_id in stale or never or t.user_attrs.get("worker") == RELEASED:
            out.append(t)
    return sorted(out, key=lambda t: t.number)


def _beating(backend: RDBStorage, trial_ids: list[int]) -> set[int]:
    """The trials among ``trial_ids`` that have a heartbeat row."""
    if not trial_ids:
        return set()
    from optuna.storages._rdb import models

    with sqlalchemy.orm.Session(backend.engine) as session:
        rows = session.query(models.TrialHeartbeatModel.trial_id).filter(
            models.TrialHeartbeatModel.trial_id.in_(trial_ids)
        )
        return {r[0] for r in rows}


def count_asked(storage: Retrying, study_id: int) -> int:
    """The study's trials that count against its budget: every state but WAITING, less the
    repeats (``repeat_of``); one query, however many trials the study holds."""
    from optuna.storages._rdb import models

    def count() -> int:
        trial, attr = models.TrialModel, models.TrialUserAttributeModel
        repeats = sqlalchemy.select(attr.trial_id).where(attr.key == "repeat_of")
        with sqlalchemy.orm.Session(storage.backend.engine) as session:
            query = session.query(sqlalchemy.func.count(trial.trial_id)).filter(
                trial.study_id == study_id,
                trial.state != TrialState.WAITING,
                trial.trial_id.not_in(repeats),
            )
            return int(query.scalar())

    return storage.outage.call(count)


def worker_name() -> str:
    """This worker, as trials record it: host, process and a random tag."""
    return f"{os.uname().nodename}:{os.getpid()}:{os.urandom(2).hex()}"
