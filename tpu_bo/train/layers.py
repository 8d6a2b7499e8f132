"""Runtime hyperparameters inside a model: :class:`RuntimeValue`, the layers that read one.

A model builder receives each searched *runtime* hyperparameter as a :class:`RuntimeValue`: a
handle on a variable that the trainer assigns at the start of every trial. A layer that reads
the variable inside its ``call`` follows the trial's value without re-tracing
(docs/DESIGN.md contract 1). Three kinds of layer do:

* :class:`Dropout`, tpu_bo's own;
* Keras's own noise layers (``Dropout``, ``SpatialDropout1D/2D/3D``, ``GaussianDropout``,
  ``GaussianNoise``, ``AlphaDropout``) while the trainer runs the builder
  (:func:`keras_layers_take_runtime_values`): constructed with a :class:`RuntimeValue`, each
  becomes its runtime twin, a subclass with the same maths reading the variable in ``call``
  (so ``isinstance(layer, keras.layers.Dropout)`` still holds); constructed with a number,
  it is Keras's own class untouched. A host model (runtime values as plain numbers: the saved
  best model, ``final/model.keras``) therefore holds plain Keras layers with the trial's number;
* any layer of the user's that reads ``value.read()`` (or :func:`runtime_tensor`) in ``call``.

Turning the handle into a Python number would bake one trial's value into the compiled
program, so it raises :class:`RuntimeValueError`. The trainer turns that (and any other error
of the builder about a runtime value, :func:`read_as_number`) into a plan: the parameter
becomes structural, one program per value (:meth:`tpu_bo.search.space.SearchSpace.read_as_number`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any

import keras
import tensorflow as tf


class RuntimeValueError(TypeError):
    """A runtime hyperparameter was used as a Python number while the model was built.

    Attributes:
      value: The :class:`RuntimeValue` so used.
      operation: What was done with it, e.g. ``float()`` or ``<``.
    """

    def __init__(self, value: RuntimeValue, operation: str) -> None:
        self.value, self.operation = value, operation
        super().__init__(
            f"hyperparameter {value.name!r} is a runtime value (a variable the trainer sets per "
            f"trial), so it cannot become a Python number ({operation}) while the model is "
            "built: pass it to a layer that reads it at run time (keras.layers.Dropout and its "
            "kin inside a study, tpu_bo.train.layers.Dropout anywhere, or .read() in a layer's "
            "call), or let it be structural, one program per value (a study does so by itself "
            f"unless the role is runtime; --param={value.name}:float:LOW:HIGH:structural)."
        )


def _refusal(operation: str) -> Any:
    def refuse(self: RuntimeValue, *_: Any) -> Any:
        raise RuntimeValueError(self, operation)

    return refuse


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

    __float__, __int__, __index__ = _refusal("float()"), _refusal("int()"), _refusal("index")
    __bool__ = _refusal("bool()")
    __lt__, __le__, __gt__, __ge__ = (_refusal(op) for op in ("<", "<=", ">", ">="))
    __add__ = __radd__ = _refusal("+")
    __sub__ = __rsub__ = _refusal("-")
    __mul__ = __rmul__ = _refusal("*")
    __truediv__ = __rtruediv__ = _refusal("/")
    __pow__ = __rpow__ = _refusal("**")
    __neg__ = _refusal("-")

    def __repr__(self) -> str:
        return f"RuntimeValue({self.name!r})"


def runtime_tensor(value: float | RuntimeValue, dtype: Any = tf.float32) -> tf.Tensor:
    """A tensor of ``value``, whether it is a plain number or a :class:`RuntimeValue`."""
    if isinstance(value, RuntimeValue):
        return value.read(dtype)
    return tf.constant(value, dtype)


def _inverted_dropout(
    inputs: tf.Tensor, rate: tf.Tensor, noise_shape: Any, seed: keras.random.SeedGenerator
) -> tf.Tensor:
    """Keras's dropout maths (``tf.nn.experimental.stateless_dropout``'s) with a tensor rate.

    The draw and the rate stay float32 even under mixed precision, so a rate like 0.1 is not
    rounded by bfloat16's 8-bit mantissa. A rate of 1 drops everything, as Keras does.
    """
    noise = keras.random.uniform(noise_shape, seed=seed)
    keep = tf.cast(noise >= rate, inputs.dtype)
    return inputs * keep * tf.cast(tf.math.divide_no_nan(1.0, 1.0 - rate), inputs.dtype)


@keras.saving.register_keras_serializable(package="tpu_bo")
class Dropout(keras.layers.Layer):
    """Inverted dropout whose rate may be a :class:`RuntimeValue`.

    Same maths as ``keras.layers.Dropout``: in training, each unit is zeroed with probability
    ``rate`` and the rest scaled by ``1 / (1 - rate)``; at inference it is the identity. The
    rate is read from its variable at run time, so every trial of a study shares one program.
    The random stream comes from a Keras ``SeedGenerator``, whose state the trainer resets per
    trial for reproducible draws. Inside a study, ``keras.layers.Dropout`` takes a runtime
    value too, with the very same draws.

    Args:
      rate: A float in ``[0, 1)`` or a :class:`RuntimeValue` (clipped to ``[0, 0.99]``).
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
        rate = tf.clip_by_value(runtime_tensor(self.rate), 0.0, 0.99)
        return _inverted_dropout(inputs, rate, tf.shape(inputs), self.seed_generator)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        rate = self.rate
        if isinstance(rate, RuntimeValue):
            rate = float(rate.variable.numpy())
        return {**super().get_config(), "rate": rate, "seed": self.seed}


