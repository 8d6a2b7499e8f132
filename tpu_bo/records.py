"""A study's trials as tpu_bo reads them: typed, frozen, built from Optuna's in one place.

* :class:`Status`: ``running``, ``ok``, ``pruned``, ``failed``.
* :class:`Trial`: what :meth:`tpu_bo.engine.Study.ask` hands out.
* :class:`Outcome`: what :meth:`tpu_bo.engine.Study.tell` takes when you train yourself.
* :class:`TrialRecord`: a trial read back from the storage, with :func:`best` over them.
* :class:`StudyResult`: what :func:`tpu_bo.run_study` returns.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState


class Status(str, enum.Enum):
    """A trial's state, as tpu_bo reports it."""

    RUNNING = "running"
    OK = "ok"
    PRUNED = "pruned"
    FAILED = "failed"


_STATUS = {
    TrialState.RUNNING: Status.RUNNING,
    TrialState.WAITING: Status.RUNNING,
    TrialState.COMPLETE: Status.OK,
    TrialState.PRUNED: Status.PRUNED,
    TrialState.FAIL: Status.FAILED,
}
_STATE = {Status.OK: TrialState.COMPLETE, Status.PRUNED: TrialState.PRUNED}
SCHEDULE = "pbt_schedule"  # a PBT member's schedule attribute (tpu_bo.pbt)


@dataclasses.dataclass(frozen=True)
class Trial:
    """A trial handed out by :meth:`Study.ask`; it is RUNNING in the storage.

    Attributes:
      number: Optuna's trial number (0, 1, ...).
      params: A value for every parameter of the space.
      seed: Seeds its initial weights and dropout.
      source: ``random`` (a starting point) or ``guided`` (the sampler's model chose it).
      resume: A saved state to continue (a pack's ``TrialState``), or ``None``.
    """

    number: int
    params: dict[str, Any]
    seed: int
    source: str
    resume: Any = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a trial produced, for :meth:`Study.tell` when you train it yourself.

    A pack's ``TrialResult`` has the same fields. ``status`` is ``ok``, ``pruned`` or
    ``failed``; ``history`` holds one dict per finished epoch with ``epoch`` and the objective.
    """

    status: str
    history: Sequence[Mapping[str, float]]
    error: str | None = None
    steps: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int | None = None


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """A finished trial, read from the storage.

    ``target`` is the best value of the objective over the trial's epochs (a pruned trial's
    best so far); ``history`` holds one dict of metrics per finished epoch.
    """

    number: int
    status: Status
    params: dict[str, Any]
    target: float | None
    seed: int | None = None
    source: str | None = None
    history: tuple[dict[str, float], ...] = ()
    error: str | None = None
    seconds: float = 0.0
    steps: int = 0
    best_epoch: int | None = None
    traces: int = 0
    width: int = 1
    resumed_from_epoch: int | None = None
    finished_at: str | None = None
    repeat_of: int | None = None
    schedule: tuple[dict[str, Any], ...] = ()  # a PBT member's (tpu_bo.pbt)

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics of the best epoch (without its ``epoch``)."""
        if self.best_epoch is None:
            return {}
        epoch = self.history[self.best_epoch - 1]
        return {k: v for k, v in epoch.items() if k != "epoch"}

    @classmethod
    def from_frozen(cls, t: FrozenTrial) -> TrialRecord:
        a = t.user_attrs
        history = tuple(a.get("history", ()))
        target = a.get("target")
        return cls(
            number=t.number,
            status=_STATUS[t.state],
            params=dict(t.params),
            target=target if _finite(target) else None,
            seed=a.get("seed"),
            source=a.get("source"),
            history=history,
            error=a.get("error"),
            seconds=float(a.get("seconds", 0.0)),
            steps=int(a.get("steps", 0)),
            best_epoch=a.get("best_epoch"),
            traces=int(a.get("traces", 0)),
            width=int(a.get("width", 1)),
            resumed_from_epoch=a.get("resumed_from_epoch"),
            repeat_of=a.get("repeat_of"),
            schedule=tuple(a.get(SCHEDULE, ())),
            finished_at=t.datetime_complete.isoformat(timespec="seconds")
            if t.datetime_complete
            else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``status`` as its string)."""
        out = dataclasses.asdict(self)
        out["status"] = self.status.value
        out["history"] = list(self.history)
        out["schedule"] = list(self.schedule)
        if not self.schedule:
            del out["schedule"]  # not a PBT member
        return out


def best(records: Sequence[TrialRecord], *, maximize: bool) -> TrialRecord | None:
    """The completed trial with the best target (the earliest among equals), or ``None``."""
    sign = 1.0 if maximize else -1.0
    ok = [r for r in records if r.status is Status.OK and r.target is not None]
    return max(ok, key=lambda r: (sign * r.target, -r.number)) if ok else None


def best_epoch(history: Sequence[Mapping[str, float]], metric: str, *, maximize: bool) -> int:
    """The 1-based epoch where ``metric`` was best (the earliest among equals)."""
    sign = 1.0 if maximize else -1.0
    return max(range(len(history)), key=lambda i: (sign * history[i][metric], -i)) + 1


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass
class StudyResult:
    """What a study found.

    Attributes:
      best_params: Hyperparameters of the selected best trial (``select_best``).
      best_target: Its objective value (best over its epochs).
      best_trial: Its trial number.
      trials: Every finished trial, by number.
      test_metrics: The best trial's test-split metrics, when they could be computed.
      counts: Trials by status (``ok``, ``failed``, ``pruned``).
      traces: Programs traced in this session.
      seconds: Wall time of this session.
      utilization: Useful slot-epochs over computed slot-epochs in this session.
      output_dir: Where the journal, summary and best weights live.
      final: With ``final_epochs``, the best configuration retrained and exported (what
        ``final/final.json`` holds, see :func:`tpu_bo.final.train_final`), else ``None``.
      time: Where this session's wall time went, in seconds (:mod:`tpu_bo.timing`; the final
        model's training is not in it).
    """

    best_params: dict[str, Any]
    best_target: float | None
    best_trial: int | None
    trials: list[TrialRecord]
    test_metrics: dict[str, Any] | None
    counts: dict[str, int]
    traces: int
    seconds: float
    utilization: float | None
    output_dir: str
    final: dict[str, Any] | None = None
    time: dict[str, float] = dataclasses.field(default_factory=dict)
