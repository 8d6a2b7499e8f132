"""A TPUStrategy stand-in on CPU: a two-replica MirroredStrategy on TPUStrategy's packed path.

No TPU runs in CI, and every ``cpu_replicas=2`` test takes MirroredStrategy's update path: a
Python loop over the replicas' devices, each update under ``tf.device`` of its replica
(``MirroredExtended._update``, tensorflow/python/distribute/mirrored_strategy.py, TF 2.21.0).
``TPUStrategy`` differs in two ways, both reproduced here (TF 2.21.0 sources; the same code in
the 2.20 wheel that tensorflow-tpu ships):

* It turns packed variables on: ``TPUStrategyV2.__init__`` sets
  ``self._enable_packed_variable_in_eager_mode = True`` (tpu_strategy.py), and
  ``DistributedVariable.__init__`` (values.py) then gives every distributed variable created
  eagerly a ``PackedDistributedVariable`` (packed_distributed_variable.py): one handle packing
  every replica's component.
* ``TPUExtended._update`` (tpu_strategy.py), outside a TPU replica context and inside a
  ``tf.function``, calls the update function **once**, on ``var._packed_variable``, with no
  device scope of its own ("Inside `tf.function`, we don't expand PackedVariable in python as
  it will be expanded later during function instantiation in the runtime"). Inside a replica
  context (``tpu_util.enclosing_tpu_context()``: ``strategy.run``) it calls ``fn(var)`` in the
  replicated computation; eagerly it loops over the packed variable's devices as
  MirroredStrategy does.

:func:`packed_strategy` is MirroredStrategy with the first switched on and ``_update`` replaced
by that branch; inside ``strategy.run`` (the stand-in for the TPU replica context) it keeps
MirroredStrategy's loop. So a program that runs under it updates each variable by one op on a
packed handle, placed wherever the caller's device scope puts it: what a TPU program's reset,
copy and metric resets do.

Its all-reduce is ``ReductionToOneDevice``, which uses no collective ops: a second strategy
over the same devices with collectives would reuse the instance keys of the one
``tpu_bo.device.accelerator`` caches (docs/DESIGN.md contract 14).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.distribute import values
from tensorflow.python.eager import context

_STRATEGY: list[tf.distribute.Strategy] = []


def packed_strategy() -> tf.distribute.MirroredStrategy:
    """The process's stand-in (built once; needs the two logical CPU devices of conftest)."""
    if _STRATEGY:
        return _STRATEGY[0]
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[1:3]]
    if len(devices) < 2:
        raise RuntimeError("the packed stand-in needs two logical CPU devices (tests/conftest.py)")
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    strategy._enable_packed_variable_in_eager_mode = True  # as TPUStrategyV2.__init__
    extended = strategy.extended
    mirrored_update = extended._update
    call_for_each_replica = extended._call_for_each_replica
    extended.packed_updates = 0  # how many updates took the packed branch (traced)
    extended.in_replica_run = 0

    def run_replicas(fn: Any, args: Any, kwargs: Any) -> Any:
        # strategy.run: the stand-in for TPU's replica context, where TPU updates each replica.
        extended.in_replica_run += 1
        try:
            return call_for_each_replica(fn, args, kwargs)
        finally:
            extended.in_replica_run -= 1

    def update(var: Any, fn: Any, args: Any, kwargs: Any, group: bool) -> Any:
        # TPUExtended._update's packed branch (tpu_strategy.py, TF 2.21.0).
        packed = getattr(var, "_packed_variable", None)
        if extended.in_replica_run or packed is None or context.executing_eagerly():
            return mirrored_update(var, fn, args, kwargs, group)
        extended.packed_updates += 1
        return fn(packed, *args, **kwargs) if group else (fn(packed, *args, **kwargs),)

    extended._call_for_each_replica = run_replicas
    _unpack_in_replica_runs(extended)
    extended._update = update
    _STRATEGY.append(strategy)
    return strategy


def _unpack_in_replica_runs(extended: Any) -> None:
    """Inside ``strategy.run`` the stand-in's variables read and update as MirroredStrategy's
    unpacked ones: TPU's replicated computation (``TPUReplicatedInput`` over the packed handle,
    tpu_values.py ``TPUVariableMixin.handle``) has no CPU equivalent, and MirroredStrategy's
    replica threads would hand Keras a ``PackedVarAndDevice``, which has no arithmetic."""
    cls = values.DistributedVariable
    if getattr(cls._use_packed_variable, "stand_in", False):
        return
    use_packed = cls._use_packed_variable

    def use_packed_outside_runs(self: Any) -> bool:
        extended = getattr(self.distribute_strategy.extended, "in_replica_run", 0)
        return use_packed(self) and not extended

    use_packed_outside_runs.stand_in = True  # type: ignore[attr-defined]
    cls._use_packed_variable = use_packed_outside_runs


def replica_devices(strategy: tf.distribute.Strategy) -> list[str]:
    """The strategy's replica devices, in order."""
    return list(strategy.extended.worker_devices)


def differing(variables: list[Any]) -> list[str]:
    """The names of the distributed ``variables`` whose replicas' components differ."""
    out = []
    for variable in variables:
        value = variable.value if isinstance(variable, keras.Variable) else variable
        components = [c.numpy() for c in getattr(value, "values", [value])]
        if any(not (c == components[0]).all() for c in components[1:]):
            out.append(getattr(variable, "path", variable.name))
    return out
