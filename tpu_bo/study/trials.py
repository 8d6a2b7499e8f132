"""Optuna's trials as tpu_bo's typed records: the one place that knows how a trial is stored.

A tpu_bo trial is an Optuna trial whose user attributes carry what Optuna has no field for:
``seed``, ``source``, ``history``, ``target``, ``best_epoch``, ``error``, ``steps``,
``seconds``, ``traces``, ``width``, ``optimizer`` (its Keras class; absent in older studies),
``resumed_from_epoch``, ``repeat_of`` (``--repeat_best``), ``checkpoint`` (its ``inflight/``
file), ``pbt_schedule`` (a PBT member), and in a shared study ``worker`` and ``takeovers``.
:func:`record` reads them into a :class:`TrialRecord`.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tpu_bo.records import SCHEDULE, Status, TrialRecord

STATUS = {
    TrialState.RUNNING: Status.RUNNING,
    TrialState.WAITING: Status.RUNNING,
    TrialState.COMPLETE: Status.OK,
    TrialState.PRUNED: Status.PRUNED,
    TrialState.FAIL: Status.FAILED,
}
STATE = {Status.OK: TrialState.COMPLETE, Status.PRUNED: TrialState.PRUNED}  # else FAIL
REPEAT_OF = "repeat_of"


def record(t: FrozenTrial) -> TrialRecord:
    """The typed record of one of Optuna's trials."""
    a = t.user_attrs
    target = a.get("target")
    return TrialRecord(
        number=t.number,
        status=STATUS[t.state],
        params=dict(t.params),
        target=target if _finite(target) else None,
        seed=a.get("seed"),
        source=a.get("source"),
        history=tuple(a.get("history", ())),
        error=a.get("error"),
        seconds=float(a.get("seconds", 0.0)),
        steps=int(a.get("steps", 0)),
        best_epoch=a.get("best_epoch"),
        traces=int(a.get("traces", 0)),
        width=int(a.get("width", 1)),
        resumed_from_epoch=a.get("resumed_from_epoch"),
        repeat_of=a.get(REPEAT_OF),
        schedule=tuple(a.get(SCHEDULE, ())),
        optimizer=a.get("optimizer"),
        executions=tuple(a.get("executions", ())),
        finished_at=t.datetime_complete.isoformat(timespec="seconds")
        if t.datetime_complete
        else None,
    )


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
