"""A trial trained N times with different seeds, scored by the mean (``--executions_per_trial``).

KerasTuner's ``executions_per_trial``: a trial's score is a mean over N seeds, so a noisy
objective ranks its trials by less noisy numbers, for N times the compute. In tpu_bo the N
*executions* of a trial are N slots of one pack, loaded together, stepped together and ended
together, so they stay at the same epoch:

* the trial's history is the executions' mean, epoch by epoch, metric by metric; the pruner,
  early stopping (``--patience``) and the best epoch read that mean;
* a pruned or early-stopped trial stops every execution; one that fails (NaN loss, out of
  memory) fails the trial, and its other executions stop;
* execution 0 keeps the trial's seed, the others derive theirs from it; the trial's weights
  (``best/``, ``kept/``) are execution 0's at the trial's best epoch;
* the checkpoint holds every execution's state in one file (:class:`tpu_bo.records.Checkpoint`'s
  ``executions``), so a resumed trial continues each from the same epoch;
* the record's ``executions`` holds each one's objective at the best epoch (their mean is the
  trial's target).

With one execution (the default) every function here is the identity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from tpu_bo.records import Checkpoint, Outcome, Status, Trial, best_epoch

_SEED_STRIDE = 7_919  # execution i's seed: the trial's + i × this (mod 2**31)

History = Sequence[Mapping[str, float]]


def seeds(trial: Trial, n: int) -> list[int]:
    """The seed of each of ``trial``'s ``n`` executions; the first is the trial's own."""
    return [(trial.seed + i * _SEED_STRIDE) % 2**31 for i in range(n)]


def states(trial: Trial, n: int) -> list[Checkpoint | None]:
    """Each execution's checkpoint to continue from (all ``None``: fresh weights).

    A checkpoint that does not hold ``n`` executions at one epoch (a study saved with another
    ``--executions_per_trial``, refused by its identity, or a damaged file) starts the trial
    again."""
    first = trial.resume
    if first is None:
        return [None] * n
    parts = [first, *first.executions]
    if len(parts) != n or any(p.epoch != first.epoch for p in parts):
        return [None] * n
    return [dataclasses.replace(p, executions=[]) for p in parts]


def checkpoint(parts: Sequence[Checkpoint]) -> Checkpoint:
    """One checkpoint holding every execution's state (the first's, with the others')."""
    return dataclasses.replace(parts[0], executions=list(parts[1:]))


def mean_history(histories: Sequence[History]) -> list[Mapping[str, float]]:
    """The executions' histories averaged epoch by epoch, over the epochs all of them ran and
    the metrics all of them report (``epoch`` stays as is). One history is returned as is."""
    if len(histories) == 1:  # every epoch of every slot passes here: no copy of its rows
        return list(histories[0])
    epochs = min(len(h) for h in histories)
    out = []
    for e in range(epochs):
        rows = [h[e] for h in histories]
        keys = [k for k in rows[0] if all(k in r for r in rows)]
        out.append({k: rows[0][k] if k == "epoch" else _mean([r[k] for r in rows]) for k in keys})
    return out


def outcome(outcomes: Sequence[Outcome], objective: str, *, maximize: bool) -> Outcome:
    """The trial's outcome from its executions': the mean history, the worst status (failed,
    then pruned, then ok), the first error, the first's steps (they run in step), the longest
    wall time and the summed program time; ``executions`` holds each one's objective at the
    trial's best epoch."""
    if len(outcomes) == 1:
        return outcomes[0]
    history = mean_history([o.history for o in outcomes])
    statuses = {o.status for o in outcomes}
    status = next(
        (s for s in (Status.FAILED, Status.PRUNED, Status.RUNNING) if s in statuses), Status.OK
    )
    errors = [(i, o.error) for i, o in enumerate(outcomes) if o.error]
    error = f"execution {errors[0][0]}: {errors[0][1]}" if errors else None
    scores: tuple[float | None, ...] = ()
    if history and all(objective in h for h in history):
        epoch = best_epoch(history, objective, maximize=maximize)
        scores = tuple(o.history[epoch - 1].get(objective) for o in outcomes)
    first = outcomes[0]
    return Outcome(
        status,
        history,
        error,
        steps=first.steps,
        seconds=max(o.seconds for o in outcomes),
        resumed_from_epoch=first.resumed_from_epoch,
        train_seconds=sum(o.train_seconds for o in outcomes),
        eval_seconds=sum(o.eval_seconds for o in outcomes),
        optimizer=first.optimizer,
        executions=scores,
    )


def _mean(values: Sequence[float]) -> float:
    """The mean; NaN when any value is not finite (a diverged execution spoils the mean)."""
    if not all(math.isfinite(v) for v in values):
        return math.nan
    return sum(values) / len(values)
