"""Programs: K towers of one structure and the two traced functions that run them.

Contract (docs/DESIGN.md contracts 1, 3 and 4):

* A :class:`Program` is ``width`` towers built in the strategy's scope for one combination of
  structural values, plus a train and an eval ``tf.function``. It is traced once; every trial
  it ever runs only assigns variables.
* A :class:`Tower` is one trial's slot: its own Keras model, optimizer and runtime-hyperparameter
  variables (learning rate, label smoothing, the searched runtime values). The optimizer is a
  copy of the one the builder compiled the model with (else ``--optimizer``'s), given
  explicitly or not (:func:`make_optimizer`); it reads its learning rate, and any searched
  ``weight_decay``, ``beta_1``, ``beta_2``, ``momentum`` or ``epsilon``, from the tower's
  variables at every step, so a frozen tower (rate 0) computes but its weights do not move
  (but for a momentum's leftover velocity: its trial's values were kept when it ended).
* The train function runs ``steps`` steps per host call: it loops
  ``strategy.run(step, (next(iterator),))`` over ``tf.range(steps)`` on the study's persistent
  distributed iterator (the same code under TPUStrategy, MirroredStrategy and the default
  strategy). The towers' losses are summed, so each tower receives exactly its own gradients.
  It returns each tower's summed loss over the call.
* The eval function sums, per tower, the weighted loss, the weighted hits and the weights of
  every batch of a padded split, so every example counts exactly once.
* Heads: a model the builder returns *uncompiled* gets the default head (sparse categorical
  cross-entropy with the runtime ``label_smoothing``, and accuracy). A model compiled with a
  loss keeps its own: training calls its ``compute_loss``; evaluation its ``compute_loss``
  with the padding weights and its compiled metrics, whose state every tower keeps for itself
  and the eval program resets at every evaluation.
* Every traced function is called under :func:`tpu_bo.device.placement.on_host`: the
  strategy's host is its default device whatever the caller's ``tf.device`` scope, since on
  TPUStrategy's packed path an update left to the default device is written to every replica
  only when that device is none of theirs (:mod:`tpu_bo.device.placement`).
* Models are built under :func:`precision`, which sets the Keras dtype policy only while they are
  built and restores the caller's afterwards.

Towers are separate Keras models, the form measured in bench/RESULTS.md; they are built in
``Trainer._build`` and run in :func:`make_functions`, the two places a fused form would change.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo.config import DEFAULT_OPTIMIZER, OPTIMIZERS
from tpu_bo.data.pipeline import EvalData
from tpu_bo.device.placement import on_host
from tpu_bo.errors import ConfigError, first_line
from tpu_bo.records import Checkpoint
from tpu_bo.search.space import OPTIMIZER_RUNTIME, SearchSpace
from tpu_bo.train import models
from tpu_bo.train.heads import (
    compiled_metrics,
    compute_loss,
    default_loss,
    metric_names,
    reset_compiled_metrics,
    update_compiled_metrics,
)
from tpu_bo.train.layers import RuntimeValue
from tpu_bo.train.reset import device_reset, host_reset, make_copy, restore

log = logging.getLogger("tpu_bo")


@contextlib.contextmanager
def precision(mixed: bool) -> Iterator[None]:
    """Builds models in ``mixed_bfloat16`` (or ``float32``), restoring the caller's policy after.

    bfloat16 is the TPU's native type and needs no loss scaling, so no scale shared by the
    towers of a pack can couple them.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class Tower:
    """One trial's slot in a program: its own model, optimizer and hyperparameter variables.

    Attributes:
      runtime_vars: One float32 variable per runtime hyperparameter name.
      hp_values: The values the builder received (runtime ones as ``RuntimeValue`` handles).
      model: The tower's Keras model.
      optimizer: Its optimizer (:func:`make_optimizer`), whose learning rate reads
        ``runtime_vars["learning_rate"]``.
      optimizer_class: The optimizer's Keras class name (a trial's record holds it).
      runtime_defaults: A runtime variable's value when a trial gives none (the optimizer's
        learning rate; else 0).
      optimizer_snapshot: Host copies of the freshly built optimizer state.
      trips: Counts the values it reads to the host and writes from it (its trainer's).
    """

    def __init__(self, runtime_names: Iterable[str], trips: HostTrips | None = None) -> None:
        self.trips = trips or HostTrips()
        self.runtime_vars: dict[str, tf.Variable] = {
            name: tf.Variable(0.0, trainable=False, dtype=tf.float32, name=f"hp_{name}")
            for name in sorted(runtime_names)
        }
        self.hp_values: dict[str, Any] = {}
        self.model: Any = None
        self.optimizer: Any = None
        self.optimizer_class = ""
        self.runtime_defaults: dict[str, float] = {}
        self.optimizer_snapshot: list[np.ndarray] = []
        # The model's own compiled loss and metrics are used when it was compiled with a loss.
        self.compiled = False

    def runtime_row(self, values: Mapping[str, Any]) -> list[float]:
        """Every runtime variable's value for a new trial, sorted by name: from ``values``, else
        from ``runtime_defaults`` (the optimizer's learning rate), else 0."""
        return [
            float(values[name]) if name in values else self.runtime_defaults.get(name, 0.0)
            for name in sorted(self.runtime_vars)
        ]

    def assign_row(self, row: list[float]) -> None:
        """Assigns every runtime variable (a :meth:`runtime_row`) from the host."""
        for name, value in zip(sorted(self.runtime_vars), row, strict=True):
            self.runtime_vars[name].assign(value)
        self.trips.writes += len(row)

    def freeze(self) -> None:
        """Learning rate 0: the tower still computes its share of each step but no longer moves."""
        self.runtime_vars["learning_rate"].assign(0.0)
        self.trips.writes += 1

    def fits(self, model_values: list[Any]) -> bool:
        """Whether ``model_values`` have the shapes of this tower's model variables."""
        shapes = [tuple(np.shape(v)) for v in model_values]
        return [tuple(v.shape) for v in self.model.variables] == shapes

    def set_values(self, model_values: list[Any], optimizer_values: list[Any]) -> None:
        """Assigns the model's and the optimizer's variables in place (no retrace)."""
        for variable, value in zip(self.model.variables, model_values, strict=True):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, optimizer_values, strict=True):
            variable.assign(value)
        self.trips.writes += len(model_values) + len(optimizer_values)

    def model_values(self) -> list[np.ndarray]:
        """Host copies of ``model.variables`` (weights and dropout RNG state)."""
        self.trips.reads += len(self.model.variables)
        return host_values(self.model.variables)

    def optimizer_values(self) -> list[np.ndarray]:
        """Host copies of ``optimizer.variables`` (step count and slots)."""
        self.trips.reads += len(self.optimizer.variables)
        return host_values(self.optimizer.variables)


