"""RuntimeValue and tpu_bo.train.layers.Dropout beyond what tests/test_models.py covers.

test_models.py covers the refusals float/int/bool/>/*, keras' own Dropout refusing a runtime
value, a rate that follows its variable without retracing, and a plain rate.
"""

from __future__ import annotations

import operator

import keras
import numpy as np
import pytest
import tensorflow as tf

from tpu_bo.train.layers import Dropout, RuntimeValue, RuntimeValueError, runtime_tensor


def test_runtime_value_reads_its_variable_in_any_dtype():
    variable = tf.Variable(0.25)
    value = RuntimeValue("rate", variable)
    assert repr(value) == "RuntimeValue('rate')"
    assert value.read().dtype == tf.float32 and float(value.read()) == 0.25
    assert value.read(tf.bfloat16).dtype == tf.bfloat16
    variable.assign(0.5)
    assert float(runtime_tensor(value)) == 0.5
    assert runtime_tensor(value, tf.float16).dtype == tf.float16


def test_runtime_tensor_of_a_plain_number_is_a_constant():
    t = runtime_tensor(0.3, tf.float64)
    assert t.dtype == tf.float64 and float(t) == 0.3


@pytest.mark.parametrize(
    "use",
    [
        operator.index,
        lambda v: [0, 1][v],
        lambda v: v < 1,
        lambda v: v <= 1,
        lambda v: v >= 1,
        lambda v: v + 1,
        lambda v: 1 + v,
        lambda v: v - 1,
        lambda v: 1 - v,
        lambda v: 2 * v,
        lambda v: v / 2,
        lambda v: 2 / v,
        lambda v: range(v),
        lambda v: "yes" if v else "no",
    ],
)
def test_every_numeric_use_is_refused_with_what_to_do(use):
    value = RuntimeValue("dropout", tf.Variable(0.5))
    with pytest.raises(RuntimeValueError) as e:
        use(value)
    assert isinstance(e.value, TypeError)
    assert "tpu_bo.train.layers.Dropout" in str(e.value)
    assert "--param=dropout:float:LOW:HIGH:structural" in str(e.value)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_a_plain_rate_outside_zero_to_one_is_refused(rate):
    with pytest.raises(ValueError, match=r"Dropout rate must be in \[0, 1\)"):
        Dropout(rate)


def test_a_zero_rate_keeps_everything_and_a_runtime_rate_of_one_is_clipped():
    x = tf.ones((500, 20))
    np.testing.assert_array_equal(Dropout(0.0)(x, training=True).numpy(), x.numpy())
    rate = tf.Variable(1.0)  # no check on a runtime value; the layer clips it to 0.99
    y = Dropout(RuntimeValue("dropout", rate), seed=3)(x, training=True).numpy()
    assert np.isfinite(y).all() and (y == 0).mean() > 0.95
    np.testing.assert_allclose(y[y != 0], 100.0, rtol=1e-4)


def test_dropout_computes_in_bfloat16_under_mixed_precision():
    layer = Dropout(0.5, seed=0, dtype="mixed_bfloat16")
    x = tf.ones((4, 300))
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16 and y.shape == x.shape
    np.testing.assert_array_equal(np.unique(tf.cast(y, tf.float32).numpy()), [0.0, 2.0])
    assert layer.supports_masking and layer.compute_output_shape((None, 3)) == (None, 3)


def test_a_seed_makes_the_draws_reproducible():
    x = tf.ones((50, 40))
    a = Dropout(0.5, seed=7)(x, training=True).numpy()
    b = Dropout(0.5, seed=7)(x, training=True).numpy()
    c = Dropout(0.5, seed=8)(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_config_saves_the_current_runtime_rate_as_a_number_and_round_trips():
    variable = tf.Variable(0.3)
    layer = Dropout(RuntimeValue("dropout", variable), seed=5, name="drop")
    variable.assign(0.2)
    config = layer.get_config()
    assert config["rate"] == pytest.approx(0.2) and isinstance(config["rate"], float)
    assert config["seed"] == 5 and config["name"] == "drop"
    again = Dropout.from_config(config)
    assert again.rate == pytest.approx(0.2) and again.seed == 5
    assert keras.saving.get_registered_object("tpu_bo>Dropout") is Dropout
