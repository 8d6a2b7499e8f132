"""A study shared by many workers through a database (``--storage=postgresql://`` or ``sqlite://``).

:class:`Crew` is one worker's side (identity, exact budget, heartbeats, takeover, telling once);
``tpu_bo.study.shared.rdb`` is the database side (retries through an outage, the study lock,
orphans); :class:`LocalPostgres` starts a throw-away server for tests, benchmarks and trying
many workers on one machine.
"""

from tpu_bo._lazy import exports

__all__ = ["Crew", "LocalPostgres", "TakenOver"]
__getattr__, __dir__ = exports(
    __name__,
    {"Crew": "crew", "LocalPostgres": "local_postgres", "TakenOver": "crew"},
)
