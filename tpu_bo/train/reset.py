"""On-device trial reset: one traced call per program puts fresh trials into its towers.

docs/DESIGN.md contract 5. Loading a trial into a slot needs the tower's weights redrawn from
the trial's seed, its optimizer's state as freshly built, and its runtime hyperparameters. One
``tf.function`` per program does all three for any subset of its towers, taking the seeds, a
mask of the towers to reset and the runtime values as tensors, so no host model is built and
no value crosses from the host per variable:

* While a program's towers are built, :func:`recording` notes the initializer of every Keras
  variable created (Keras keeps none once a variable holds its value). :func:`plan` turns each
  model variable into one :class:`Draw`: its initializer, called again with a *stateless* seed
  ``[trial seed, variable index]`` (Keras's random initializers take a ``SeedGenerator``; a
  :class:`_TensorSeed` hands them that tensor); a dropout RNG state (``seed_generator_state``)
  set to a value drawn from the same kind of seed; or, for a variable created from a value, that
  value.
* Every draw runs inside ``strategy.extended.update``, i.e. on each replica's own device; the
  draws are stateless, so every replica draws the same values. The optimizer's variables go
  back to their snapshot after building (zeros for every Keras optimizer's slots and step).
* The same seed gives the same weights in any tower of any width, so a trial in a pack still
  equals the same trial alone.

A model whose initializers cannot be traced (say, a NumPy function) falls back to the host
reset (:func:`host_reset`), with one warning per program.

:func:`make_copy` is the same kind of program for population-based training: one traced call
copies the weights and optimizer state of some towers into others (:mod:`tpu_bo.session.pbt`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo.errors import ConfigError, first_line

log = logging.getLogger("tpu_bo")

RNG_STATE = "seed_generator_state"


@contextlib.contextmanager
def recording() -> Iterator[dict[int, tuple[Any, Any]]]:
    """Records ``{id(variable): (variable, initializer)}`` for Keras variables created inside.

    Records nothing if this Keras no longer initializes variables through
    ``_initialize_with_initializer`` (every variable is then reset to its built value).
    """
    recorded: dict[int, tuple[Any, Any]] = {}
    cls = keras.Variable
    original = getattr(cls, "_initialize_with_initializer", None)
    if original is None:
        yield recorded
        return

    def record(variable: Any, initializer: Any) -> Any:
        recorded[id(variable)] = (variable, initializer)
        return original(variable, initializer)

    own = "_initialize_with_initializer" in cls.__dict__
    cls._initialize_with_initializer = record
    try:
        yield recorded
    finally:
        if own:
            cls._initialize_with_initializer = original
        else:
            del cls._initialize_with_initializer


class _TensorSeed(keras.random.SeedGenerator):
    """A seed Keras's random ops accept (``draw_seed`` takes a ``SeedGenerator``): a fixed
    ``[2]`` int32 tensor, with no state of its own."""

    def __init__(self, seed: tf.Tensor) -> None:  # no super(): no state variable
        self._seed = seed

    def next(self, ordered: bool = True) -> tf.Tensor:
        return self._seed


@dataclasses.dataclass(frozen=True)
class Draw:
    """How one model variable gets its fresh value: ``init`` (call ``initializer`` with the
    trial's stateless seed), ``rng`` (a dropout RNG state) or ``value`` (``value``, as built)."""

    kind: str
    initializer: Any = None
    value: np.ndarray | None = None

    def __call__(self, seed: tf.Tensor, shape: Any, dtype: Any) -> tf.Tensor:
        if self.kind == "rng":
            drawn = tf.random.stateless_uniform([], seed, 1, 2**30, dtype=tf.int32)
            return tf.cast(tf.stack([drawn, 0]), dtype)
        if self.kind == "value":
            return tf.constant(self.value, dtype)
        initializer = self.initializer
        if isinstance(initializer, keras.initializers.Initializer) and isinstance(
            getattr(initializer, "seed", None), (int, keras.random.SeedGenerator)
        ):
            initializer = copy.copy(initializer)
            initializer.seed = _TensorSeed(seed)
        return tf.cast(tf.convert_to_tensor(initializer(tuple(shape), dtype=dtype)), dtype)


def plan(variables: Sequence[Any], recorded: dict[int, tuple[Any, Any]]) -> list[Draw]:
    """One :class:`Draw` per variable of ``variables`` (a model's), from what was recorded."""
    draws = []
    for v in variables:
        variable, initializer = recorded.get(id(v), (None, None))
        if variable is not v or not callable(initializer):
            draws.append(Draw("value", value=np.array(v.value.numpy())))
        elif v.name == RNG_STATE and getattr(initializer, "__name__", "") == "seed_initializer":
            draws.append(Draw("rng"))
        else:
            draws.append(Draw("init", initializer))
    return draws


def _fresh(snapshot: np.ndarray) -> Callable[[Any], tf.Tensor]:
    """The optimizer variable's fresh value, without embedding a large constant if it is flat."""
    flat = snapshot.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        value = flat[0].item()
        return lambda dtype: tf.fill(snapshot.shape, tf.constant(value, dtype))
    return lambda dtype: tf.constant(snapshot, dtype)


def make_reset(
    towers: Sequence[Any],
    draws: Sequence[Sequence[Draw]],
    strategy: tf.distribute.Strategy,
    on_trace: Callable[[], None],
) -> Any:
    """``reset(seeds [width] int32, mask [width] bool, runtime [width, R] float32)``.

    Resets the towers where ``mask`` is set: weights drawn from ``seeds[k]``, optimizer state as
    built (``tower.optimizer_snapshot``), runtime variables (sorted by name) from
    ``runtime[k]``. ``on_trace`` runs at every trace.
    """

    def reset_tower(k: int, seed: tf.Tensor, row: tf.Tensor) -> None:
        tower = towers[k]
        for i, (variable, draw) in enumerate(zip(tower.model.variables, draws[k], strict=True)):
            index = tf.stack([seed, tf.constant(i, tf.int32)])
            shape = tuple(variable.shape)
            strategy.extended.update(
                variable.value,
                lambda v, s, draw=draw, shape=shape: v.assign(draw(s, shape, v.dtype)),
                args=(index,),
            )
        for variable, snapshot in zip(
            tower.optimizer.variables, tower.optimizer_snapshot, strict=True
        ):
            fresh = _fresh(snapshot)
            strategy.extended.update(
                variable.value, lambda v, fresh=fresh: v.assign(fresh(v.dtype)), args=()
            )
        for r, name in enumerate(sorted(tower.runtime_vars)):
            tower.runtime_vars[name].assign(row[r])

    # No autograph: the loops are over Python lists; it would only slow the trace down.
    @tf.function(autograph=False)
    def reset(seeds: tf.Tensor, mask: tf.Tensor, runtime: tf.Tensor) -> tf.Tensor:
        on_trace()  # runs only while tracing
        with strategy.scope():
            for k in range(len(towers)):

                def branch(k: int = k) -> tf.Tensor:
                    reset_tower(k, seeds[k], runtime[k])
                    return tf.constant(True)

                tf.cond(mask[k], branch, lambda: tf.constant(False))
        return tf.constant(True)

    return reset


def copied_variables(tower: Any) -> list[Any]:
    """What PBT's exploit copies from a tower (:func:`make_copy`): every model variable but
    its dropout RNG state, then every optimizer variable."""
    return [v for v in tower.model.variables if v.name != RNG_STATE] + list(
        tower.optimizer.variables
    )


def make_copy(
    towers: Sequence[Any], strategy: tf.distribute.Strategy, on_trace: Callable[[], None]
) -> Any:
    """``copy(source [width] int32, mask [width] bool)``: PBT's exploit, on the device.

    Each tower ``k`` where ``mask`` is set takes tower ``source[k]``'s model variables (all but
    its dropout RNG state: the two towers would otherwise draw the same dropout masks) and its
    optimizer variables (step count and slots). Every assign runs inside
    ``strategy.extended.update``, so each replica copies its own components and nothing
    crosses to the host; the source is a tensor, so one trace serves every pairing.
    """
    width = len(towers)
    moved = [copied_variables(t) for t in towers]

    def assign(variable: Any, source: tf.Tensor, *values: Any) -> Any:
        branches = [lambda value=value: tf.convert_to_tensor(value) for value in values]
        return variable.assign(tf.switch_case(source, branches))

    def copy_tower(k: int, source: tf.Tensor) -> None:
        for i, variable in enumerate(moved[k]):
            values = tuple(moved[j][i].value for j in range(width))
            strategy.extended.update(variable.value, assign, args=(source, *values))

    @tf.function(autograph=False)
    def copy(source: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        on_trace()  # runs only while tracing
        with strategy.scope():
            for k in range(width):

                def branch(k: int = k) -> tf.Tensor:
                    copy_tower(k, source[k])
                    return tf.constant(True)

                tf.cond(mask[k], branch, lambda: tf.constant(False))
        return tf.constant(True)

    return copy


def host_reset(tower: Any, fresh: Any, name: str) -> None:
    """Copies the values of ``fresh``, the same structure built again on the host after a
    seed was set, into ``tower``, with the optimizer's fresh snapshot (the fallback)."""
    sources = [v.value for v in fresh.variables]
    if not tower.fits(sources):
        raise ConfigError(
            "model",
            f"builder {name} built different variables on a second call with the same "
            "hyperparameters; it must be deterministic in structure.",
        )
    tower.set_values(sources, tower.optimizer_snapshot)


def device_reset(program: Any, slot: int, seed: int, row: list[float], name: str) -> bool:
    """Runs the program's reset for one slot; False (and no device reset from then on) when
    this model's initializers fail to trace the first time."""
    try:
        program.reset(slot, seed, row)
        return True
    except tf.errors.ResourceExhaustedError:
        raise
    except Exception as e:  # noqa: BLE001 - any initializer may fail to trace
        if program.reset_ready:
            raise
        log.warning(
            "model %s: initial weights drawn on the host, not the device (%s: %s)",
            name, type(e).__name__, first_line(e),
        )  # fmt: skip
        program.reset_fn = None
        return False


def restore(tower: Any, state: Any) -> None:
    """Copies a checkpoint (:class:`tpu_bo.records.Checkpoint`) into ``tower`` from the host."""
    if not tower.fits(state.model) or len(state.optimizer) != len(tower.optimizer_snapshot):
        raise ValueError("the saved trial state does not fit this model")
    tower.set_values(state.model, state.optimizer)
