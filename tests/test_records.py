"""Typed trial records, built from Optuna's frozen trials."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution

from tpu_bo.records import Status, TrialRecord, best, best_epoch

HISTORY = [
    {"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0},
    {"epoch": 2, "val_accuracy": 0.7, "val_loss": 0.8},
    {"epoch": 3, "val_accuracy": 0.7, "val_loss": 0.9},
]


def frozen(state, value=None, **attrs):
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params={"lr": 0.01},
        distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
        user_attrs=attrs,
    )


def test_a_record_reads_every_attribute_and_maps_the_state():
    t = frozen(
        optuna.trial.TrialState.COMPLETE,
        0.7,
        target=0.7,
        history=HISTORY,
        seed=5,
        source="guided",
        best_epoch=2,
        steps=30,
        seconds=1.5,
        traces=2,
        width=4,
    )
    r = TrialRecord.from_frozen(t)
    assert (r.status, r.target, r.seed, r.source, r.width, r.traces) == (
        Status.OK, 0.7, 5, "guided", 4, 2,
    )  # fmt: skip
    assert r.metrics == {"val_accuracy": 0.7, "val_loss": 0.8}
    assert r.to_dict()["status"] == "ok" and r.to_dict()["history"] == HISTORY
    failed = TrialRecord.from_frozen(frozen(optuna.trial.TrialState.FAIL, target=float("nan")))
    assert failed.status is Status.FAILED and failed.target is None and failed.metrics == {}
    running = TrialRecord.from_frozen(frozen(optuna.trial.TrialState.RUNNING))
    assert running.status is Status.RUNNING and running.finished_at is None


def test_best_takes_the_best_ok_target_and_the_earliest_among_equals():
    def rec(number, status, target):
        return TrialRecord(number=number, status=status, params={}, target=target)

    records = [
        rec(0, Status.OK, 0.5),
        rec(1, Status.PRUNED, 0.9),
        rec(2, Status.OK, 0.8),
        rec(3, Status.OK, 0.8),
        rec(4, Status.FAILED, None),
    ]
    assert best(records, maximize=True).number == 2
    assert best(records, maximize=False).number == 0
    assert best(records[1:2], maximize=True) is None


def test_best_epoch_is_one_based_and_takes_the_earlier_tie():
    assert best_epoch(HISTORY, "val_accuracy", maximize=True) == 2
    assert best_epoch(HISTORY, "val_loss", maximize=False) == 2
