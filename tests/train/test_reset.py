"""On-device trial reset (tpu_bo.train.reset): one traced call per program redraws a trial.

The two-replica case (every replica draws the same values, and a pack still equals its trials
alone) is checked by tests.train.test_pack's ``replicas=2`` variant, in its own process.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from tests.train.test_pack import TINY, A, B
from tests.train.test_trainer import make_trainer
from tpu_bo.train.reset import plan, recording


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_reset_by_seed_is_reproducible_matches_across_widths_and_forgets_training():
    trainer = make_trainer(parallel_trials=3, epochs=2, **TINY)
    pack = trainer.pack(A)
    for slot, seed in enumerate([7, 7, 8]):
        pack.load(slot, A if slot != 1 else B, seed=seed)
    towers = pack.program.towers
    fresh = towers[0].model_values()
    assert same(fresh, towers[1].model_values())  # the seed decides, not the slot or the point
    assert not same(fresh, towers[2].model_values())
    runtime = {n: float(v.numpy()) for n, v in towers[1].runtime_vars.items()}
    assert runtime["dropout"] == np.float32(B["dropout"])
    assert runtime["learning_rate"] == np.float32(B["learning_rate"])
    pack.run_epoch()  # trains: weights, the Adam moments, its step and the dropout RNG move
    assert not same(fresh, towers[0].model_values())
    assert int(towers[0].optimizer.iterations.numpy()) > 0
    pack.stop(0)
    pack.load(0, A, seed=7)
    assert same(fresh, towers[0].model_values())
    assert same(towers[0].optimizer_values(), towers[0].optimizer_snapshot)
    alone = trainer.pack(A, 1)  # another program, of width 1
    alone.load(0, A, seed=7)
    assert same(fresh, alone.program.towers[0].model_values())
    # One reset program per (structure, width), traced once however many trials it loads.
    assert trainer.reset_traces == 2 and trainer.traces == 2


def test_a_model_whose_initializer_cannot_be_traced_is_reset_on_the_host(caplog):
    trainer = make_trainer(parallel_trials=2, model="tests.custom_models:host_initializer",
                           space=TINY["space"])  # fmt: skip
    pack = trainer.pack(A)
    with caplog.at_level(logging.WARNING, logger="tpu_bo"):
        pack.load(0, A, seed=3)
        pack.load(1, A, seed=3)
    assert "drawn on the host" in caplog.text and pack.program.reset_fn is None
    towers = pack.program.towers
    assert same(towers[0].model_values(), towers[1].model_values())
    result = pack.run_epoch()
    assert all(r.error is None for r in result)


def test_each_variable_gets_its_kind_of_draw():
    import tensorflow as tf

    with recording() as made:
        dense = keras.layers.Dense(3)
        dense.build((None, 4))
        loaded = keras.layers.Dense(2)
        loaded.build((None, 3))
        loaded.kernel.assign(np.full((3, 2), 0.5, "float32"))  # as set_weights would
        constant = keras.Variable(np.arange(3.0, dtype="float32"))
        rng = keras.random.SeedGenerator(5)
    outside = keras.Variable(np.zeros(2, dtype="float32"))
    variables = [dense.kernel, dense.bias, loaded.kernel, loaded.bias, constant, rng.state, outside]
    strategy = tf.distribute.get_strategy()
    kinds = {
        mode: [d.kind for d in plan([variables], made, strategy, mode).draws[0]]
        for mode in ("auto", "seeded", "as_built")
    }
    assert kinds["auto"] == ["init", "init", "built", "init", "built", "rng", "built"]
    assert kinds["seeded"] == ["init", "init", "init", "init", "built", "rng", "built"]
    assert kinds["as_built"] == ["built"] * 5 + ["rng", "built"]
    # Two towers built alike share one device copy of each kept value.
    auto = plan([variables, variables], made, strategy, "auto")
    assert len(auto.built) == 3 and auto.kept == [loaded.kernel.path]
    np.testing.assert_array_equal(auto.built[auto.draws[1][4].source].numpy(), [0.0, 1.0, 2.0])
    assert "_initialize_with_initializer" not in keras.Variable.__dict__ or (
        keras.Variable._initialize_with_initializer.__name__ != "record"
    )
