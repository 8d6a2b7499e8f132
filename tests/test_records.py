"""Typed trial records: the best trial and epoch, and the metrics an Outcome reports (those of
its best epoch)."""

from __future__ import annotations

from tpu_bo.records import Outcome as TrialResult
from tpu_bo.records import Status, TrialRecord, best, best_epoch

HISTORY = [
    {"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0},
    {"epoch": 2, "val_accuracy": 0.7, "val_loss": 0.8},
    {"epoch": 3, "val_accuracy": 0.7, "val_loss": 0.9},
]


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


def test_metrics_are_the_best_epoch_by_accuracy_else_by_loss():
    history = [
        {"epoch": 1, "val_accuracy": 0.5, "val_loss": 0.9},
        {"epoch": 2, "val_accuracy": 0.7, "val_loss": 1.1},
        {"epoch": 3, "val_accuracy": 0.6, "val_loss": 0.8},
    ]
    assert TrialResult("ok", history).metrics == {**history[1], "best_epoch": 2}
    losses = [{k: v for k, v in h.items() if k != "val_accuracy"} for h in history]
    assert TrialResult("ok", losses).metrics == {**losses[2], "best_epoch": 3}
    assert TrialResult("failed", []).metrics == {}
