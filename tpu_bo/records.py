"""A study's typed records, shared by every layer; plain dataclasses with no Optuna import.

* :class:`Status`: ``running``, ``ok``, ``pruned``, ``failed``.
* :class:`Trial`: what :meth:`tpu_bo.study.Study.ask` hands out.
* :class:`Checkpoint`: a running trial caught at an epoch boundary, enough to continue it in
  another process (what ``inflight/trial_N.npz`` holds).
* :class:`Outcome`: what a trial produced; a pack's slot returns one, and
  :meth:`tpu_bo.study.Study.tell` takes one (also from your own training loop).
* :class:`TrialRecord`: a finished trial read back from the storage, with :func:`best` over
  them (:mod:`tpu_bo.study.trials` builds it from Optuna's trial).
* :class:`Summary`: what ``summary.json`` holds, built once at the end of a session.
* :class:`StudyResult`: what :func:`tpu_bo.run_study` returns.

This module imports neither TensorFlow nor Optuna.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class Status(str, enum.Enum):
    """A trial's state, as tpu_bo reports it."""

    RUNNING = "running"
    OK = "ok"
    PRUNED = "pruned"
    FAILED = "failed"


SCHEDULE = "pbt_schedule"  # a PBT member's schedule attribute (tpu_bo.session.pbt)


