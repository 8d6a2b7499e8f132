"""Packs (``parallel_trials=K``): K slots of one program, each trial trained as if alone.

The data of tests.train.test_trainer makes every epoch the same ten batches in the same order, so a
trial's numbers do not depend on where the shared iterator stood when it started: a trial loaded
into a slot at any epoch boundary must end exactly where the same trial trained alone ends.

The equality checks of the big model run with ``tf.config.experimental.enable_op_determinism()``,
which cannot be switched off again, so they run in a Python process of their own; the small dense
models below are deterministic on the CPU without it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.train.test_trainer import make_trainer
from tpu_bo.smoke.device import run_keeping_weights

POINTS = [
    {"dropout_2": 0.1, "learning_rate": 1e-3},
    {"dropout_2": 0.5, "learning_rate": 3e-3},
    {"dropout_2": 0.3, "learning_rate": 1e-4},
    {"dropout_2": 0.2, "learning_rate": 1e-2},
]
SEEDS = [11, 12, 13, 14]
ONE_EPOCH = {"epochs": 1, "steps_per_execution": 4}
# A small dense model under Adam, whose step count and moments would show any leaked state.
TINY = {
    "model": "tests.custom_models:tiny",
    "space": ["dropout:float:0:0.5", "learning_rate:log:1e-4:1e-1"],
    "optimizer": "adam",
}
A = {"dropout": 0.1, "learning_rate": 1e-2}
B = {"dropout": 0.4, "learning_rate": 5e-2}
C = {"dropout": 0.2, "learning_rate": 3e-3}


def run_pack_keeping_weights(trainer, points, seeds, **kwargs):
    """Runs a pack to the end; returns its results and each slot's final weights."""
    pairs = run_keeping_weights(trainer, points, seeds, **kwargs)
    return [r for r, _ in pairs], [w for _, w in pairs]


def alone(fields, point, seed):
    """The result and final weights of ``point`` trained alone in a fresh width-1 trainer."""
    (result,), (weights,) = run_pack_keeping_weights(make_trainer(**fields), [point], [seed])
    return result, weights


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def history(result):
    return np.array([[h["loss"], h["val_loss"], h["val_accuracy"]] for h in result.history])


def check_pack_matches_alone(replicas: int = 1, **fields) -> None:
    """Each slot of a pack of 4 ends where the same trial trained alone ends."""
    fields = {**ONE_EPOCH, **fields}
    trainer = make_trainer(replicas, parallel_trials=4, **fields)
    packed, packed_weights = run_pack_keeping_weights(trainer, POINTS, SEEDS)
    assert trainer.traces == 2
    for variable in trainer._programs[next(iter(trainer._programs))].towers[0].model.variables:
        # Each replica drew the same fresh weights on its own device (tpu_bo.train.reset).
        copies = [c.numpy() for c in getattr(variable.value, "values", [variable.value])]
        assert all(np.array_equal(copies[0], c) for c in copies) and len(copies) == replicas
    alone_trainer = make_trainer(replicas, **fields)
    for k, (point, seed) in enumerate(zip(POINTS, SEEDS, strict=True)):
        (single,), (single_weights,) = run_pack_keeping_weights(
            alone_trainer, [point], [seed], width=1
        )
        assert packed[k].status == single.status == "ok"
        assert_same_weights(packed_weights[k], single_weights)
        assert packed[k].history[0]["val_accuracy"] == pytest.approx(
            single.history[0]["val_accuracy"], abs=1e-9
        )
        assert packed[k].history[0]["loss"] == pytest.approx(single.history[0]["loss"], rel=1e-5)
    # Different points really trained differently.
    accuracies = {round(r.history[0]["val_accuracy"], 6) for r in packed}
    assert len(accuracies) > 1
    assert alone_trainer.traces == 2