# Keras's noise layers and their runtime twins. Each twin is built by its Keras class's own
# __init__ with a stand-in number (any value above 0, so Keras makes the seed generator), then
# holds the RuntimeValue and reads it in call with the maths of the Keras class's call.


def _twin_init(layer: Any, cls: type, key: str, args: tuple[Any, ...], kwargs: dict) -> None:
    value, args, kwargs = _take(key, args, kwargs)
    cls.__init__(layer, 0.5, *args, **kwargs)
    setattr(layer, key, value)


def _take(key: str, args: tuple[Any, ...], kwargs: dict) -> tuple[Any, tuple[Any, ...], dict]:
    """The layer's first argument (``rate`` or ``stddev``) and the other arguments."""
    if args:
        return args[0], args[1:], kwargs
    kwargs = dict(kwargs)
    return kwargs.pop(key, None), args, kwargs


def _read(value: RuntimeValue) -> tf.Tensor:
    return tf.clip_by_value(value.read(tf.float32), 0.0, 1.0)


def _number_config(config: dict[str, Any], key: str, value: RuntimeValue) -> dict[str, Any]:
    return {**config, key: float(value.variable.numpy())}


def _concrete_shape(inputs: tf.Tensor, noise_shape: Any) -> Any:
    """``Dropout``'s noise shape: ``None`` entries (or all of it) from the inputs' shape."""
    shape = keras.ops.shape(inputs)
    if noise_shape is None:
        return shape
    return [shape[i] if d is None else d for i, d in enumerate(noise_shape)]


