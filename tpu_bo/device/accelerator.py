"""Choosing the accelerator and building its distribution strategy.

``get_strategy`` returns a ``tf.distribute.Strategy`` that every later stage uses unchanged:

* ``tpu``: ``TPUClusterResolver(tpu=...)`` -> connect -> initialise (once per process and TPU
  name) -> ``TPUStrategy``. ``--tpu=local`` is a TPU VM or Colab; a name (with zone and
  project taken from the environment) is a remote TPU or a pod slice. On a pod slice the
  study runs in *one* process, on worker 0: TensorFlow's single-client TPU runtime drives the
  chips of every host through the TPU gRPC worker running on each of them (see
  docs/tpu.md, "A TPU pod slice"); the other hosts run no tpu_bo process.
* ``gpu``: ``MirroredStrategy`` over every visible GPU.
* ``cpu``: the default strategy, or with ``cpu_replicas=N > 1`` a ``MirroredStrategy`` over N
  logical CPU devices; tests use this to run the multi-replica code path without GPUs.
* ``auto``: TPU, else GPU, else CPU; the choice is logged in one line. The TPU is probed once
  per process; later calls reuse the answer.

Any failure to get the TPU (resolving, connecting, initialising, building the strategy:
``ValueError``, ``OSError``, ``RuntimeError`` or any ``tf.errors.OpError`` subclass) is one
sentence, a :class:`NoAcceleratorError`; ``auto`` falls back with that sentence's reason.

When ``TF_CONFIG`` names more than one worker, GPU and CPU runs use
``MultiWorkerMirroredStrategy`` (TensorFlow's own multi-host engine), every *lockstep worker*
running the same study (:mod:`tpu_bo.device.cluster`). ``auto`` then skips the TPU probe: the
probe starts TensorFlow's eager context, after which ``MultiWorkerMirroredStrategy`` raises
"Collective ops must be configured at program startup" (tensorflow/python/eager/context.py,
``configure_collective_ops``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import tensorflow as tf

from tpu_bo.device import tpu_env
from tpu_bo.device.cluster import lockstep_workers
from tpu_bo.errors import ConfigError
from tpu_bo.terminal import fit

log = logging.getLogger("tpu_bo")

# initialize_tpu_system may run only once per process and TPU; later studies reuse it.
_TPU_SYSTEMS: dict[str, Any] = {}
# Why ``auto`` found no TPU, per --tpu: probing again would only repeat TensorFlow's log lines.
_NO_TPU: dict[str, str] = {}


class NoAcceleratorError(ConfigError):
    """The requested accelerator does not exist on this machine.

    Attributes:
      reason: A few words on why, e.g. ``TPUs not found in the cluster``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__("accelerator", message)
        self.reason = reason


def get_strategy(
    accelerator: str = "auto", *, tpu: str = "local", cpu_replicas: int = 1
) -> tf.distribute.Strategy:
    """Builds the distribution strategy for the requested accelerator.

    Args:
      accelerator: ``auto``, ``tpu``, ``gpu`` or ``cpu``.
      tpu: The TPU to connect to: ``local`` on a TPU VM or Colab, else a TPU or pod-slice name.
      cpu_replicas: With ``cpu`` (or ``auto`` falling back to CPU), the number of logical
        CPU devices to mirror over; 1 means the default strategy.

    Returns:
      The strategy. ``strategy.num_replicas_in_sync`` gives the replica count.

    Raises:
      NoAcceleratorError: ``tpu`` or ``gpu`` was requested and none is present.
      ConfigError: the CPU split cannot be applied.
    """
    if accelerator not in ("auto", "tpu", "gpu", "cpu"):
        raise ConfigError("accelerator", f"{accelerator!r} is not one of auto, tpu, gpu, cpu.")
    if accelerator in ("auto", "cpu") and cpu_replicas > 1:
        # Logical devices must be configured before the runtime starts, so before any probe.
        _split_cpu(cpu_replicas)
    if accelerator == "tpu":
        strategy = _tpu_strategy(tpu)
        _say(f"accelerator=tpu: {describe(strategy)}")
        return strategy
    if accelerator == "gpu":
        strategy = _gpu_strategy()
        _say(f"accelerator=gpu: {describe(strategy)}")
        return strategy
    if accelerator == "auto":
        if lockstep_workers() > 1:
            tpu_reason = "not probed: TF_CONFIG names several workers"
        elif tpu == "local" and not _may_have_tpu():
            # The resolver's probe costs about half a second on a machine without any TPU.
            tpu_reason = "no TPU device on this machine: /dev/accel*, /dev/vfio/*"
        elif tpu in _NO_TPU:
            tpu_reason = _NO_TPU[tpu]
        else:
            try:
                strategy = _tpu_strategy(tpu)
                _say(f"accelerator=auto: found a TPU; using {describe(strategy)}")
                return strategy
            except NoAcceleratorError as tpu_error:
                tpu_reason = _NO_TPU[tpu] = tpu_error.reason
        if tf.config.list_physical_devices("GPU"):
            strategy = _gpu_strategy()
            _say(f"accelerator=auto: no TPU; using {describe(strategy)}")
            return strategy
        strategy = _cpu_strategy(cpu_replicas)
        _say(f"accelerator=auto: no TPU ({tpu_reason}) and no GPU; using {describe(strategy)}")
        return strategy
    strategy = _cpu_strategy(cpu_replicas)
    _say(f"accelerator=cpu: {describe(strategy)}")
    return strategy


