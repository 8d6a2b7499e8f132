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
  set to a value drawn from the same kind of seed; or its value as built, for a variable created
  from a value or assigned by the builder after its creation (pretrained or loaded weights: its
  value no longer has the :func:`fingerprint` of its initializer's draw). The built values are
  kept in device variables once per program (:class:`Plan`), never as constants in the trace.
  ``--initial_weights`` can force ``seeded`` (every variable drawn) or ``as_built`` (none).
* Every draw runs inside ``strategy.extended.update``, and where it runs depends on the
  strategy (TF 2.21.0 sources, the same in the 2.20 TPU wheel). ``MirroredExtended._update``
  (tensorflow/python/distribute/mirrored_strategy.py) loops over the replicas, calling the
  update under ``tf.device`` of each, so each replica draws on its own device; the draws are
  stateless, so every replica draws the same values. ``TPUExtended._update``
  (tpu_strategy.py), inside a ``tf.function`` and outside ``strategy.run``, calls it **once**,
  on the variable's packed handle (``var._packed_variable``), with no device scope: the draw
  runs once, on the function's default device, and the runtime writes it to every replica's
  component. That default device is the caller's scope, so the program is called through
  :func:`tpu_bo.device.placement.on_host` (``Program.reset``), never under a replica's device,
  which would write that replica alone (tests/train/test_tpu_stand_in.py). The optimizer's
  variables go back to their snapshot after building (zeros for every Keras optimizer's slots
  and step).
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
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo.errors import ConfigError, first_line
from tpu_bo.train import keras_names

log = logging.getLogger("tpu_bo")

RNG_STATE = "seed_generator_state"


def fingerprint(value: Any) -> bytes:
    """A digest of a variable's value (its dtype, shape and bytes), to tell a value apart from
    the initializer's draw without keeping a second copy of every weight on the host."""
    array = np.asarray(value)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


@dataclasses.dataclass
class Made:
    """A Keras variable created while a program was built: the variable, its initializer and
    the :func:`fingerprint` of the value that initializer drew (``None`` if unreadable)."""

    variable: Any
    initializer: Any
    drawn: bytes | None


@contextlib.contextmanager
def recording() -> Iterator[dict[int, Made]]:
    """Records ``{id(variable): Made}`` for Keras variables created inside.

    Raises:
      KerasChanged: this Keras no longer initializes variables through
        ``_initialize_with_initializer`` (:mod:`tpu_bo.train.keras_names`): recording
        nothing would reset every trial to its built values, silently.
    """
    recorded: dict[int, Made] = {}
    cls = keras.Variable
    original = getattr(cls, "_initialize_with_initializer", None)
    if original is None:
        keras_names.check()  # names every missing name, in one sentence
        raise keras_names.KerasChanged("keras.Variable._initialize_with_initializer is gone")

    def record(variable: Any, initializer: Any) -> Any:
        out = original(variable, initializer)
        try:
            drawn = fingerprint(variable.value)
        except Exception:  # noqa: BLE001 - a value not readable here is treated as drawn
            drawn = None
        recorded[id(variable)] = Made(variable, initializer, drawn)
        return out

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
    trial's stateless seed), ``rng`` (a dropout RNG state) or ``built`` (the value the builder
    left in it, kept on the device as :attr:`Plan.built` ``[source]``)."""

    kind: str
    initializer: Any = None
    source: int | None = None

    def __call__(self, seed: tf.Tensor, shape: Any, dtype: Any) -> tf.Tensor:
        if self.kind == "rng":
            drawn = tf.random.stateless_uniform([], seed, 1, 2**30, dtype=tf.int32)
            return tf.cast(tf.stack([drawn, 0]), dtype)
        initializer = self.initializer
        if isinstance(initializer, keras.initializers.Initializer) and isinstance(
            getattr(initializer, "seed", None), (int, keras.random.SeedGenerator)
        ):
            initializer = copy.copy(initializer)
            initializer.seed = _TensorSeed(seed)
        return tf.cast(tf.convert_to_tensor(initializer(tuple(shape), dtype=dtype)), dtype)


INITIAL_WEIGHTS = ("auto", "seeded", "as_built")


@dataclasses.dataclass
class Plan:
    """Where every tower's variables get their values from at a trial's start.

    Attributes:
      draws: One :class:`Draw` per model variable, per tower.
      built: The values kept as built, one device variable per distinct value (the towers
        of a pack, built alike, share them), created in the strategy's scope: once per
        program, not per trial.
      kept: The names of tower 0's variables that keep a value the builder assigned after
        creating them (pretrained or loaded weights, adapted statistics).
    """

    draws: list[list[Draw]]
    built: list[Any]
    kept: list[str]


def plan(
    variables: Sequence[Sequence[Any]],
    recorded: dict[int, Made],
    strategy: tf.distribute.Strategy,
    initial_weights: str = "auto",
) -> Plan:
    """The :class:`Plan` of the towers' model ``variables`` (one list per tower), from what
    :func:`recording` saw.

    A variable created from an initializer is drawn again from each trial's seed, unless
    ``initial_weights`` is ``as_built``, or it is ``auto`` and the variable no longer holds its
    initializer's draw (the builder assigned it: ``set_weights``, ``load_weights``, a preset).
    A variable created from a value, or assigned after creation, keeps its value as built.
    A dropout RNG state is always drawn from the seed, so two slots never share masks.
    """
    if initial_weights not in INITIAL_WEIGHTS:
        raise ValueError(f"initial_weights is one of {INITIAL_WEIGHTS}, not {initial_weights!r}")
    built: list[Any] = []
    index: dict[bytes, int] = {}
    draws: list[list[Draw]] = []
    kept: list[str] = []

    def keep(v: Any, value_print: bytes) -> Draw:
        if value_print not in index:
            index[value_print] = len(built)
            with strategy.scope():
                built.append(tf.Variable(tf.identity(v.value), trainable=False, name="built_value"))
        return Draw("built", source=index[value_print])

    for k, tower_variables in enumerate(variables):
        row = []
        for v in tower_variables:
            made = recorded.get(id(v))
            if made is not None and made.variable is not v:
                made = None
            if made is not None and callable(made.initializer):
                if v.name == RNG_STATE and _is_seed_initializer(made.initializer):
                    row.append(Draw("rng"))
                    continue
                if initial_weights == "seeded":
                    row.append(Draw("init", made.initializer))
                    continue
                now = fingerprint(v.value)
                if initial_weights == "auto" and (made.drawn is None or now == made.drawn):
                    row.append(Draw("init", made.initializer))
                    continue
                if k == 0 and initial_weights == "auto":
                    kept.append(v.path if hasattr(v, "path") else v.name)
                row.append(keep(v, now))
            else:
                row.append(keep(v, fingerprint(v.value)))
        draws.append(row)
    return Plan(draws, built, kept)


def _is_seed_initializer(initializer: Any) -> bool:
    return getattr(initializer, "__name__", "") == "seed_initializer"


def _fresh(snapshot: np.ndarray) -> Callable[[Any], tf.Tensor]:
    """The optimizer variable's fresh value, without embedding a large constant if it is flat."""
    flat = snapshot.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        value = flat[0].item()
        return lambda dtype: tf.fill(snapshot.shape, tf.constant(value, dtype))
    return lambda dtype: tf.constant(snapshot, dtype)


