"""A user's own data and models, as docs/data_and_models.md shows them.

Each is named as ``--dataset=tests.user_data:NAME``.

* ``diabetes``: scikit-learn's bundled regression set, and ``regressor``, a model compiled
  with MSE loss and an MAE metric.
* ``tabular``: a dataset function of two splits whose features are a dict of a numeric vector
  and a categorical id, with a binary label; ``two_inputs`` is its compiled model (AUC).
* ``tfrecords``: the same examples read back from a TFRecord file (``TPU_BO_TFRECORDS``),
  parsed into dicts that ``--features``/``--label`` pick from; ``standardize`` preprocesses.
* ``flip``: an augmentation for images.
* Wrong ones, for the errors: ``not_datasets``, ``ragged``.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from tpu_bo.train.layers import Dropout

N_TABULAR, CATEGORIES = 1024, 6


def diabetes_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's diabetes set (442 patients, 10 features), targets scaled to unit size."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return x.astype(np.float32), ((y - y.mean()) / y.std()).astype(np.float32)


def diabetes() -> dict[str, tf.data.Dataset]:
    """The diabetes set as a dataset function: 352 train, 90 test examples."""
    x, y = diabetes_arrays()
    return {
        "train": tf.data.Dataset.from_tensor_slices((x[:352], y[:352])),
        "test": tf.data.Dataset.from_tensor_slices((x[352:], y[352:])),
    }


def regressor(hp, input_shape, num_classes):
    """A compiled regression model: MSE loss, MAE metric; ``units`` and ``dropout``."""
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Dense(int(hp.get("units", 32)), activation="relu"),
            Dropout(hp.get("dropout", 0.0)),
            keras.layers.Dense(1),
        ]
    )
    model.compile(loss="mse", metrics=["mae"])
    return model


def tabular_arrays(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Numeric and categorical features with a learnable binary label."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(N_TABULAR, 4)).astype(np.float32)
    category = rng.integers(0, CATEGORIES, size=N_TABULAR).astype(np.int64)
    logit = numeric @ np.array([1.5, -1.0, 0.5, 0.0]) + (category % 2) * 1.5 - 0.75
    label = (logit + rng.normal(scale=0.5, size=N_TABULAR) > 0).astype(np.float32)
    return {"numeric": numeric, "category": category}, label


def tabular() -> dict[str, object]:
    """Two splits of (dict features, binary label); the eval split is a callable."""
    x, y = tabular_arrays()
    cut = 768

    def part(lo: int, hi: int) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(({k: v[lo:hi] for k, v in x.items()}, y[lo:hi]))

    return {"train": part(0, cut), "validation": lambda: part(cut, N_TABULAR)}


def two_inputs(hp, input_shape, num_classes):
    """A two-input model (numeric vector and categorical id), compiled with AUC."""
    numeric = keras.Input(input_shape["numeric"], name="numeric")
    category = keras.Input(input_shape["category"], name="category", dtype="int32")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(CATEGORIES, 4)(category))
    hidden = keras.layers.Concatenate()([numeric, embedded])
    hidden = keras.layers.Dense(int(hp.get("units", 16)), activation="relu")(hidden)
    hidden = Dropout(hp.get("dropout", 0.0))(hidden)
    output = keras.layers.Dense(1, activation="sigmoid")(hidden)
    model = keras.Model({"numeric": numeric, "category": category}, output)
    model.compile(loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    return model


def write_tfrecords(path: str) -> None:
    """Writes the tabular examples as tf.train.Examples."""
    x, y = tabular_arrays()
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(N_TABULAR):
            feature = {
                "numeric": tf.train.Feature(float_list=tf.train.FloatList(value=x["numeric"][i])),
                "category": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[x["category"][i]])
                ),
                "label": tf.train.Feature(float_list=tf.train.FloatList(value=[y[i]])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def tfrecords() -> tf.data.Dataset:
    """The TFRecord file at ``$TPU_BO_TFRECORDS`` parsed into dicts (one ``train`` split)."""
    spec = {
        "numeric": tf.io.FixedLenFeature([4], tf.float32),
        "category": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.float32),
    }
    files = tf.data.TFRecordDataset(os.environ["TPU_BO_TFRECORDS"])
    return files.map(lambda record: tf.io.parse_single_example(record, spec))


def standardize(features, label):
    """A preprocess step: scales the numeric features (runs once, before the cache)."""
    return {**features, "numeric": features["numeric"] / 1.5}, label


def flip(image, label):
    """An augmentation: a random left-right flip of each image (every epoch, after the cache)."""
    return tf.image.random_flip_left_right(image), label


def not_datasets():
    """Wrong: returns a list."""
    return [1, 2, 3]


def ragged() -> tf.data.Dataset:
    """Wrong for a TPU: examples of varying length."""

    def examples():
        for i in range(64):
            yield np.ones(1 + i % 3, np.float32), np.int64(i % 2)

    signature = (tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int64))
    return tf.data.Dataset.from_generator(examples, output_signature=signature)
