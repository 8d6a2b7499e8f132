"""Optuna's trials read as typed records (tpu_bo.study.trials)."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution

from tpu_bo.records import Status
from tpu_bo.study.trials import record

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
    r = record(t)
    assert (r.status, r.target, r.seed, r.source, r.width, r.traces) == (
        Status.OK, 0.7, 5, "guided", 4, 2,
    )  # fmt: skip
    assert r.metrics == {"val_accuracy": 0.7, "val_loss": 0.8}
    assert r.to_dict()["status"] == "ok" and r.to_dict()["history"] == HISTORY
    failed = record(frozen(optuna.trial.TrialState.FAIL, target=float("nan")))
    assert failed.status is Status.FAILED and failed.target is None and failed.metrics == {}
    running = record(frozen(optuna.trial.TrialState.RUNNING))
    assert running.status is Status.RUNNING and running.finished_at is None
