"""The programs on TPUStrategy's packed-variable path, on a CPU stand-in (tests.device.packed).

Under TPUStrategy the reset, PBT's copy and the metric resets update each variable by one op
on its packed handle, which the runtime expands to every replica only when the caller's
device scope leaves it alone (tpu_bo.device.placement). These tests run the real programs on
the stand-in: a pack equals its trials alone on every replica's component, the compiled head
scores as Keras does, a caller's ``tf.device`` of one replica breaks nothing, and the copy's
consequence for per-replica state (BatchNorm's moving statistics) is the documented one.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tensorflow as tf

from tests import metric_models
from tests.device.packed import differing, packed_strategy, replica_devices
from tests.train.test_heads import REGRESSION, Scored, assert_scored_as_keras
from tests.train.test_pack import TINY, A, B, history
from tests.train.test_trainer import BASE
from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.device.accelerator import get_strategy
from tpu_bo.train.reset import RNG_STATE
from tpu_bo.train.trainer import Trainer

FIELDS = {**BASE, **TINY, "epochs": 2}


def stand_in_trainer(strategy=None, **fields):
    strategy = strategy or packed_strategy()
    config = Config(**{**FIELDS, **fields}).validate()
    return Trainer(config, strategy, load_datasets(config, strategy))


def every_variable(pack):
    return [
        v
        for t in pack.program.towers
        for v in [*t.model.variables, *t.optimizer.variables, *t.runtime_vars.values()]
    ]


def components(variable):
    """Every replica's value of one Keras variable."""
    return [c.numpy() for c in variable.value.values]


def replica_weights(tower):
    return [components(v) for v in tower.model.variables]


def run(pack, scope, exploit=False):
    """Loads A and B, trains two epochs (slot 1 taking slot 0's state after the first when
    ``exploit``), every program called under ``scope``.

    Returns the results, the variables that differ across replicas after each program, and
    whether the copy made slot 1 equal to slot 0 on every replica.
    """
    broken, copied = {}, None
    with scope:
        pack.load(0, A, seed=1)
        pack.load(1, B, seed=2)
        broken["reset"] = differing(every_variable(pack))
        pack.run_epoch()
        broken["train, eval"] = differing(every_variable(pack))
        if exploit:
            pack.exploit({1: 0})
            broken["copy"] = differing(every_variable(pack))
            donor, receiver = pack.program.towers
            copied = all(
                all(np.array_equal(a, b) for a, b in zip(components(d), components(r), strict=True))
                for d, r in zip(donor.model.variables, receiver.model.variables, strict=True)
                if d.name != RNG_STATE
            )
        pack.run_epoch()
        broken["train, eval again"] = differing(every_variable(pack))
    return [pack.result(k) for k in range(2)], broken, copied


@pytest.fixture(scope="module")
def trainer():
    return stand_in_trainer(parallel_trials=2)


@pytest.fixture(scope="module")
def from_host(trainer):
    """A pack of A and B run from the host, and each slot's weights on every replica."""
    pack = trainer.pack(A)
    before = trainer.strategy.extended.packed_updates
    results, broken, _ = run(pack, contextlib.nullcontext())
    weights = [replica_weights(t) for t in pack.program.towers]
    return results, broken, weights, trainer.strategy.extended.packed_updates - before


def test_the_stand_in_updates_a_variable_once_on_its_packed_handle():
    strategy = packed_strategy()
    with strategy.scope():
        variable = tf.Variable(1.0)
    assert variable._packed_variable is not None  # values.py: one handle for every replica
    before = strategy.extended.packed_updates

    @tf.function
    def assign():
        with strategy.scope():
            variable.assign(2.0)

    assign()
    assert strategy.extended.packed_updates == before + 1  # once, not once per replica
    assert [c.numpy() for c in variable.values] == [2.0, 2.0]
    assert "CPU:0" not in " ".join(replica_devices(strategy))  # CPU:0 is the host