class HostTrips:
    """The host round-trips of a trainer's programs and towers, counted as they happen.

    ``calls``: traced calls (one dispatch each, with the read of its result); ``reads``:
    values copied to the host (one per variable, and per compiled metric result); ``writes``:
    values assigned from the host (one per variable). Each waits for the device; on a pod it
    also crosses the network between the client and the TPU hosts.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.reads = 0
        self.writes = 0

    @property
    def total(self) -> int:
        return self.calls + self.reads + self.writes

    def counts(self) -> tuple[int, int, int]:
        """``(calls, reads, writes)`` so far."""
        return self.calls, self.reads, self.writes


class Traces:
    """How often a trainer's programs traced, counted while they trace."""

    def __init__(self) -> None:
        self.traces = 0  # train and eval functions
        self.reset_traces = 0
        self.copy_traces = 0  # PBT's copy

    def train_or_eval(self) -> None:
        self.traces += 1

    def reset(self) -> None:
        self.reset_traces += 1

    def copy(self) -> None:
        self.copy_traces += 1


class Program:
    """One compiled (structure, width): ``width`` towers and the tf.functions that run them.

    Its public methods are the whole of what runs a trial on it: :meth:`start` (a fresh trial
    in a tower), :meth:`restore` (a checkpoint), :meth:`train`, :meth:`evaluate`, :meth:`copy`
    (PBT) and :meth:`freeze`. A :class:`tpu_bo.train.pack.Pack` drives it slot by slot; the
    final model (:mod:`tpu_bo.session.final`) drives its tower 0 alone.

    Args:
      key: The structural values, as ``SearchSpace.structure_key`` gives them.
      towers: The towers, built in the strategy's scope.
      functions: The train and eval ``tf.function``s (:func:`make_functions`).
      reset_fn: The traced reset (:func:`tpu_bo.train.reset.make_reset`), or ``None``.
      strategy: The strategy the towers were built in.
      traces: The trainer's trace counts.
      host_model: Builds the structure again on the host from ``tower.hp_values`` (the reset's
        fallback for initializers that cannot be traced).
      name: The model's name, for messages.

    Attributes:
      key: As given.
      width: Number of towers.
      towers: The towers.
      train_fn: ``train_fn(iterator, steps) -> [width]`` summed losses of ``steps`` steps.
      eval_fn: ``eval_fn(iterator, steps) -> {"sums": [width, 3], "metrics": [...]}``: weighted
        (loss, hits, count) sums for the default head, (loss, regularization, count) for a
        compiled model, and each compiled tower's metric results.
      owner: The pack currently driving the towers, if any (see :mod:`tpu_bo.train.pack`).
      reset_fn: ``reset_fn(seeds, mask, runtime)``, or ``None`` once this model's fresh
        weights are drawn on the host.
      reset_ready: Whether ``reset_fn`` has run once (traced) without error.
      traces: The trainer's trace counts (shared by its programs).
      trips: The trainer's :class:`HostTrips` (its towers').
    """

    def __init__(
        self,
        key: tuple[Any, ...],
        towers: list[Tower],
        functions: tuple[Any, Any],
        reset_fn: Any,
        *,
        strategy: tf.distribute.Strategy,
        traces: Traces,
        host_model: Callable[[Mapping[str, Any]], Any],
        name: str,
    ) -> None:
        self.key = key
        self.width = len(towers)
        self.towers = towers
        self.train_fn, self.eval_fn = functions
        self.reset_fn, self.reset_ready = reset_fn, False
        self.strategy, self.traces = strategy, traces
        self.host_model, self.name = host_model, name
        self.owner: Any = None
        self._copy_fn: Any = None
        self.trips = towers[0].trips

    def start(self, slot: int, values: Mapping[str, Any], seed: int) -> None:
        """Puts a fresh trial into tower ``slot``: weights drawn from ``seed``, the optimizer's
        fresh state and the runtime ``values`` (a value for every parameter, fixed ones
        included), in one traced device call (:mod:`tpu_bo.train.reset`); or, for a model
        whose initializers cannot be traced, from a host model built after seeding Keras."""
        tower = self.towers[slot]
        row = tower.runtime_row(values)
        if self.reset_fn is not None and device_reset(self, slot, seed, row, self.name):
            return
        keras.utils.set_random_seed(seed)
        host_reset(tower, self.host_model(tower.hp_values), self.name)
        tower.assign_row(row)  # last: the learning rate turns the frozen tower live

    def restore(self, slot: int, values: Mapping[str, Any], checkpoint: Checkpoint) -> None:
        """Puts a checkpointed trial into tower ``slot`` from the host, with its runtime
        ``values``."""
        tower = self.towers[slot]
        restore(tower, checkpoint)
        tower.assign_row(tower.runtime_row(values))  # last, as in start

    def reset(self, slot: int, seed: int, runtime: list[float]) -> None:
        """Runs the traced reset for one tower (``runtime``: its :meth:`Tower.runtime_row`)."""
        seeds = np.zeros([self.width], np.int32)
        mask = np.zeros([self.width], bool)
        rows = np.zeros([self.width, len(runtime)], np.float32)
        seeds[slot], mask[slot], rows[slot] = seed % 2**31, True, runtime
        with on_host(self.strategy):  # a caller's device scope must not place it
            self.reset_fn(tf.constant(seeds), tf.constant(mask), tf.constant(rows))
        self.trips.calls += 1
        self.reset_ready = True

    def copy(self, donors: Mapping[int, int]) -> None:
        """PBT's exploit: each receiver tower ``{receiver: donor}`` takes its donor's weights
        and optimizer state, in one traced device call (:func:`tpu_bo.train.reset.make_copy`),
        traced once for every pairing."""
        if self._copy_fn is None:
            self._copy_fn = make_copy(self.towers, self.strategy, self.traces.copy)
        source, mask = np.arange(self.width, dtype=np.int32), np.zeros(self.width, bool)
        for receiver, donor in donors.items():
            source[receiver], mask[receiver] = donor, True
        with on_host(self.strategy):
            self._copy_fn(tf.constant(source), tf.constant(mask))
        self.trips.calls += 1

    def freeze(self, slot: int) -> None:
        """Tower ``slot``'s learning rate 0: it computes but no longer moves."""
        self.towers[slot].freeze()

    def train(self, iterator: Any, steps: int) -> np.ndarray:
        """Runs ``steps`` training steps; returns each tower's summed loss (float64)."""
        with on_host(self.strategy):
            losses = self.train_fn(iterator, tf.constant(steps))
        self.trips.calls += 1
        return losses.numpy().astype(float)

    def trace_eval(self, data: EvalData) -> None:
        """Traces the eval function for ``data`` without running it (``--parallel_trials=auto``
        does so for the widths the study will use, so that no trial traces)."""
        self.eval_fn.get_concrete_function(data.iterator, tf.constant(data.steps))

    def evaluate(self, data: EvalData) -> list[dict[str, float]]:
        """Scores every tower on every example of ``data`` exactly once.

        Returns:
          Per tower ``{"loss": mean loss, <metric>: value..., "examples": examples}``; the
          metrics are ``accuracy`` for the default head, else the compiled model's metrics.
        """
        with on_host(self.strategy):
            out = self.eval_fn(data.iterator, tf.constant(data.steps))
        sums, metrics = out["sums"].numpy(), out["metrics"]
        self.trips.calls += 1
        self.trips.reads += sum(len(m) for m in metrics)  # one float() each, below
        scores = []
        for k, (loss, second, count) in enumerate(sums):
            if round(float(count)) != data.num_examples:
                raise RuntimeError(
                    f"evaluation counted {count} examples of {data.split}, expected "
                    f"{data.num_examples}; the padded eval pipeline is broken."
                )
            if self.towers[k].compiled:
                # The data loss per example, plus the regularization losses once per step.
                score = {"loss": float(loss / count + second / data.steps)}
                score.update({name: float(v) for name, v in metrics[k].items()})
            else:
                score = {"loss": float(loss / count), "accuracy": float(second / count)}
            scores.append({**score, "examples": float(count)})
        return scores

    @property
    def metric_names(self) -> list[str]:
        """The metrics :meth:`evaluate` reports besides ``loss`` (the same for every tower)."""
        return metric_names(self.towers[0])