@dataclasses.dataclass
class Checkpoint:
    """A trial caught at the end of an epoch, enough to continue it in another process.

    Attributes:
      epoch: Epochs finished.
      history: Their metrics.
      model: Values of ``model.variables`` (weights and dropout RNG state).
      optimizer: Values of ``optimizer.variables`` (step count and slots).
      steps: Training steps run so far.
      seconds: Wall time spent so far.
      executions: With ``--executions_per_trial`` > 1, the other executions' checkpoints, at
        the same epoch (this one is the first execution's; ``history`` is its own).
    """

    epoch: int
    history: list[dict[str, float]]
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    steps: int
    seconds: float
    executions: list[Checkpoint] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Trial:
    """A trial handed out by :meth:`tpu_bo.study.Study.ask`; it is RUNNING in the storage.

    Attributes:
      number: Optuna's trial number (0, 1, ...).
      params: A value for every parameter of the space.
      seed: Seeds its initial weights and dropout.
      source: ``random`` (a starting point), ``guided`` (the sampler's model chose it),
        ``repeat`` (``--repeat_best``) or ``resumed`` (a killed session's, continued).
      resume: The checkpoint to continue from, or ``None`` (fresh weights).
    """

    number: int
    params: dict[str, Any]
    seed: int
    source: str
    resume: Checkpoint | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a trial produced: a pack's slot returns one, :meth:`tpu_bo.study.Study.tell` takes one.

    Attributes:
      status: ``ok`` (reached ``epochs``), ``pruned`` (stopped early), ``failed`` (NaN/Inf loss,
        out of memory, or your own loop's failure) or ``running`` (a slot's trial so far). A
        string is read as its :class:`Status`.
      history: One dict per finished epoch: ``epoch``, ``loss``, ``val_loss``, ``val_<metric>``
        for each of the model's metrics and ``steps_per_second`` (your own loop needs only
        ``epoch`` and the objective).
      error: For a failed trial, one sentence saying why.
      steps: Training steps run (including those before a resume).
      seconds: Wall time of the trial, including any trace, and the time before a resume.
      resumed_from_epoch: The epoch a resumed trial continued after, else ``None``.
      train_seconds: Time inside train-program calls in this session (a pack's slot).
      eval_seconds: Time inside eval-program calls in this session (a pack's slot).
      optimizer: The Keras class of the optimizer that trained it (a pack's slot), if known.
      executions: With ``--executions_per_trial`` > 1, each execution's objective at the
        trial's best epoch (``history`` is then their mean, epoch by epoch).
    """

    status: Status
    history: Sequence[Mapping[str, float]]
    error: str | None = None
    steps: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    optimizer: str | None = None
    executions: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))

    @property
    def metrics(self) -> dict[str, float]:
        """The epoch with the best validation accuracy (else the lowest validation loss), and
        its ``best_epoch``."""
        if not self.history:
            return {}
        accuracy = "val_accuracy" in self.history[0]
        metric = "val_accuracy" if accuracy else "val_loss"
        epoch = dict(self.history[best_epoch(self.history, metric, maximize=accuracy) - 1])
        return {**epoch, "best_epoch": epoch["epoch"]}


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """A finished trial, read from the storage.

    ``target`` is the best value of the objective over the trial's epochs (a pruned trial's
    best so far); ``history`` holds one dict of metrics per finished epoch; ``optimizer`` is the
    Keras class of the optimizer that trained it (``None`` in a study written before it was
    recorded, or told by your own loop). With ``--executions_per_trial`` > 1, ``history`` is the
    mean of the trial's executions, epoch by epoch, and ``executions`` holds each execution's
    objective at the best epoch (their mean is ``target``).
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
    schedule: tuple[dict[str, Any], ...] = ()  # a PBT member's (tpu_bo.session.pbt)
    optimizer: str | None = None
    executions: tuple[float | None, ...] = ()

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics of the best epoch (without its ``epoch``)."""
        if self.best_epoch is None:
            return {}
        epoch = self.history[self.best_epoch - 1]
        return {k: v for k, v in epoch.items() if k != "epoch"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``status`` as its string)."""
        out = dataclasses.asdict(self)
        out["status"] = self.status.value
        out["history"] = list(self.history)
        out["schedule"] = list(self.schedule)
        out["executions"] = list(self.executions)
        if not self.schedule:
            del out["schedule"]  # not a PBT member
        if not self.executions:
            del out["executions"]  # one execution per trial
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


@dataclasses.dataclass
class Summary:
    """What ``summary.json`` holds: the study as it stands at the end of a session.

    :func:`tpu_bo.report.summary.summarize` builds it; the session adds what only it knows
    (``selection``, ``pbt``, ``final``) before writing it.

    Attributes:
      best_trial: The selected best trial's number (``None``: no trial succeeded).
      best_target: Its objective value (best over its epochs).
      objective: The objective, its direction and rule, e.g. ``val_accuracy (max, best epoch)``.
      best_params: Its hyperparameters.
      best_epoch: Its best epoch.
      test: Its test-split metrics (``split``, ``examples`` and the scores), or ``None``.
      counts: Finished trials by status.
      trials: Finished trials.
      budget: ``init_points + n_iter``.
      training_steps: Training steps of every finished trial.
      best_at_edge: The parameters whose best value lies at an edge of the space.
      utilization_this_session: Useful over computed slot-epochs in this session.
      seconds_this_session: Wall time of this session.
      time_this_session: Where it went, by category (:mod:`tpu_bo.timing`).
      guided_on_bound: How many guided trials put a parameter within 1% of a bound:
        ``guided``, ``on_bound``, ``fraction`` and ``by_param`` (counts by name).
      selection: How the best trial was chosen (:mod:`tpu_bo.session.selection`).
      pbt: A PBT study's exploits and the best member's ancestry, else ``None``.
      final: With ``--final_epochs``, the retrained model's ``final/final.json``, else ``None``.
      parallel_trials: ``--parallel_trials=auto``'s measurement this session (trial-steps per
        second by K, the chosen K, whether it was cached), else ``None``.
    """

    best_trial: int | None
    best_target: float | None
    objective: str
    best_params: dict[str, Any]
    best_epoch: int | None
    test: dict[str, Any] | None
    counts: dict[str, int]
    trials: int
    budget: int
    training_steps: int
    best_at_edge: list[str]
    utilization_this_session: float | None
    seconds_this_session: float
    time_this_session: dict[str, float]
    guided_on_bound: dict[str, Any] = dataclasses.field(default_factory=dict)
    selection: dict[str, Any] = dataclasses.field(default_factory=dict)
    pbt: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    parallel_trials: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pbt``, ``final`` and ``parallel_trials`` only when set)."""
        out = dataclasses.asdict(self)
        for key in ("pbt", "final", "parallel_trials"):
            if out[key] is None:
                del out[key]
        return out


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
        ``final/final.json`` holds, see :func:`tpu_bo.session.final.train_final`), else ``None``.
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
