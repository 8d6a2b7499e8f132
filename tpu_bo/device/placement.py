"""Where a program's work runs: on the strategy's host, whatever device scope the caller is in.

Under ``TPUStrategy`` every distributed variable has a packed handle (``TPUStrategyV2.__init__``
sets ``_enable_packed_variable_in_eager_mode``, tensorflow/python/distribute/tpu_strategy.py;
``DistributedVariable.__init__`` packs the components, values.py; TF 2.21.0, the same in the
2.20 TPU wheel). Inside a ``tf.function`` and outside ``strategy.run``, ``TPUExtended._update``
(tpu_strategy.py) calls the update function once, on that packed variable, with no device
scope of its own: the runtime expands the op to every replica's component only when the op is
left to the composite device. A caller's ``with tf.device(<one replica's device>)`` becomes
the function's default device, and the op then writes that replica's component alone: the
replicas differ, with no error (tests/train/test_tpu_stand_in.py shows it on a CPU stand-in).
MirroredStrategy is immune: ``MirroredExtended._update`` (mirrored_strategy.py) loops over
the replicas, each update under ``tf.device`` of its own replica.

:func:`on_host` is the call site of every traced program (the reset, PBT's copy, the train
and eval steps): the caller's scope is cleared (``tf.device(None)``: the eager context's
``_EagerDeviceContext.__enter__`` resets the device spec, and a graph's ``Graph.device(None)``
clears its device stack; tensorflow/python/eager/context.py, framework/ops.py) and, called
eagerly, the strategy's host CPU becomes the default device, as a call from the host with no
scope has it. That host is the one ``TPUExtended`` puts its own host-side work on
(``self._host_device = device_util.get_host_for_device(self._tpu_devices[0][0])``,
tpu_strategy.py): worker 0's CPU, also the default device ``experimental_connect_to_cluster``
enters on a pod (eager/remote.py, ``make_master_device_default``). Inside another
``tf.function`` the host is not named: an explicit device on the call op would pin the packed
ops to it, which TF refuses ("Dst node should be assigned to an allowed device").

The default strategy (one device, nothing to diverge) keeps the caller's scope.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf


def host_device(strategy: tf.distribute.Strategy) -> str | None:
    """The CPU of the host of the strategy's first replica, or ``None`` for the default
    strategy (which has no device list)."""
    try:
        first = strategy.extended.worker_devices[0]
    except RuntimeError:  # the default strategy
        return None
    # As tensorflow/python/distribute/device_util.py get_host_for_device.
    spec = tf.DeviceSpec.from_string(first)
    return spec.replace(device_type="CPU", device_index=0).to_string()


@contextlib.contextmanager
def on_host(strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Runs the block with the caller's device scope replaced by the strategy's host
    (:func:`host_device`); a no-op under the default strategy."""
    host = host_device(strategy)
    if host is None:
        yield
        return
    with tf.device(None):
        if tf.executing_eagerly():
            with tf.device(host):
                yield
        else:
            yield