def test_a_pack_of_two_equals_each_trial_alone_on_every_replica(trainer, from_host):
    results, broken, weights, packed_updates = from_host
    assert packed_updates > 0  # the reset and the metric resets took the packed path
    assert broken == {"reset": [], "train, eval": [], "train, eval again": []}
    for slot, (point, seed) in enumerate([(A, 1), (B, 2)]):
        alone = trainer.pack(point, 1)
        alone.load(0, point, seed=seed)
        while alone.active:
            alone.run_epoch()
        assert results[slot].status == alone.result(0).status == "ok"
        np.testing.assert_allclose(history(results[slot]), history(alone.result(0)), rtol=1e-5)
        for mine, theirs in zip(weights[slot], replica_weights(alone.program.towers[0]),
                                strict=True):  # fmt: skip
            for a, b in zip(mine, theirs, strict=True):  # every replica's component
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_no_device_scope_of_the_caller_makes_the_replicas_differ(trainer, from_host):
    """Every program (reset, train and eval, PBT's copy) called under ``tf.device`` of one
    replica's device: on the packed path the runtime would write that replica alone."""
    pack = trainer.pack(A)
    results, broken, copied = run(pack, tf.device(replica_devices(trainer.strategy)[1]), True)
    counts = {program: f"{len(names)} variables differ across replicas" for program, names in
              broken.items()}  # fmt: skip
    assert broken == {"reset": [], "train, eval": [], "copy": [], "train, eval again": []}, counts
    assert copied
    # Slot 0 gave but did not change: it ends as from the host.
    np.testing.assert_allclose(history(results[0]), history(from_host[0][0]), rtol=1e-5)


def test_a_checkpoint_restored_under_a_replicas_device_is_on_every_replica(trainer):
    """A resumed trial, and a trial the ramp moves to a wider pack (``Pack.adopt``), is put
    back from a checkpoint by host assignments; a caller's device scope must not narrow them
    to one replica either."""
    pack = trainer.pack(A)
    pack.load(0, A, seed=1)
    pack.run_epoch()
    state = pack.state(0)
    pack.stop(0)
    with tf.device(replica_devices(trainer.strategy)[1]):
        pack.load(1, B, seed=0, state=state)
    assert differing(every_variable(pack)) == []
    restored = pack.program.towers[1]
    for got, want in zip(restored.model.variables, state.model, strict=True):
        for component in components(got):
            np.testing.assert_array_equal(component, want)


def test_the_compiled_head_scores_as_keras_on_the_packed_path():
    scored = Scored("regressor", metric_models.regression_data(), strategy=packed_strategy())
    for name in REGRESSION:
        assert_scored_as_keras(scored, name)
    model_variables = [v for t in scored.program.towers for v in t.model.variables]
    assert differing(model_variables) == []


def test_pbts_copy_gives_per_replica_statistics_as_the_strategy_updates_them():
    """BatchNorm's moving statistics differ across replicas (each replica updates them from
    its own share of the batch). MirroredStrategy's copy loops over the replicas, so each
    takes its own donor's; on TPU's packed path the copy reads the donor once, from replica
    0, and writes that to every replica (docs/DESIGN.md, "PBT's copy")."""
    for strategy, per_replica in [(packed_strategy(), False),
                                  (get_strategy("cpu", cpu_replicas=2), True)]:  # fmt: skip
        trainer = stand_in_trainer(strategy, parallel_trials=2,
                                   model="tests.custom_models:batch_norm")  # fmt: skip
        pack = trainer.pack(A)
        pack.load(0, A, seed=1)
        pack.load(1, B, seed=2)
        pack.run_epoch()
        donor, receiver = pack.program.towers
        moving = [i for i, v in enumerate(donor.model.variables) if "moving" in v.name]
        assert len(moving) == 2
        before = [components(donor.model.variables[i]) for i in moving]
        assert not np.array_equal(*before[0])  # per-replica state
        pack.exploit({1: 0})
        for i, donor_values in zip(moving, before, strict=True):
            got = components(receiver.model.variables[i])
            want = donor_values if per_replica else [donor_values[0]] * len(donor_values)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
        trainable = [v.name for v in donor.model.trainable_variables]
        assert differing(donor.model.trainable_variables) == [], trainable
