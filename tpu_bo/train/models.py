"""Model builders: the built-in ones and the lookup of a user's own.

A *builder* is any function ``build(hp, input_shape, num_classes) -> keras.Model`` that returns
an uncompiled model. ``hp`` is a read-only mapping of hyperparameter values:

* structural and fixed hyperparameters arrive as plain Python values;
* runtime hyperparameters (see :mod:`tpu_bo.search.space`) arrive as
  :class:`tpu_bo.train.layers.RuntimeValue` handles, to be passed to layers that read them at run
  time: Keras's own ``Dropout``, ``SpatialDropout1D/2D/3D``, ``GaussianDropout``,
  ``GaussianNoise`` and ``AlphaDropout`` (the builder runs under
  :func:`tpu_bo.train.layers.keras_layers_take_runtime_values`), or
  :class:`tpu_bo.train.layers.Dropout`. A runtime hyperparameter the builder reads as a number
  anyway (``keras.regularizers.L2(hp["l2"])``) becomes structural at the study's first build:
  one program per value, and the study's header says so.

Read optional hyperparameters with ``hp.get(name, default)``. The model should output logits;
a final softmax is detected and handled. The trainer calls the builder once per program (and
again, on the host, to draw each trial's fresh initial weights), so it must build the same
variables every time for the same structural values.

``--model`` names a built-in (``mnist_cnn``, ``mlp``) or ``package.module:function``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tpu_bo.config import import_function
from tpu_bo.errors import ConfigError

Builder = Callable[..., Any]


class HParams(Mapping[str, Any]):
    """The hyperparameters handed to a builder; records which names the builder asked for."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self.requested: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        self.requested.add(name)
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.requested.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"HParams({self._values!r})"


def mnist_cnn(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> Any:
    """The blog post's CNN (Keras' classic MNIST example).

    Conv 32 -> Conv 64 -> MaxPool -> Dropout(``dropout_1``, 0.25) -> Flatten ->
    Dense(``dense_units``, 128) -> Dropout(``dropout_2``, 0.5) -> Dense(classes).

    Hyperparameters: ``dense_units`` (structural), ``dropout_1`` and ``dropout_2`` (runtime).
    """
    import keras

    from tpu_bo.train.layers import Dropout

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            Dropout(hp.get("dropout_1", 0.25)),
            keras.layers.Flatten(),
            keras.layers.Dense(int(hp.get("dense_units", 128)), activation="relu"),
            Dropout(hp.get("dropout_2", 0.5)),
            # float32 logits even under mixed precision: the loss needs the range.
            keras.layers.Dense(num_classes, dtype="float32"),
        ],
        name="mnist_cnn",
    )


def mlp(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A small multilayer perceptron.

    Flatten -> ``num_layers`` x [Dense(``hidden_units``, relu) -> Dropout(``dropout``)] ->
    Dense(classes). Defaults: 2 layers of 128 units, dropout 0.2.

    Hyperparameters: ``hidden_units``, ``num_layers`` (structural), ``dropout`` (runtime).
    """
    import keras

    from tpu_bo.train.layers import Dropout

    layers: list[Any] = [keras.Input(input_shape), keras.layers.Flatten()]
    dropout = hp.get("dropout", 0.2)
    for _ in range(int(hp.get("num_layers", 2))):
        layers += [
            keras.layers.Dense(int(hp.get("hidden_units", 128)), activation="relu"),
            Dropout(dropout),
        ]
    layers.append(keras.layers.Dense(num_classes, dtype="float32"))
    return keras.Sequential(layers, name="mlp")


BUILTIN: dict[str, Builder] = {"mnist_cnn": mnist_cnn, "mlp": mlp}


def get_builder(model: str | Builder) -> Builder:
    """Resolves ``--model`` to a builder function.

    Args:
      model: A builder, a built-in name, or ``package.module:function``.

    Raises:
      ConfigError: naming ``model``, when the name is unknown or cannot be imported.
    """
    if callable(model):
        return model
    if model in BUILTIN:
        return BUILTIN[model]
    module_name, sep, attr = model.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            "model",
            f"unknown model {model!r}; use {', '.join(BUILTIN)} or package.module:function.",
        )
    return import_function(model, "model")


def build_model(
    builder: Builder,
    values: Mapping[str, Any],
    input_shape: Any,
    num_classes: int | None,
    *,
    example: Any = None,
) -> Any:
    """Calls ``builder`` with ``values`` as :class:`HParams` and builds the model's weights.

    Keras's noise layers take runtime values, and get their seed generator at a rate of 0
    (:func:`tpu_bo.train.layers.keras_layers_take_runtime_values`), as in the trainer's towers:
    a host model of plain numbers holds plain Keras layers and the towers' variables.

    Args:
      input_shape: One example's feature shape, or a dict of them (dict features).
      example: A batch of features to build an unbuilt model by calling it; by default, zeros
        of ``input_shape`` (float32).
    """
    if isinstance(input_shape, Mapping):
        input_shape = {k: tuple(v) for k, v in input_shape.items()}
    else:
        input_shape = tuple(input_shape)
    from tpu_bo.train.layers import keras_layers_take_runtime_values

    with keras_layers_take_runtime_values():
        model = builder(HParams(values), input_shape, num_classes)
        if example is None:
            example = _zeros(input_shape)
        ensure_built(model, example)
    return model


def json_shape(shape: Any) -> Any:
    """An input shape (or a dict of them) as JSON lists."""
    if isinstance(shape, Mapping):
        return {k: list(v) for k, v in shape.items()}
    return list(shape)


def ensure_built(model: Any, example: Any) -> None:
    """Builds an unbuilt model's weights by calling it on ``example`` (a batch of features)."""
    if model.built:
        return
    if not isinstance(example, Mapping):
        model.build((None, *example.shape[1:]))
    else:
        model(example, training=False)


def _zeros(input_shape: Any) -> Any:
    import numpy as np

    if isinstance(input_shape, Mapping):
        return {k: np.zeros((1, *v), np.float32) for k, v in input_shape.items()}
    return np.zeros((1, *input_shape), np.float32)


def outputs_probabilities(model: Any) -> bool:
    """Whether the model ends in a softmax (so its outputs are probabilities, not logits)."""
    import keras

    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(last, "activation", None)
    return activation is keras.activations.softmax or isinstance(last, keras.layers.Softmax)


def save_model_weights(model: Any, path: str) -> None:
    """``model.save_weights`` to any ``tf.io.gfile`` path (Keras writes only local files)."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        model.save_weights(local)
        tf.io.gfile.makedirs(os.path.dirname(path) or ".")
        tf.io.gfile.copy(local, path, overwrite=True)


def load_model_weights(model: Any, path: str) -> None:
    """``model.load_weights`` from any ``tf.io.gfile`` path (Keras reads only local files)."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        tf.io.gfile.copy(path, local)
        model.load_weights(local)