def out_of_memory(error: tf.errors.ResourceExhaustedError, width: int) -> str:
    """The one sentence every trial of a program of ``width`` that ran out of memory fails with."""
    reason = f"out of memory: {first_line(error, 200)}"
    if width > 1:
        reason += f" (a pack of {width}; a smaller --parallel_trials may fit)"
    return reason


# The optimizer hyperparameters each Keras optimizer reads inside its traced update, so that a
# variable can hold them (Keras 3.15.1: `update_step`, `_backend_update_step` and `build` read
# these; every one reads `weight_decay` in the base `_apply_weight_decay`). A class that overrides
# one of those methods reads what it likes, so it is not in the table. Checked, class by class,
# against the optimizer built with the plain number: tests/train/test_optimizer.py.
RUNTIME_READS: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        ("Adam", "AdamW", "Adamax", "Nadam", "Lamb"), frozenset({"beta_1", "beta_2", "epsilon"})
    ),
    "Lion": frozenset({"beta_1", "beta_2"}),
    "SGD": frozenset({"momentum"}),
    "RMSprop": frozenset({"momentum", "epsilon"}),
    "Adagrad": frozenset({"epsilon"}),
    "Adadelta": frozenset({"epsilon"}),
    "Ftrl": frozenset(),
}
_READING_METHODS = ("build", "update_step", "_backend_update_step", "_apply_weight_decay")


