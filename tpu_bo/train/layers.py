"""Runtime hyperparameters inside a model: :class:`RuntimeValue`, and a :class:`Dropout` using one.

A model builder receives each searched *runtime* hyperparameter as a :class:`RuntimeValue`: a
handle on a variable that the trainer assigns at the start of every trial. A layer that reads
the variable inside its ``call`` follows the trial's value without re-tracing. Turning the
handle into a Python number would bake one trial's value into the compiled program, so it
raises a ``TypeError`` that says what to do instead.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class RuntimeValueError(TypeError):
    """A runtime hyperparameter was used as a Python number while the model was built."""


class RuntimeValue:
    """A runtime hyperparameter as the model builder sees it.

    Attributes:
      name: The hyperparameter's name.
      variable: The ``tf.Variable`` (float32 scalar) holding the current trial's value.
    """

    def __init__(self, name: str, variable: tf.Variable) -> None:
        self.name = name
        self.variable = variable

    def read(self, dtype: Any = tf.float32) -> tf.Tensor:
        """The current value as a tensor, for use inside a layer's ``call``."""
        return tf.cast(self.variable, dtype)

    def _refuse(self, *_: Any) -> Any:
        raise RuntimeValueError(
            f"hyperparameter {self.name!r} is a runtime value (a variable the trainer sets per "
            "trial), so it cannot become a Python number while the model is built; pass it to "
            "tpu_bo.train.layers.Dropout, read it with .read() inside a layer, or give it the "
            f"role structural (e.g. --param={self.name}:float:LOW:HIGH:structural)."
        )

    __float__ = __int__ = __index__ = __bool__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = _refuse

    def __repr__(self) -> str:
        return f"RuntimeValue({self.name!r})"


def runtime_tensor(value: float | RuntimeValue, dtype: Any = tf.float32) -> tf.Tensor:
    """A tensor of ``value``, whether it is a plain number or a :class:`RuntimeValue`."""
    if isinstance(value, RuntimeValue):
        return value.read(dtype)
    return tf.constant(value, dtype)


@keras.saving.register_keras_serializable(package="tpu_bo")
class Dropout(keras.layers.Layer):
    """Inverted dropout whose rate may be a :class:`RuntimeValue`.

    Same maths as ``keras.layers.Dropout``: in training, each unit is zeroed with probability
    ``rate`` and the rest scaled by ``1 / (1 - rate)``; at inference it is the identity. The
    rate is read from its variable at run time, so every trial of a study shares one program.
    The random stream comes from a Keras ``SeedGenerator``, whose state the trainer resets per
    trial for reproducible draws.

    Args:
      rate: A float in ``[0, 1)`` or a :class:`RuntimeValue`.
      seed: Optional seed for the random stream.
    """

    def __init__(self, rate: float | RuntimeValue, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(rate, RuntimeValue) and not 0 <= float(rate) < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}.")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training:
            return inputs
        # The draw and the rate stay float32 even under mixed precision, so a rate like 0.1
        # is not rounded by bfloat16's 8-bit mantissa.
        rate = tf.clip_by_value(runtime_tensor(self.rate), 0.0, 0.99)
        noise = keras.random.uniform(tf.shape(inputs), seed=self.seed_generator)
        keep = tf.cast(noise >= rate, inputs.dtype)
        return inputs * keep * tf.cast(1.0 / (1.0 - rate), inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        rate = self.rate
        if isinstance(rate, RuntimeValue):
            rate = float(rate.variable.numpy())
        return {**super().get_config(), "rate": rate, "seed": self.seed}