@pytest.mark.parametrize(
    "variants",
    [
        # One process for the variants that run under op determinism, one for XLA: XLA has
        # no deterministic MaxPool gradient, so TF refuses op determinism under jit_compile
        # (XLA on CPU runs the same fused program in the same order anyway).
        # replicas=2 first: it splits the CPU into two devices before TensorFlow starts.
        ["replicas=2", "", "mixed_precision=True"],
        ["jit_compile=True"],
    ],
    ids=["replicas=2,plain,mixed_precision", "jit_compile"],
)
def test_each_tower_of_a_pack_matches_its_trial_trained_alone(variants):
    determinism = (
        "" if "jit_compile=True" in variants else "tf.config.experimental.enable_op_determinism(); "
    )
    checks = "; ".join(f"print('checking', {v!r}, flush=True); check({v})" for v in variants)
    code = (
        f"import tensorflow as tf; {determinism}"
        f"from tests.train.test_pack import check_pack_matches_alone as check; {checks}"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    done = [line for line in run.stdout.splitlines() if line.startswith("checking")]
    assert run.returncode == 0, (done[-1] if done else "starting") + ": " + run.stderr[-3000:]
    assert len(done) == len(variants)


def test_a_diverging_slot_is_failed_alone_and_the_others_train_undisturbed():
    fields = {"model": "tests.custom_models:diverging", "space": ["gain:float:0:40"], "epochs": 2}
    points = [{"gain": 0.0}, {"gain": 40.0}, {"gain": 0.5}]
    trainer = make_trainer(parallel_trials=4, **fields)
    pack = trainer.pack(points[0])
    for k, point in enumerate(points):
        pack.load(k, point, seed=k + 1)
    first = pack.run_epoch()
    assert [(r.slot, r.epoch, r.done) for r in first] == [
        (0, 1, False),
        (1, 1, True),
        (2, 1, False),
    ]
    assert first[1].metrics is None and first[1].error.startswith("loss became")
    assert first[0].error is None and first[0].metrics["epoch"] == 1
    assert pack.active == [0, 2] and pack.free == [1, 3]
    assert [r.slot for r in pack.run_epoch()] == [0, 2]
    results = [pack.result(k) for k in range(3)]
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].history == [] and results[1].error == first[1].error
    assert trainer.traces == 2
    for k in (0, 2):
        single, single_weights = alone(fields, points[k], k + 1)
        assert_same_weights(pack.weights(k), single_weights, rtol=1e-4)
        np.testing.assert_allclose(history(results[k]), history(single), rtol=1e-4, atol=1e-6)


def test_a_stopped_slot_is_pruned_and_frozen_while_the_others_go_on():
    trainer = make_trainer(parallel_trials=3, epochs=3, **TINY)
    pack = trainer.pack(A)
    for k, point in enumerate([A, B, C]):
        pack.load(k, point, seed=k + 1)
    pack.run_epoch()
    stopped = pack.stop(1)
    assert stopped.status == "pruned" and stopped.steps == 10 and len(stopped.history) == 1
    assert pack.result(1) == stopped
    kept = pack.weights(1)
    while pack.active:
        assert [r.slot for r in pack.run_epoch()] == [0, 2]
    assert_same_weights(pack.weights(1), kept, rtol=0, atol=0)  # learning rate 0: frozen
    assert pack.result(1).status == "pruned" and pack.result(1).seconds == stopped.seconds
    assert [pack.result(k).steps for k in (0, 2)] == [30, 30]
    single, single_weights = alone({"epochs": 3, **TINY}, C, 3)
    assert pack.result(2).status == "ok"
    assert_same_weights(pack.weights(2), single_weights)
    with pytest.raises(ValueError, match="not running"):
        pack.stop(1)


def test_a_freed_slot_takes_a_new_trial_at_an_epoch_boundary_as_if_alone():
    """B is stopped after one epoch and C loaded into its slot; C must not inherit B's
    weights, Adam moments or step count, learning rate, dropout rate or dropout draws."""
    trainer = make_trainer(parallel_trials=2, epochs=2, **TINY)
    pack = trainer.pack(A)
    pack.load(0, A, seed=1)
    pack.load(1, B, seed=2)
    assert [(r.slot, r.epoch, r.done) for r in pack.run_epoch()] == [(0, 1, False), (1, 1, False)]
    traces = trainer.traces
    pack.stop(1)
    pack.load(1, C, seed=3)
    assert [(r.slot, r.epoch, r.done) for r in pack.run_epoch()] == [(0, 2, True), (1, 1, False)]
    assert [(r.slot, r.epoch, r.done) for r in pack.run_epoch()] == [(1, 2, True)]
    assert pack.active == [] and trainer.traces == traces == 2
    assert (pack.computed_tower_epochs, pack.useful_tower_epochs) == (6, 5)
    for k, point, seed in [(0, A, 1), (1, C, 3)]:
        single, single_weights = alone({"epochs": 2, **TINY}, point, seed)
        result = pack.result(k)
        assert result.status == "ok" and result.steps == 20 and result.resumed_from_epoch is None
        assert_same_weights(pack.weights(k), single_weights)
        np.testing.assert_allclose(history(result), history(single), rtol=1e-5)