class _RuntimeDropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` reading a :class:`RuntimeValue` rate in ``call``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _twin_init(self, keras.layers.Dropout, "rate", args, kwargs)

    def _noise_shape(self, inputs: tf.Tensor) -> Any:
        return _concrete_shape(inputs, self.noise_shape)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training:
            return inputs
        return _inverted_dropout(
            inputs, _read(self.rate), self._noise_shape(inputs), self.seed_generator
        )

    def get_config(self) -> dict[str, Any]:
        return _number_config(super().get_config(), "rate", self.rate)


def _spatial(cls: type) -> type:
    class Twin(_RuntimeDropout, cls):
        __doc__ = f"``keras.layers.{cls.__name__}`` reading a :class:`RuntimeValue` rate."

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _twin_init(self, cls, "rate", args, kwargs)

        def _noise_shape(self, inputs: tf.Tensor) -> Any:
            return self._get_noise_shape(inputs)

    Twin.__qualname__ = f"_Runtime{cls.__name__}"
    return Twin


class _RuntimeGaussianDropout(keras.layers.GaussianDropout):
    """``keras.layers.GaussianDropout`` reading a :class:`RuntimeValue` rate: multiplicative
    noise of mean 1 and standard deviation ``sqrt(rate / (1 - rate))``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _twin_init(self, keras.layers.GaussianDropout, "rate", args, kwargs)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training:
            return inputs
        rate = _read(self.rate)
        stddev = tf.cast(tf.sqrt(rate / (1.0 - rate)), self.compute_dtype)
        noise = keras.random.normal(
            keras.ops.shape(inputs),
            mean=1.0,
            stddev=stddev,
            dtype=self.compute_dtype,
            seed=self.seed_generator,
        )
        return inputs * noise

    def get_config(self) -> dict[str, Any]:
        return _number_config(super().get_config(), "rate", self.rate)


class _RuntimeGaussianNoise(keras.layers.GaussianNoise):
    """``keras.layers.GaussianNoise`` reading a :class:`RuntimeValue` standard deviation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _twin_init(self, keras.layers.GaussianNoise, "stddev", args, kwargs)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training:
            return inputs
        noise = keras.random.normal(
            keras.ops.shape(inputs),
            mean=0.0,
            stddev=tf.cast(_read(self.stddev), self.compute_dtype),
            dtype=self.compute_dtype,
            seed=self.seed_generator,
        )
        return inputs + noise

    def get_config(self) -> dict[str, Any]:
        return _number_config(super().get_config(), "stddev", self.stddev)


_ALPHA = 1.6732632423543772848170429916717
_SCALE = 1.0507009873554804934193349852946


class _RuntimeAlphaDropout(keras.layers.AlphaDropout):
    """``keras.layers.AlphaDropout`` reading a :class:`RuntimeValue` rate: dropped units go to
    SELU's negative saturation, then the affine correction keeps the mean and variance."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _twin_init(self, keras.layers.AlphaDropout, "rate", args, kwargs)

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not training:
            return inputs
        rate = _read(self.rate)
        alpha_p = -_ALPHA * _SCALE
        shape = self._get_concrete_noise_shape(inputs, self.noise_shape)
        kept = keras.random.uniform(shape, seed=self.seed_generator) >= rate
        kept = tf.cast(kept, inputs.dtype)
        a = ((1.0 - rate) * (1.0 + rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * rate
        x = inputs * kept + alpha_p * (1.0 - kept)
        return tf.cast(a, inputs.dtype) * x + tf.cast(b, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return _number_config(super().get_config(), "rate", self.rate)


TWINS: dict[type, type] = {
    keras.layers.Dropout: _RuntimeDropout,
    keras.layers.SpatialDropout1D: _spatial(keras.layers.SpatialDropout1D),
    keras.layers.SpatialDropout2D: _spatial(keras.layers.SpatialDropout2D),
    keras.layers.SpatialDropout3D: _spatial(keras.layers.SpatialDropout3D),
    keras.layers.GaussianDropout: _RuntimeGaussianDropout,
    keras.layers.GaussianNoise: _RuntimeGaussianNoise,
    keras.layers.AlphaDropout: _RuntimeAlphaDropout,
}
for _cls, _twin in TWINS.items():
    # Keras names a layer after its class: a twin is named as its Keras class would be
    # ("dropout", "dropout_1"...), so a tower's layers and its host model's have the same names.
    _twin.__name__ = _cls.__name__
_KEYS = {keras.layers.GaussianNoise: "stddev"}  # the others' first argument is ``rate``
_ROOTS = [c for c in TWINS if not any(c is not o and issubclass(c, o) for o in TWINS)]

_lock = threading.Lock()
_depth = 0
_own_new: dict[type, Any] = {}  # each patched class's own __new__ (None: inherited)
_local = threading.local()  # per thread: the layers made in each open context


@contextlib.contextmanager
def keras_layers_take_runtime_values() -> Iterator[None]:
    """While open, Keras's noise layers accept a :class:`RuntimeValue` (see the module
    docstring); the trainer opens it around every call of the builder.

    Every Keras noise layer made inside also gets its seed generator when its number is 0
    (Keras makes none then), so a tower, whose runtime twin always has one, and the host model
    of a trial whose rate is 0 hold the same variables. Seed states are not saved with the
    weights, so a saved model is as Keras would save it. Nested and concurrent uses are safe:
    the classes are patched while any is open, and a number still builds Keras's own class.
    """
    global _depth
    made: list[Any] = []
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(made)
    with _lock:
        if _depth == 0:
            for cls in _ROOTS:
                _own_new[cls] = cls.__dict__.get("__new__")
                cls.__new__ = staticmethod(_new)
        _depth += 1
    try:
        yield
        for layer in made:
            _give_seed_generator(layer)
    finally:
        stack.pop()
        with _lock:
            _depth -= 1
            if _depth == 0:
                for cls in _ROOTS:
                    own = _own_new.pop(cls)
                    if own is None:
                        del cls.__new__  # inherited again (Keras's Layer.__new__)
                    else:
                        cls.__new__ = own


def _new(cls: type, *args: Any, **kwargs: Any) -> Any:
    """The patched ``__new__`` of Keras's noise layers: the runtime twin for a runtime value."""
    if cls in TWINS:
        value, _, _ = _take(_KEYS.get(cls, "rate"), args, kwargs)
        if isinstance(value, RuntimeValue):
            cls = TWINS[cls]
    layer = keras.layers.Layer.__new__(cls, *args, **kwargs)
    stack = getattr(_local, "stack", None)
    if stack:
        stack[-1].append(layer)
    return layer


def _give_seed_generator(layer: Any) -> None:
    if getattr(layer, "seed_generator", None) is not None:
        return
    layer._tracker.unlock()  # Keras locks a layer's state once it is built
    try:
        layer.seed_generator = keras.random.SeedGenerator(layer.seed)
    finally:
        layer._tracker.lock()


def read_as_number(error: BaseException, values: Iterable[Any]) -> tuple[RuntimeValue, str] | None:
    """Which runtime value ``error`` (raised by a builder) is about, and what read it.

    An error is about a runtime value when it is a :class:`RuntimeValueError`, or when its
    message shows a :class:`RuntimeValue` that one of its frames holds (Keras checks a number
    with ``isinstance`` and names the value it was given: ``keras.regularizers.L2`` raises
    ``ValueError: Invalid value for argument l2 ... RuntimeValue('l2')``).

    Args:
      error: What the builder raised, caught by the caller of the builder.
      values: The values the builder was given (runtime ones as :class:`RuntimeValue`).

    Returns:
      ``(value, by)``: ``by`` names the callable the builder handed the value to (its public
      Keras name when it has one, e.g. ``keras.regularizers.L2``), else the operation and the
      builder's function (``float() in my_models.build``); ``None`` when no runtime value is
      to blame.
    """
    handles = [v for v in values if isinstance(v, RuntimeValue)]
    frames = _frames(error)
    value = error.value if isinstance(error, RuntimeValueError) else None
    if value is None:
        try:
            message = str(error)
        except Exception:  # noqa: BLE001 - an exception whose str fails is no evidence
            return None
        if "RuntimeValue" not in message:
            return None
        held = [h for h in handles if any(_holds(f, h) for f in frames)]
        shown = [h for h in held if repr(h) in message]
        value = (shown or held or [None])[0]
        if value is None:
            return None
    if not frames:
        return value, getattr(error, "operation", type(error).__name__)
    user = frames[0].f_globals.get("__name__")
    for frame in frames:
        if frame.f_globals.get("__name__") != user and _holds(frame, value):
            return value, _callable_name(frame)
    inner = [f for f in frames if f.f_globals.get("__name__") == user][-1]
    operation = getattr(error, "operation", type(error).__name__)
    return value, f"{operation} in {user}.{inner.f_code.co_name}"


def _frames(error: BaseException) -> list[FrameType]:
    """The frames from the builder to where ``error`` was raised, without the catcher's and
    without :class:`RuntimeValue`'s own."""
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return [f for f in frames[1:] if f.f_code.co_filename != __file__]


def _holds(frame: FrameType, value: RuntimeValue) -> bool:
    return any(v is value for v in frame.f_locals.values())


def _callable_name(frame: FrameType) -> str:
    """The public name of what ``frame`` runs: its object's class, or its function."""
    owner = frame.f_locals.get("self")
    target = type(owner) if owner is not None else frame.f_globals.get(frame.f_code.co_name)
    path = getattr(target, "_api_export_path", None)  # Keras's public name
    if isinstance(path, (list, tuple)) and path:
        path = path[0]
    if isinstance(path, str):
        return path
    names = getattr(target, "_tf_api_names", None)  # TensorFlow's
    if names:
        return f"tf.{names[0]}"
    if target is not None and hasattr(target, "__qualname__"):
        return f"{target.__module__}.{target.__qualname__}"
    return f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}"