class NotReadAtEveryStep(ConfigError):
    """A runtime ``param`` the optimizer (``by``) does not read from a variable at every step.

    The trainer makes it structural at a study's first build (as it does a value the builder
    reads as a number); later it is this one sentence naming ``param``.
    """

    def __init__(self, param: str, by: str) -> None:
        super().__init__(
            "param",
            f"{by} does not read {param} from a variable at every step, so {param} cannot change "
            f"without a new program: give it the role structural "
            f"(--param={param}:...:structural), one program per value.",
        )
        self.param, self.by = param, by


class OptimizerValue:
    """A searched optimizer hyperparameter as the tower's optimizer holds it (``beta_1``...).

    Arithmetic and conversion to a tensor read the tower's variable, so the traced update
    follows each trial's value. A Python comparison, which Keras's optimizers make only to decide
    whether to build and update a slot (SGD's ``momentum != 0``, RMSprop's ``momentum > 0``),
    sees ``top``, the largest value the study may give it: the slot is built, and a trial at 0
    computes the same update through it (tests/train/test_optimizer.py).

    Args:
      variable: The tower's runtime variable.
      top: The largest value of the parameter's domain.
    """

    def __init__(self, variable: tf.Variable, top: float) -> None:
        self.variable, self.top = variable, top

    def read(self) -> tf.Tensor:
        return self.variable.read_value()

    def __repr__(self) -> str:
        return f"OptimizerValue({self.variable.name}, top={self.top})"

    __hash__ = object.__hash__


