"""The smoke check's device-side helpers (the whole check runs in tests/test_smoke.py)."""

from __future__ import annotations

import numpy as np

from tests.train.test_trainer import make_trainer
from tpu_bo.smoke.device import run_keeping_weights

POINTS = [{"dropout_2": 0.1, "learning_rate": 1e-3}, {"dropout_2": 0.4, "learning_rate": 3e-3}]


def test_run_keeping_weights_gives_each_trial_its_own_final_weights():
    trainer = make_trainer(epochs=2)
    pairs = run_keeping_weights(trainer, POINTS, [1, 2], width=3)  # one slot stays idle
    (first, w_first), (second, w_second) = pairs
    assert first.status == second.status == "ok" and len(first.history) == 2
    assert len(w_first) == len(trainer.model(POINTS[0]).variables)
    assert any(not np.array_equal(a, b) for a, b in zip(w_first, w_second, strict=True))
    ((alone, w_alone),) = run_keeping_weights(trainer, POINTS[:1], [1], width=1)
    assert alone.history[0]["epoch"] == 1 and len(w_alone) == len(w_first)