def make_reset(
    towers: Sequence[Any],
    planned: Plan,
    strategy: tf.distribute.Strategy,
    on_trace: Callable[[], None],
) -> Any:
    """``reset(seeds [width] int32, mask [width] bool, runtime [width, R] float32)``.

    Resets the towers where ``mask`` is set: weights drawn from ``seeds[k]`` or copied from
    their built values (``planned``), optimizer state as built (``tower.optimizer_snapshot``),
    runtime variables (sorted by name) from ``runtime[k]``. ``on_trace`` runs at every trace.
    """
    draws = planned.draws

    def reset_tower(k: int, seed: tf.Tensor, row: tf.Tensor) -> None:
        tower = towers[k]
        for i, (variable, draw) in enumerate(zip(tower.model.variables, draws[k], strict=True)):
            if draw.kind == "built":
                strategy.extended.update(
                    variable.value,
                    lambda v, b: v.assign(tf.cast(b, v.dtype)),
                    args=(planned.built[draw.source],),
                )
                continue
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
    ``strategy.extended.update`` and nothing crosses to the host; the source is a tensor, so
    one trace serves every pairing. Under MirroredStrategy the update loops over the replicas
    (``MirroredExtended._update``), so each replica copies its own components. Under
    TPUStrategy it runs once on the packed handle (``TPUExtended._update``), and the donor is
    read once, in cross-replica context off every replica's device: ``DistributedVariable.
    _get_on_device_or_primary`` (values.py, TF 2.21.0) then reads replica 0's component, and
    that value is written to every replica. Weights and optimizer state are the same on every
    replica, so nothing changes for them; per-replica state, which a replica updates from its
    own share of the batch (BatchNorm's moving statistics: Keras makes them with aggregation
    ``none``, and ``_on_write_update_replica``, values.py, then updates each replica's own
    component), takes replica 0's values on every replica, as a checkpoint's restore does
    (checkpoints are read from replica 0 too). Called through
    :func:`tpu_bo.device.placement.on_host` (``Program.copy``).
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