def _arithmetic(op: Callable[[Any, Any], Any], reflected: bool) -> Callable[..., Any]:
    def method(self: OptimizerValue, other: Any) -> Any:
        other = other.read() if isinstance(other, OptimizerValue) else other
        return op(other, self.read()) if reflected else op(self.read(), other)

    return method


def _comparison(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    return lambda self, other: op(self.top, other)


for _name in ("add", "sub", "mul", "truediv", "pow"):
    setattr(OptimizerValue, f"__{_name}__", _arithmetic(getattr(operator, _name), False))
    setattr(OptimizerValue, f"__r{_name}__", _arithmetic(getattr(operator, _name), True))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(OptimizerValue, f"__{_name}__", _comparison(getattr(operator, _name)))
OptimizerValue.__neg__ = lambda self: -self.read()  # type: ignore[attr-defined]
tf.register_tensor_conversion_function(
    OptimizerValue,
    lambda value, dtype=None, name=None, as_ref=False: (
        tf.cast(value.read(), dtype) if dtype else value.read()
    ),
)


def make_optimizer(
    tower: Tower,
    space: SearchSpace,
    *,
    kind: str | None = None,
    name: str = "model",
    schedule_shape: str = "constant",
    total_steps: int = 0,
) -> list[str]:
    """Gives ``tower`` its own optimizer; returns the lines to log about it (once per program).

    The optimizer is ``kind`` (a key of ``config.OPTIMIZERS``: ``--optimizer`` or the
    ``optimizer`` parameter, given explicitly), else a copy of the one ``tower.model`` was
    compiled with (its class and config), else RMSprop. Its learning rate is a callable reading
    ``tower.runtime_vars["learning_rate"]``, whose default is the compiled (or ``OPTIMIZERS``')
    rate, so one program serves every rate and a frozen tower (rate 0) stops; a compiled
    learning-rate schedule is kept, scaled by that variable (1 by default), unless the study gives
    ``learning_rate`` a value. An optimizer hyperparameter of ``space.OPTIMIZER_RUNTIME`` in
    ``tower.hp_values`` replaces the optimizer's: a plain number (fixed or structural) in its
    config, a runtime one as an :class:`OptimizerValue` read at every step.

    The rate is also multiplied, at every step, by :func:`schedule_factor` of the runtime
    ``warmup_steps`` and ``decay_floor`` (``--lr_schedule``): exactly 1 with neither given and
    ``constant``, so a study without a schedule computes what it did before.

    Args:
      tower: The tower, with its model built and ``hp_values`` set.
      space: The search space (the domains of runtime optimizer hyperparameters).
      kind: The optimizer given explicitly, or ``None``.
      name: The model's name, for messages.
      schedule_shape: ``constant``, ``cosine`` or ``linear`` (``--lr_schedule``).
      total_steps: The steps a trial trains (``--epochs`` times the steps per epoch), over
        which the decay runs from 1 to ``decay_floor``.

    Raises:
      NotReadAtEveryStep: for a runtime hyperparameter the optimizer does not read at every
        step.
      ConfigError: naming ``model``, for a compiled learning rate that is neither a number nor
        a schedule.
    """
    compiled = getattr(tower.model, "optimizer", None)
    values, rate = tower.hp_values, tower.runtime_vars["learning_rate"]
    lines, schedule, copy = [], None, kind is None and compiled is not None
    if copy:
        cls, config = type(compiled), dict(compiled.get_config())
        default, schedule = _compiled_rate(config.pop("learning_rate"), compiled, name)
    else:
        kind = kind or DEFAULT_OPTIMIZER
        cls, config = getattr(keras.optimizers, OPTIMIZERS[kind][0]), {}
        default = OPTIMIZERS[kind][1]
        if compiled is not None:
            lines.append(
                f"optimizer {kind} (given explicitly) replaces the {type(compiled).__name__} model "
                f"{name} was compiled with"
            )
    config.pop("name", None)  # each tower's optimizer gets its own name
    accepted = set(inspect.signature(cls).parameters) | set(config)
    given = {n: values[n] for n in sorted(OPTIMIZER_RUNTIME & values.keys())}
    for hp, value in given.items():
        if hp not in accepted:
            lines.append(f"{hp}: {cls.__name__} has no such hyperparameter; its trials ignore it")
        elif not isinstance(value, RuntimeValue):
            config[hp] = float(value)

    warmup = tower.runtime_vars.get("warmup_steps", 0.0)  # a tower built without them: none
    floor = tower.runtime_vars.get("decay_floor", 0.0)
    made: list[Any] = []  # the optimizer, once made: its step count drives the schedule

    def factor() -> tf.Tensor:
        return schedule_factor(made[0].iterations, warmup, floor, schedule_shape, total_steps)

    # A callable reading the variable, so one program serves every rate.
    def read_rate() -> tf.Tensor:
        return rate.read_value() * factor()

    optimizer = cls.from_config({**config, "learning_rate": read_rate})
    made.append(optimizer)
    if schedule is not None and "learning_rate" in values:
        lines.append(
            f"learning_rate: the trial's value replaces the {type(schedule).__name__} schedule "
            f"model {name} was compiled with"
        )
    elif schedule is not None:
        optimizer.learning_rate = lambda: (
            schedule(optimizer.iterations) * rate.read_value() * factor()
        )
        default = 1.0
    for attribute in ("_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern"):
        if copy and hasattr(compiled, attribute):  # exclude_from_weight_decay(): not in the config
            setattr(optimizer, attribute, getattr(compiled, attribute))
    runtime = {n: v for n, v in given.items() if n in accepted and isinstance(v, RuntimeValue)}
    readable = runtime_reads(optimizer)
    for hp, value in runtime.items():
        if hp not in readable:
            raise NotReadAtEveryStep(hp, f"the optimizer {cls.__name__}")
        setattr(optimizer, hp, OptimizerValue(value.variable, _top(space[hp])))
    tower.optimizer, tower.optimizer_class = optimizer, cls.__name__
    tower.runtime_defaults = {"learning_rate": default}
    return lines


SCHEDULE_SHAPES = ("constant", "cosine", "linear")


def schedule_factor(step: Any, warmup: Any, floor: Any, shape: str, total_steps: int) -> tf.Tensor:
    """The learning rate's multiplier at optimizer step ``step`` (0 for the first update).

    A linear warmup over ``warmup`` steps (``(step + 1) / warmup`` up to 1; none at 0), then,
    for ``cosine`` or ``linear``, a decay from 1 to ``floor`` (a fraction of the rate) over the
    rest of ``total_steps``, as ``keras.optimizers.schedules.CosineDecay`` with ``alpha=floor``
    does; ``constant`` stays at 1 after the warmup. Every argument but ``shape`` and
    ``total_steps`` may be a tensor or variable, so a warmup length or a floor is a runtime
    hyperparameter: one program serves every value.
    """
    step = tf.cast(step, tf.float32)
    warmup = tf.cast(warmup, tf.float32)
    warm = tf.minimum(1.0, (step + 1.0) / tf.maximum(warmup, 1.0))
    if shape == "constant":
        return warm
    span = tf.maximum(float(total_steps) - warmup, 1.0)
    progress = tf.clip_by_value((step - warmup) / span, 0.0, 1.0)
    if shape == "cosine":
        decay = 0.5 * (1.0 + tf.cos(np.pi * progress))
    elif shape == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule shape {shape!r}; use one of {SCHEDULE_SHAPES}")
    floor = tf.cast(floor, tf.float32)
    return warm * (floor + (1.0 - floor) * decay)


def runtime_reads(optimizer: Any) -> frozenset[str]:
    """The hyperparameters ``optimizer`` reads inside its traced update (:data:`RUNTIME_READS`),
    ``weight_decay`` included, or none for a class that overrides how it reads them."""
    for base in type(optimizer).__mro__:
        if base.__module__.startswith("keras.") and base.__name__ in RUNTIME_READS:
            same = all(
                getattr(type(optimizer), m, None) is getattr(base, m, None)
                for m in _READING_METHODS
            )
            return RUNTIME_READS[base.__name__] | {"weight_decay"} if same else frozenset()
    return frozenset()


def _compiled_rate(rate: Any, compiled: Any, name: str) -> tuple[float, Any]:
    """The compiled learning rate as (default value, schedule or ``None``)."""
    if isinstance(rate, (int, float)):
        return float(rate), None
    schedule = keras.saving.deserialize_keras_object(rate) if isinstance(rate, dict) else rate
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return 1.0, schedule
    raise ConfigError(
        "model",
        f"model {name} was compiled with a {type(compiled).__name__} whose learning rate is "
        f"{type(schedule).__name__}; compile it with a number or a "
        "keras.optimizers.schedules.LearningRateSchedule.",
    )


def _top(param: Any) -> float:
    """The largest value of a numeric parameter's domain."""
    return float(max(param.choices) if param.kind == "choice" else param.high)


def _tower_maths(towers: list[Tower], global_batch: int, replicas: int) -> tuple[Any, Any]:
    """The per-replica computations: summed-loss gradients, and weighted eval sums."""
    probabilities = [models.outputs_probabilities(t.model) for t in towers]
    smoothing = [t.runtime_vars["label_smoothing"] for t in towers]
    variables = [t.model.trainable_variables for t in towers]

    def per_example_loss(k: int, logits: tf.Tensor, labels: tf.Tensor, smooth: bool) -> tf.Tensor:
        return default_loss(logits, labels, smoothing[k] if smooth else None, probabilities[k])

    def extra_loss(model: Any) -> tf.Tensor:
        """The regularization losses, scaled so that summing over replicas counts them once."""
        if not model.losses:
            return tf.constant(0.0)
        return tf.add_n([tf.cast(tf.reduce_sum(v), tf.float32) for v in model.losses]) / replicas

    def train_loss(k: int, x: Any, y: Any) -> tf.Tensor:
        model = towers[k].model
        outputs = model(x, training=True)
        if towers[k].compiled:
            # Keras scales its loss by the replicas itself, as we do below.
            return tf.cast(compute_loss(model, x, y, outputs, None, training=True), tf.float32)
        # Scaled by the global batch so that summing over replicas gives the mean.
        loss = tf.reduce_sum(per_example_loss(k, outputs, y, True)) / global_batch
        return loss + extra_loss(model)

    def loss_and_grads(x: Any, y: Any) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
        with tf.GradientTape() as tape:
            losses = [train_loss(k, x, y) for k in range(len(towers))]
            # Each tower's variables appear only in its own loss, so the gradient of the
            # sum with respect to them is exactly that tower's gradient.
            total = tf.add_n(losses)
        return tf.stack(losses), tape.gradient(total, variables)

    def eval_row(k: int, x: Any, y: Any, w: tf.Tensor) -> tuple[tf.Tensor, Any]:
        model = towers[k].model
        outputs = model(x, training=False)
        if towers[k].compiled:
            total = tf.cast(compute_loss(model, x, y, outputs, w, training=False), tf.float32)
            extra = extra_loss(model)
            # Keras's loss is sum(w * loss) / (local batch * replicas); undo the division.
            data = (total - extra) * global_batch
            return tf.stack([data, extra, tf.reduce_sum(w)]), outputs
        loss = per_example_loss(k, outputs, y, False)
        predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        hit = tf.cast(tf.equal(predicted, tf.reshape(tf.cast(y, tf.int32), [-1])), tf.float32)
        row = tf.stack([tf.reduce_sum(loss * w), tf.reduce_sum(hit * w), tf.reduce_sum(w)])
        return row, outputs

    def eval_sums(x: Any, y: Any, w: tf.Tensor) -> tuple[tf.Tensor, list[Any]]:
        rows, outputs = zip(*(eval_row(k, x, y, w) for k in range(len(towers))), strict=True)
        return tf.stack(rows), list(outputs)

    return loss_and_grads, eval_sums


def make_functions(
    towers: list[Tower],
    strategy: tf.distribute.Strategy,
    global_batch: int,
    *,
    jit_compile: bool,
    on_trace: Callable[[], None],
) -> tuple[Any, Any]:
    """The train and eval ``tf.function``s of a program (``on_trace`` runs at every trace)."""
    width = len(towers)
    loss_and_grads, eval_sums = _tower_maths(towers, global_batch, strategy.num_replicas_in_sync)
    if jit_compile:
        # XLA on the computation; the optimizer update (an all-reduce under Mirrored) stays
        # outside. A TPU compiles the whole program with XLA regardless.
        loss_and_grads = tf.function(loss_and_grads, jit_compile=True)
        eval_sums = tf.function(eval_sums, jit_compile=True)

    # Sums live in per-replica, sum-on-read variables (as Keras metrics do), so a loop of
    # steps never sends a per-step value back to the host.
    with strategy.scope():
        train_sum = _sum_variable([width], "train_loss_sum")
        eval_sum = _sum_variable([width, 3], "eval_sums")

    def train_step(batch: tuple[Any, Any]) -> None:
        losses, grads = loss_and_grads(*batch)
        for tower, tower_grads in zip(towers, grads, strict=True):
            pairs = zip(tower_grads, tower.model.trainable_variables, strict=True)
            tower.optimizer.apply_gradients(pairs)
        train_sum.assign_add(losses)

    def eval_step(batch: tuple[Any, ...]) -> None:
        x, y, w = batch
        rows, outputs = eval_sums(x, y, w)
        eval_sum.assign_add(rows)
        for tower, output in zip(towers, outputs, strict=True):
            if tower.compiled:  # per-tower metric state, reset at every evaluation
                update_compiled_metrics(tower.model, y, output, w)

    @tf.function
    def train_fn(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
        on_trace()  # runs only while tracing
        train_sum.assign(tf.zeros([width]))
        for _ in tf.range(steps):
            strategy.run(train_step, (next(iterator),))
        return train_sum.read_value()

    @tf.function
    def eval_fn(iterator: Any, steps: tf.Tensor) -> dict[str, Any]:
        on_trace()  # runs only while tracing
        eval_sum.assign(tf.zeros([width, 3]))
        reset_compiled_metrics(towers)
        for _ in tf.range(steps):
            strategy.run(eval_step, (next(iterator),))
        metrics = [compiled_metrics(t) for t in towers]
        return {"sums": eval_sum.read_value(), "metrics": metrics}

    return train_fn, eval_fn


def host_values(variables: list[Any]) -> list[np.ndarray]:
    """Host copies of Keras variables."""
    # Through the backing tf.Variable: keras' own .numpy() goes via a deprecated __array__.
    return [np.array(v.value.numpy()) for v in variables]


def _sum_variable(shape: list[int], name: str) -> tf.Variable:
    return tf.Variable(
        tf.zeros(shape),
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
    )