def test_a_trial_state_continues_the_trial_exactly_in_another_trainer():
    fields = {"epochs": 3, **TINY}
    uninterrupted, uninterrupted_weights = alone(fields, C, 3)
    first = make_trainer(parallel_trials=2, **fields).pack(C)
    first.load(0, C, seed=3)
    first.load(1, A, seed=1)
    first.run_epoch()
    state = first.state(0)
    assert state.epoch == 1 and state.steps == 10 and len(state.history) == 1
    second = make_trainer(parallel_trials=2, **fields).pack(C)  # as another process would
    second.load(0, B, seed=2)
    second.load(1, C, seed=99, state=state)  # the seed is not used
    assert [(r.slot, r.epoch) for r in second.run_epoch()] == [(0, 1), (1, 2)]
    while second.active:
        second.run_epoch()
    result = second.result(1)
    assert result.status == "ok" and result.steps == 30 and result.resumed_from_epoch == 1
    assert result.seconds >= state.seconds
    assert_same_weights(second.weights(1), uninterrupted_weights)
    np.testing.assert_allclose(history(result), history(uninterrupted), rtol=1e-5)


def test_a_running_trial_moved_into_a_wider_pack_goes_on_as_if_it_had_not_moved():
    """The ramp (tpu_bo.session.ramp): C trains one epoch in a pack of 1, moves to slot 1 of a
    pack of 2 of the same trainer, and ends where it ends trained alone, as the same trial:
    its steps, history and clock go on, and it is not a resumed trial."""
    fields = {"epochs": 3, **TINY}
    uninterrupted, uninterrupted_weights = alone(fields, C, 3)
    trainer = make_trainer(parallel_trials=2, **fields)
    narrow = trainer.pack(C, 1)
    narrow.load(0, C, seed=3)
    narrow.run_epoch()
    wide = trainer.pack(C, 2)
    wide.load(0, A, seed=1)
    wide.adopt(1, C, narrow, 0)
    with pytest.raises(ValueError, match="has held no trial"):
        narrow.result(0)  # it is the wide pack's now
    assert [(r.slot, r.epoch) for r in wide.run_epoch()] == [(0, 1), (1, 2)]
    while wide.active:
        wide.run_epoch()
    result = wide.result(1)
    assert result.status == "ok" and result.steps == 30 and result.resumed_from_epoch is None
    assert_same_weights(wide.weights(1), uninterrupted_weights)
    np.testing.assert_allclose(history(result), history(uninterrupted), rtol=1e-5)
    assert trainer.traces == 4  # a train and an eval function of each width


def test_a_short_pack_reuses_the_program_with_idle_slots():
    trainer = make_trainer(parallel_trials=4, **ONE_EPOCH)
    run_pack_keeping_weights(trainer, POINTS, SEEDS)
    pack = trainer.pack(POINTS[0])
    assert pack.free == [0, 1, 2, 3] and pack.active == []
    assert pack.run_epoch() == [] and pack.computed_tower_epochs == 0  # nothing to train
    for k in range(2):
        pack.load(k, POINTS[k], seed=SEEDS[k])
    assert [r.done for r in pack.run_epoch()] == [True, True]
    assert [pack.result(k).status for k in range(2)] == ["ok", "ok"]
    assert (pack.computed_tower_epochs, pack.useful_tower_epochs) == (4, 2)
    assert trainer.traces == 2 and trainer.num_programs == 1


def test_a_pack_refuses_what_it_cannot_hold():
    trainer = make_trainer(
        parallel_trials=2, space=["dense_units:choice:16,32", "learning_rate:log:1e-4:1e-2"]
    )
    small, large = (
        {"dense_units": 16, "learning_rate": 1e-3},
        {"dense_units": 32, "learning_rate": 1e-3},
    )
    pack = trainer.pack(small)
    with pytest.raises(ValueError, match="structural"):
        pack.load(0, large, seed=1)
    pack.load(0, small, seed=1)
    with pytest.raises(ValueError, match="running"):
        pack.load(0, small, seed=2)
    with pytest.raises(ValueError, match="not in a pack of 2"):
        pack.load(2, small, seed=2)
    with pytest.raises(ValueError, match="held no trial"):
        pack.result(1)
    newer = trainer.pack(small)  # takes the program
    with pytest.raises(RuntimeError, match="newer pack"):
        pack.run_epoch()
    assert newer.active == [] and trainer.traces == 0
