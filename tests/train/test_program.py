"""The pieces of a program that need no training (the training is in test_trainer/test_pack)."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from tpu_bo.config import OPTIMIZERS
from tpu_bo.search.space import SearchSpace
from tpu_bo.train.program import Tower, make_optimizer, out_of_memory, precision


def test_precision_sets_the_policy_only_inside_and_restores_it_even_on_error():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        with precision(True):
            assert keras.layers.Dense(2).compute_dtype == "bfloat16"
        with pytest.raises(ZeroDivisionError), precision(False):
            assert keras.layers.Dense(2).compute_dtype == "float32"
            1 / 0  # noqa: B018
        assert keras.config.dtype_policy().name == "mixed_float16"
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_reads_its_learning_rate_from_the_variable(name):
    tower = Tower(["learning_rate"])
    tower.model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # uncompiled
    assert make_optimizer(tower, SearchSpace.parse(["learning_rate:log:1e-4:1"]), kind=name) == []
    assert tower.optimizer_class == type(tower.optimizer).__name__ == OPTIMIZERS[name][0]
    assert tower.runtime_row({}) == [OPTIMIZERS[name][1]]  # its default rate
    tower.assign_row(tower.runtime_row({"learning_rate": 0.25}))
    assert float(tower.optimizer.learning_rate) == pytest.approx(0.25)
    tower.freeze()
    assert float(tower.optimizer.learning_rate) == 0.0


def test_out_of_memory_is_one_sentence_suggesting_a_smaller_pack_only_for_a_pack():
    error = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor.\nmore")
    assert out_of_memory(error, 1) == "out of memory: OOM when allocating tensor"
    assert out_of_memory(error, 4).endswith("(a pack of 4; a smaller --parallel_trials may fit)")