def _say(line: str) -> None:
    """Prints the one line naming the accelerator, wrapped to a terminal's width."""
    print(fit(line, sys.stdout), flush=True)


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line naming the strategy, its replicas and devices."""
    devices = ", ".join(d.split("/")[-1].replace("device:", "") for d in _devices(strategy))
    name = type(strategy).__name__
    if not _devices(strategy):
        name = "the default strategy"
    replicas = strategy.num_replicas_in_sync
    return f"{name} with {replicas} replica{'s' if replicas > 1 else ''}" + (
        f" on {devices}" if devices else f" on {accelerator_kind(strategy).upper()}"
    )


def accelerator_kind(strategy: tf.distribute.Strategy) -> str:
    """``tpu``, ``gpu`` or ``cpu``: the kind of device the strategy computes on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    devices = _devices(strategy) or [d.name for d in tf.config.list_logical_devices()]
    return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"


def bfloat16_warning(strategy: tf.distribute.Strategy) -> str | None:
    """A warning when bfloat16 would run emulated (and slowly) on the strategy's GPUs.

    GPUs before compute capability 8.0 (Ampere), such as Colab's T4 (7.5), have no native
    bfloat16 arithmetic; float16 with loss scaling is what they accelerate.
    """
    if accelerator_kind(strategy) != "gpu":
        return None
    details = [
        tf.config.experimental.get_device_details(g) for g in tf.config.list_physical_devices("GPU")
    ]
    return slow_bfloat16_gpus(details)


def slow_bfloat16_gpus(details: list[dict[str, Any]]) -> str | None:
    """The warning of :func:`bfloat16_warning`, from ``get_device_details`` of each GPU."""
    slow = [
        f"{d.get('device_name', 'GPU')} (compute capability "
        f"{'.'.join(str(v) for v in d['compute_capability'])})"
        for d in details
        if d.get("compute_capability") and tuple(d["compute_capability"]) < (8, 0)
    ]
    if not slow:
        return None
    return (
        f"--mixed_precision: {', '.join(sorted(set(slow)))} has no native bfloat16, so "
        "bfloat16 runs emulated and is likely slower than float32 there; drop "
        "--mixed_precision on this GPU (bfloat16 pays off on TPUs and on GPUs from Ampere on)."
    )


def _devices(strategy: tf.distribute.Strategy) -> list[str]:
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list
        return []


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    setup = tpu_env.ensure_configured()
    if setup.evidence is not None:
        log.debug("TPU runtime: %s", setup.describe())
    try:
        if tpu not in _TPU_SYSTEMS:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            _TPU_SYSTEMS[tpu] = resolver
        return tf.distribute.TPUStrategy(_TPU_SYSTEMS[tpu])
    # Every tf.errors class: "TPU already in use by another process" or a libtpu built for
    # another TensorFlow may raise any of them, and each must be one sentence (and ``auto``'s
    # reason to fall back), not a traceback.
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as e:
        detail = (str(e).strip() or type(e).__name__).splitlines()[0].split(". ")[0][:120]
        hint = (
            "run on a TPU VM or a Colab TPU runtime"
            if tpu == "local"
            else "check the TPU name, zone and project"
        )
        if tpu == "local" and setup.evidence is not None:
            # The machine has a TPU, so TensorFlow could not reach it: name the likely cause.
            hint = f"this machine has a TPU ({setup.evidence}) that TensorFlow cannot use: " + (
                setup.problem or _plugin_hint(setup)
            )
        raise NoAcceleratorError(
            f"tpu was requested but no TPU was found (--tpu={tpu}: {detail}); {hint}, "
            "or use --accelerator=auto.",
            reason=detail,
        ) from None


def _plugin_hint(setup: tpu_env.Setup) -> str:
    if setup.values.get(tpu_env.LIBRARY_VAR):
        return (
            "check that tensorflow-tpu (not tensorflow) is installed and that no other process "
            "holds the TPU (python -m tpu_bo.smoke shows both)"
        )
    return f"{tpu_env.LIBRARY_VAR} is not set; import tpu_bo before TensorFlow"


def _gpu_strategy() -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise NoAcceleratorError(
            "gpu was requested but TensorFlow sees no GPU; install requirements-gpu.txt on a "
            "machine with a GPU, or use --accelerator=auto.",
            reason="no GPU visible",
        )
    if lockstep_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _mirrored(tuple(d.name for d in tf.config.list_logical_devices("GPU")))


def _cpu_strategy(cpu_replicas: int) -> tf.distribute.Strategy:
    if lockstep_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas <= 1:
        return tf.distribute.get_strategy()
    devices = tuple(d.name for d in tf.config.list_logical_devices("CPU")[:cpu_replicas])
    return _mirrored(devices)


# One MirroredStrategy per device list and process: a second one over the same devices reuses
# the first one's collective instance keys, and their all-reduces then collide ("Shape mismatch
# in the collective instance"), e.g. when a notebook runs a second study.
_MIRRORED: dict[tuple[str, ...], tf.distribute.Strategy] = {}


def _mirrored(devices: tuple[str, ...]) -> tf.distribute.Strategy:
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _MIRRORED[devices]


def _split_cpu(n: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) >= n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < n:
            raise ConfigError(
                "cpu_replicas",
                f"TensorFlow already started with {have} CPU device(s), so {n} cannot be made "
                "now; set cpu_replicas in a fresh process.",
            ) from None


def _may_have_tpu() -> bool:
    """Whether a local TPU may exist: a TPU device node or variable (``tpu_env``), or a
    remote TPU named by the environment (``TPU_NAME``, Colab's old ``COLAB_TPU_ADDR``)."""
    if tpu_env.tpu_evidence() is not None:
        return True
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"))
