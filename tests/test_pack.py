"""Packed trials (``parallel_trials=K``): K towers in one program behave like K trials alone.

The equality checks run with ``tf.config.experimental.enable_op_determinism()``, which cannot
be switched off again, so each runs in its own Python process.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.test_trainer import make_trainer
from tpu_bo.smoke_device import run_keeping_weights

POINTS = [
    {"dropout_2": 0.1, "learning_rate": 1e-3},
    {"dropout_2": 0.5, "learning_rate": 3e-3},
    {"dropout_2": 0.3, "learning_rate": 1e-4},
    {"dropout_2": 0.2, "learning_rate": 1e-2},
]
SEEDS = [11, 12, 13, 14]
ONE_EPOCH = {"epochs": 1, "steps_per_execution": 4}


def run_pack_keeping_weights(trainer, points, seeds, **kwargs):
    """Runs a pack; returns its results and each tower's final weights."""
    pairs = run_keeping_weights(trainer, points, seeds, **kwargs)
    return [r for r, _ in pairs], [w for _, w in pairs]


def check_pack_matches_alone(replicas: int = 1, **fields) -> None:
    """Each tower of a pack of 4 ends where the same trial trained alone ends."""
    fields = {**ONE_EPOCH, **fields}
    trainer = make_trainer(replicas, parallel_trials=4, **fields)
    packed, packed_weights = run_pack_keeping_weights(trainer, POINTS, SEEDS)
    assert trainer.traces == 2
    alone_trainer = make_trainer(replicas, **fields)
    for k, (point, seed) in enumerate(zip(POINTS, SEEDS, strict=True)):
        (alone,), (alone_weights,) = run_pack_keeping_weights(
            alone_trainer, [point], [seed], width=1
        )
        assert packed[k].status == alone.status == "ok"
        for a, b in zip(packed_weights[k], alone_weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert packed[k].history[0]["val_accuracy"] == pytest.approx(
            alone.history[0]["val_accuracy"], abs=1e-9
        )
        assert packed[k].history[0]["loss"] == pytest.approx(alone.history[0]["loss"], rel=1e-5)
    # Different points really trained differently.
    accuracies = {round(r.history[0]["val_accuracy"], 6) for r in packed}
    assert len(accuracies) > 1
    assert alone_trainer.traces == 2


@pytest.mark.parametrize(
    "variant",
    [
        "",
        "replicas=2",
        "jit_compile=True",
        "mixed_precision=True",
    ],
)
def test_each_tower_of_a_pack_matches_its_trial_trained_alone(variant):
    # XLA has no deterministic MaxPool gradient, so TF refuses op determinism under
    # jit_compile; XLA on CPU runs the same fused program in the same order anyway.
    determinism = "" if "jit" in variant else "tf.config.experimental.enable_op_determinism(); "
    code = (
        f"import tensorflow as tf; {determinism}"
        f"from tests.test_pack import check_pack_matches_alone; check_pack_matches_alone({variant})"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]


def test_a_diverging_tower_is_failed_alone_and_the_others_train_undisturbed():
    fields = {"model": "tests.custom_models:diverging", "space": ["gain:float:0:40"]}
    points = [{"gain": 0.0}, {"gain": 40.0}, {"gain": 0.5}]
    trainer = make_trainer(parallel_trials=4, epochs=2, **fields)
    finished = []
    results, weights = run_pack_keeping_weights(
        trainer,
        points,
        [1, 2, 3],
        on_progress=None,
    )
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "loss became" in results[1].error and results[1].history == []
    assert trainer.traces == 2
    alone = make_trainer(**fields, epochs=2)
    for k in (0, 2):
        (single,), (single_weights,) = run_pack_keeping_weights(
            alone, [points[k]], [k + 1], width=1
        )
        for a, b in zip(weights[k], single_weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert results[k].history[-1]["val_accuracy"] == pytest.approx(
            single.history[-1]["val_accuracy"], abs=2e-3
        )
        finished.append(k)
    assert finished == [0, 2]


def test_a_pruned_tower_stops_and_is_reported_at_once_while_the_others_go_on():
    trainer = make_trainer(parallel_trials=3, epochs=3)
    order = []

    def on_epoch(k, epoch, history, seconds):
        return k == 1 and epoch == 1

    def on_finish(k, result):
        order.append((k, result.status, len(result.history)))

    results = trainer.run_pack(POINTS[:3], seeds=SEEDS[:3], on_epoch=on_epoch, on_finish=on_finish)
    assert order == [(1, "pruned", 1), (0, "ok", 3), (2, "ok", 3)]
    assert [r.status for r in results] == ["ok", "pruned", "ok"]
    assert results[1].steps == 10 and results[0].steps == 30
    # The pruned tower's learning rate was set to 0: it no longer moved (eval unchanged).
    alone = make_trainer(epochs=3).run_trial(POINTS[2], seed=SEEDS[2])
    assert results[2].history[-1]["val_accuracy"] == pytest.approx(
        alone.history[-1]["val_accuracy"], abs=2e-3
    )


def test_a_short_pack_reuses_the_program_with_idle_towers():
    trainer = make_trainer(parallel_trials=4, **ONE_EPOCH)
    trainer.run_pack(POINTS, seeds=SEEDS)
    short = trainer.run_pack(POINTS[:2], seeds=SEEDS[:2])
    assert [r.status for r in short] == ["ok", "ok"]
    assert trainer.traces == 2 and trainer.num_programs == 1


def test_a_pack_refuses_mixed_structures():
    trainer = make_trainer(
        parallel_trials=2, space=["dense_units:choice:16,32", "learning_rate:log:1e-4:1e-2"]
    )
    with pytest.raises(ValueError, match="structural"):
        trainer.run_pack(
            [
                {"dense_units": 16, "learning_rate": 1e-3},
                {"dense_units": 32, "learning_rate": 1e-3},
            ],
            seeds=[1, 2],
        )
