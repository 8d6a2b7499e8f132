"""RuntimeValue, tpu_bo.train.layers.Dropout and Keras's noise layers taking runtime values.

test_models.py covers the refusals float/int/bool/>/*, keras' own Dropout refusing a runtime
value outside a study's build, a rate that follows its variable without retracing, a plain
rate, and whole studies over builders with plain Keras layers and a parameter read as a number.
"""

from __future__ import annotations

import operator

import keras
import numpy as np
import pytest
import tensorflow as tf

from tpu_bo.train.layers import (
    Dropout,
    RuntimeValue,
    RuntimeValueError,
    keras_layers_take_runtime_values,
    read_as_number,
    runtime_tensor,
)


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


NOISE_LAYERS = [
    ("Dropout", {"noise_shape": (None, 1, 1, 6)}, 4),
    ("SpatialDropout1D", {}, 3),
    ("SpatialDropout2D", {"data_format": "channels_first"}, 4),
    ("SpatialDropout3D", {}, 5),
    ("GaussianDropout", {}, 4),
    ("GaussianNoise", {}, 4),
    ("AlphaDropout", {"noise_shape": (None, 1, 5, 6)}, 4),
]


@pytest.mark.parametrize(("kind", "kwargs", "rank"), NOISE_LAYERS)
def test_each_keras_noise_layer_follows_a_runtime_value_with_keras_own_maths(kind, kwargs, rank):
    cls = getattr(keras.layers, kind)
    variable = tf.Variable(0.3)
    with keras_layers_take_runtime_values():
        tuned = cls(RuntimeValue("rate", variable), seed=11, **kwargs)
        plain = {r: cls(r, seed=11, **kwargs) for r in (0.3, 0.6)}
    assert isinstance(tuned, cls) and type(tuned) is not cls
    assert all(type(layer) is cls for layer in plain.values())
    traces = []

    @tf.function
    def apply(x):
        traces.append(1)
        return tuned(x, training=True)

    x = tf.random.stateless_normal((8, 4, 5, 6, 3)[:rank], seed=(1, 2)) + 1.0
    for rate in (0.3, 0.6):
        variable.assign(rate)
        tuned.seed_generator.state.assign(plain[rate].seed_generator.state)  # the same stream
        got, want = apply(x).numpy(), plain[rate](x, training=True).numpy()
        np.testing.assert_array_equal(got == 0, want == 0)  # the same draws
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert not np.allclose(got, x.numpy())
    assert len(traces) == 1
    np.testing.assert_array_equal(tuned(x, training=False).numpy(), x.numpy())
    key = "stddev" if kind == "GaussianNoise" else "rate"
    config = tuned.get_config()
    assert config[key] == pytest.approx(0.6) and type(config[key]) is float
    again = cls.from_config(config)  # the config builds Keras's own class with the number
    assert type(again) is cls and getattr(again, key) == pytest.approx(0.6)
    assert "__new__" not in cls.__dict__  # the patch ends with the context


def test_outside_the_context_keras_refuses_a_runtime_value_and_a_failed_build_unpatches():
    value = RuntimeValue("dropout", tf.Variable(0.5))
    with pytest.raises(RuntimeError, match="the builder failed"):
        with keras_layers_take_runtime_values():
            with keras_layers_take_runtime_values():  # nested, as a host model in a build
                keras.layers.GaussianDropout(value)
            raise RuntimeError("the builder failed")
    for cls in (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.AlphaDropout):
        assert "__new__" not in cls.__dict__
    with pytest.raises(RuntimeValueError, match="keras.layers.Dropout and its kin"):
        keras.layers.Dropout(value)


def test_a_twin_under_mixed_precision_computes_in_bfloat16_with_a_float32_rate():
    variable = tf.Variable(0.1)
    with keras_layers_take_runtime_values():
        layer = keras.layers.Dropout(RuntimeValue("dropout", variable), dtype="mixed_bfloat16")
    y = layer(tf.ones((100, 100)), training=True)
    assert y.dtype == tf.bfloat16
    assert abs(float(tf.reduce_mean(tf.cast(y == 0, tf.float32))) - 0.1) < 0.02


def test_a_keras_noise_layer_of_rate_zero_gets_its_seed_generator_and_saves_as_keras_would(
    tmp_path,
):
    """A tower's twin always has a seed generator; the host model of a trial whose rate is 0
    must hold the same variables, and still save and load as plain Keras."""
    with keras_layers_take_runtime_values():
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.0)]
        )
        twin = keras.layers.Dropout(RuntimeValue("dropout", tf.Variable(0.0)))
    assert [v.name for v in model.layers[1].variables] == ["seed_generator_state"]
    assert [v.name for v in twin.variables] == ["seed_generator_state"]
    assert len(keras.layers.Dropout(0.0).variables) == 0  # Keras's own, outside
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[1]) is keras.layers.Dropout and loaded.layers[1].rate == 0.0
    np.testing.assert_array_equal(loaded.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())


def _l2(hp):
    return keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(hp["l2"]))


def _slope(hp):
    return keras.layers.LeakyReLU(negative_slope=hp["l2"])


def _float(hp):
    return float(hp["l2"])


@pytest.mark.parametrize(
    ("build", "by"),
    [
        (_l2, "keras.regularizers.L2"),  # Keras's isinstance check: a ValueError naming it
        (_slope, "keras.layers.LeakyReLU"),  # a comparison in Keras's __init__
        (_float, f"float() in {__name__}._float"),  # in the builder itself
    ],
)
def test_read_as_number_names_the_value_and_what_read_it(build, by):
    value = RuntimeValue("l2", tf.Variable(0.01))
    other = RuntimeValue("dropout", tf.Variable(0.1))
    try:
        build({"l2": value})
    except Exception as e:  # noqa: BLE001 - whatever the callee raises
        assert read_as_number(e, [other, value, 3]) == (value, by)
    else:
        pytest.fail("the build did not fail")


def test_read_as_number_ignores_an_error_about_something_else():
    value = RuntimeValue("l2", tf.Variable(0.01))
    try:
        keras.layers.Dense(-1)
    except ValueError as e:
        assert read_as_number(e, [value]) is None
