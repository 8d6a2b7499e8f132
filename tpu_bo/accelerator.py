"""Choosing the accelerator and building its distribution strategy.

``get_strategy`` returns a ``tf.distribute.Strategy`` that every later stage uses unchanged:

* ``tpu``: ``TPUClusterResolver(tpu=...)`` -> connect -> initialise (once per process and TPU
  name) -> ``TPUStrategy``. ``--tpu=local`` is a TPU VM or Colab; a name (with zone and
  project taken from the environment) is a remote TPU or a pod slice.
* ``gpu``: ``MirroredStrategy`` over every visible GPU.
* ``cpu``: the default strategy, or with ``cpu_replicas=N > 1`` a ``MirroredStrategy`` over N
  logical CPU devices; tests use this to run the multi-replica code path without GPUs.
* ``auto``: TPU, else GPU, else CPU; the choice is logged in one line.

When ``TF_CONFIG`` names more than one worker, GPU and CPU runs use
``MultiWorkerMirroredStrategy`` (TensorFlow's own multi-host engine). A TPU pod slice runs the
same program on every host through ``TPUStrategy``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import tensorflow as tf

from tpu_bo.errors import ConfigError

log = logging.getLogger("tpu_bo")

# initialize_tpu_system may run only once per process and TPU; later studies reuse it.
_TPU_SYSTEMS: dict[str, Any] = {}


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
        log.info("accelerator=tpu: %s", describe(strategy))
        return strategy
    if accelerator == "gpu":
        strategy = _gpu_strategy()
        log.info("accelerator=gpu: %s", describe(strategy))
        return strategy
    if accelerator == "auto":
        try:
            strategy = _tpu_strategy(tpu)
            print(f"accelerator=auto: found a TPU; using {describe(strategy)}", flush=True)
            return strategy
        except NoAcceleratorError as tpu_error:
            tpu_reason = tpu_error.reason
        if tf.config.list_physical_devices("GPU"):
            strategy = _gpu_strategy()
            print(f"accelerator=auto: no TPU; using {describe(strategy)}", flush=True)
            return strategy
        strategy = _cpu_strategy(cpu_replicas)
        print(
            f"accelerator=auto: no TPU ({tpu_reason}) and no GPU; using {describe(strategy)}",
            flush=True,
        )
        return strategy
    strategy = _cpu_strategy(cpu_replicas)
    log.info("accelerator=cpu: %s", describe(strategy))
    return strategy


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


def _devices(strategy: tf.distribute.Strategy) -> list[str]:
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list
        return []


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    try:
        if tpu not in _TPU_SYSTEMS:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            _TPU_SYSTEMS[tpu] = resolver
        return tf.distribute.TPUStrategy(_TPU_SYSTEMS[tpu])
    except (
        ValueError,
        tf.errors.NotFoundError,
        tf.errors.UnavailableError,
        OSError,
        RuntimeError,
    ) as e:
        detail = (str(e).strip() or type(e).__name__).splitlines()[0].split(". ")[0][:120]
        hint = (
            "run on a TPU VM or a Colab TPU runtime"
            if tpu == "local"
            else "check the TPU name, zone and project"
        )
        raise NoAcceleratorError(
            f"tpu was requested but no TPU was found (--tpu={tpu}: {detail}); {hint}, "
            "or use --accelerator=auto.",
            reason=detail,
        ) from None


def _gpu_strategy() -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise NoAcceleratorError(
            "gpu was requested but TensorFlow sees no GPU; install requirements-gpu.txt on a "
            "machine with a GPU, or use --accelerator=auto.",
            reason="no GPU visible",
        )
    if _num_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def _cpu_strategy(cpu_replicas: int) -> tf.distribute.Strategy:
    if _num_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas <= 1:
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:cpu_replicas]
    return tf.distribute.MirroredStrategy(devices)


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


def is_chief() -> bool:
    """Whether this process writes the study's files.

    With ``TF_CONFIG`` naming several workers, every worker runs the same study in lockstep
    (same seed, same all-reduced scores, so the same suggestions); only the chief, or worker 0
    when there is no chief, writes the journal and summaries. Without ``TF_CONFIG``, the one
    process is the chief.
    """
    config = _tf_config()
    if (
        len(config.get("cluster", {}).get("worker", []))
        + len(config.get("cluster", {}).get("chief", []))
        <= 1
    ):
        return True
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def _num_workers() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _tf_config() -> dict[str, Any]:
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    except json.JSONDecodeError:
        config = None
    if not isinstance(config, dict):
        raise ConfigError("accelerator", "the TF_CONFIG environment variable is not a JSON object.")
    return config
