"""Heads: the default classification loss, and a compiled model's own loss and metrics."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tpu_bo.errors import ConfigError
from tpu_bo.train import heads
from tpu_bo.train.program import Tower


def test_the_default_loss_is_keras_cross_entropy_with_label_smoothing():
    logits = tf.constant([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    labels = tf.constant([0, 2])
    plain = heads.default_loss(logits, labels, None, probabilities=False)
    expected = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
    smoothed = heads.default_loss(logits, labels[:, None], tf.constant(0.1), probabilities=False)
    one_hot = tf.one_hot(labels, 3)
    expected = keras.losses.categorical_crossentropy(
        one_hot, logits, from_logits=True, label_smoothing=0.1
    )
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)
    probs = heads.default_loss(tf.nn.softmax(logits), labels, None, probabilities=True)
    np.testing.assert_allclose(probs, plain, rtol=1e-5)


def compiled_tower(**compile_args):
    tower = Tower(["learning_rate", "label_smoothing"])
    tower.model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    if compile_args:
        tower.model.compile(**compile_args)
    return tower


ZEROS = (tf.zeros((2, 2)), tf.zeros((2,)))


def test_a_compiled_model_keeps_its_loss_and_metrics_and_honours_the_padding_weight():
    tower = compiled_tower(loss="mse", metrics=["mae"])
    heads.attach(tower, ZEROS, name="m", smoothing=False)
    assert tower.compiled and heads.metric_names(tower) == ["mae"]
    y, outputs = tf.constant([1.0, 3.0, 100.0]), tf.zeros((3, 1))
    heads.update_compiled_metrics(tower.model, y, outputs, tf.constant([1.0, 1.0, 0.0]))
    assert float(heads.compiled_metrics(tower)["mae"]) == pytest.approx(2.0)  # not 104 / 3
    heads.reset_compiled_metrics([tower])
    assert float(heads.compiled_metrics(tower)["mae"]) == 0.0
    plain = compiled_tower()
    heads.attach(plain, ZEROS, name="m", smoothing=True)
    assert not plain.compiled and heads.metric_names(plain) == ["accuracy"]


def test_a_compiled_head_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="compiled its model without a loss"):
        heads.attach(compiled_tower(metrics=["mae"]), ZEROS, name="m", smoothing=False)
    with pytest.raises(ConfigError) as error:
        heads.attach(compiled_tower(loss="mse"), ZEROS, name="m", smoothing=True)
    assert error.value.flag == "param" and "label_smoothing" in error.value.message


def test_labels_that_do_not_fit_the_default_head_name_label():
    tower = compiled_tower()
    with pytest.raises(ConfigError) as error:
        heads.check_labels(tower, ZEROS, tf.TensorSpec([], tf.float32), None, name="m",
                           host_model=lambda: None)  # fmt: skip
    assert error.value.flag == "label" and "labels (float32[])" in error.value.message
    assert heads.describe({"a": tf.TensorSpec([3], tf.int32)}) == "{'a': 'int32[3]'}"
