"""Built-in models, user builders, and runtime hyperparameters inside a model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tpu_bo.errors import ConfigError
from tpu_bo.train import models
from tpu_bo.train.layers import Dropout, RuntimeValue, RuntimeValueError


def test_mnist_cnn_is_the_blog_network():
    model = models.mnist_cnn(models.HParams({"dense_units": 256}), (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert [model.layers[i].filters for i in (0, 1)] == [32, 64]
    assert model.layers[5].units == 256 and model.layers[-1].units == 10
    assert model.layers[3].rate == 0.25 and model.layers[6].rate == 0.5
    assert model.output_shape == (None, 10)
    assert model.count_params() == 320 + 18_496 + 9216 * 256 + 256 + 2570


def test_mlp_depth_and_width():
    model = models.mlp(models.HParams({"num_layers": 3, "hidden_units": 32}), (8, 8, 1), 10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [32, 32, 32, 10]


def test_hparams_records_what_the_builder_reads():
    hp = models.HParams({"dense_units": 128, "typo_units": 3})
    models.mnist_cnn(hp, (28, 28, 1), 10)
    assert hp.requested == {"dense_units", "dropout_1", "dropout_2"}


def test_get_builder_resolves_names_and_imports():
    assert models.get_builder("mnist_cnn") is models.mnist_cnn
    from tests import custom_models

    assert models.get_builder("tests.custom_models:tiny") is custom_models.tiny


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("resnet9000", "unknown model 'resnet9000'"),
        ("no_such_pkg.mod:build", "cannot import module 'no_such_pkg.mod'"),
        ("tests.custom_models:missing", "has no function 'missing'"),
    ],
)
def test_bad_model_names(name, needle):
    with pytest.raises(ConfigError) as info:
        models.get_builder(name)
    assert info.value.flag == "model" and needle in info.value.message


def test_softmax_output_is_detected():
    from tests import custom_models

    hp = models.HParams({})
    assert models.outputs_probabilities(custom_models.tiny_softmax(hp, (4,), 3))
    assert not models.outputs_probabilities(custom_models.tiny(hp, (4,), 3))


def test_runtime_value_refuses_to_become_a_number():
    value = RuntimeValue("dropout", tf.Variable(0.5))
    for use in (float, int, bool, lambda v: v > 0, lambda v: v * 2):
        with pytest.raises(RuntimeValueError, match="'dropout' is a runtime value"):
            use(value)
    with pytest.raises(RuntimeValueError):  # keras' own Dropout compares its rate
        keras.layers.Dropout(value)


def test_dropout_follows_its_variable_without_retracing():
    rate = tf.Variable(0.0)
    layer = Dropout(RuntimeValue("dropout", rate), seed=1)
    traces = []

    @tf.function
    def apply(x):
        traces.append(1)
        return layer(x, training=True)

    x = tf.ones((1000, 100))
    np.testing.assert_array_equal(apply(x).numpy(), x.numpy())
    rate.assign(0.75)
    y = apply(x).numpy()
    assert abs((y == 0).mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[y != 0], 4.0)  # survivors scaled by 1 / (1 - rate)
    assert len(traces) == 1
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())


def test_dropout_accepts_a_plain_rate():
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        Dropout(1.0)
    y = Dropout(0.5, seed=0)(tf.ones((2000,)), training=True).numpy()
    assert abs((y == 0).mean() - 0.5) < 0.05
