"""A slot's results: the metrics a TrialResult reports are those of its best epoch."""

from __future__ import annotations

from tpu_bo.pack import TrialResult as FromPack
from tpu_bo.slot_results import TrialResult


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
    assert FromPack is TrialResult  # the pack re-exports it
