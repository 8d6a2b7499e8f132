"""User-style model builders for tests (reached as ``--model=tests.custom_models:NAME``)."""

from __future__ import annotations

import keras

from tpu_bo.train.layers import Dropout


def tiny(hp, input_shape, num_classes):
    """A small dense net: ``width`` (structural) and ``dropout`` (runtime)."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(int(hp.get("width", 16)), activation="relu"),
            Dropout(hp.get("dropout", 0.0)),
            keras.layers.Dense(num_classes),
        ]
    )


def tiny_softmax(hp, input_shape, num_classes):
    """Like ``tiny`` but ending in a softmax, as many Keras tutorials do."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )


def bakes_a_runtime_value(hp, input_shape, num_classes):
    """Wrongly turns a runtime hyperparameter into a Python float."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dropout(float(hp["dropout"])),
            keras.layers.Dense(num_classes),
        ]
    )


def not_a_model(hp, input_shape, num_classes):
    """Returns something that is not a Keras model."""
    return "a string"


class Gain(keras.layers.Layer):
    """Multiplies its input by 10**exponent; a large runtime exponent overflows float32."""

    def __init__(self, exponent, **kwargs):
        super().__init__(**kwargs)
        self.exponent = exponent

    def call(self, x):
        import tensorflow as tf

        from tpu_bo.train.layers import runtime_tensor

        return x * tf.pow(10.0, runtime_tensor(self.exponent))


def diverging(hp, input_shape, num_classes):
    """A small net whose ``gain`` (runtime) makes training diverge when it is large."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            Gain(hp.get("gain", 0.0)),
            keras.layers.Dense(num_classes),
        ]
    )


def three_way_softmax(hp, input_shape, num_classes):
    """Compiled for one-hot labels of three classes; wrong for a binary label."""
    inputs = {k: keras.Input(v, name=k) for k, v in input_shape.items()}
    hidden = keras.layers.Concatenate()([keras.layers.Flatten()(v) for v in inputs.values()])
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(loss="categorical_crossentropy")
    return model


def host_initializer(hp, input_shape, num_classes):
    """Like ``tiny``, with a kernel initializer that only runs eagerly (it calls ``.numpy()``),
    so its fresh weights cannot be drawn in a traced call."""
    import numpy as np
    import tensorflow as tf

    def eager_only(shape, dtype=None):
        scale = float(tf.random.uniform([]).numpy())  # fails while tracing
        return np.full(shape, 0.01 * (1 + scale), dtype="float32")

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu", kernel_initializer=eager_only),
            Dropout(hp.get("dropout", 0.0)),
            keras.layers.Dense(num_classes),
        ]
    )


def batch_norm(hp, input_shape, num_classes):
    """Like ``tiny``, with a ``BatchNormalization``: its moving statistics are per-replica
    state (each replica updates them from its own share of the batch)."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            Dropout(hp.get("dropout", 0.0)),
            keras.layers.Dense(num_classes),
        ]
    )
