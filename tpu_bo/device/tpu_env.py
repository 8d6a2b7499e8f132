"""The TPU runtime's environment, set before TensorFlow is first imported.

TPU v5e and newer chips run TensorFlow only through the PJRT plugin in ``libtpu``. TensorFlow
loads that plugin while it is being imported, and only when ``TF_PLUGGABLE_DEVICE_LIBRARY_PATH``
names the library; TensorFlow's own TPU examples also set
``NEXT_PLUGGABLE_DEVICE_USE_C_API=true`` (keras-io
``examples/keras_rs/distributed_embedding_tf.py``; GoogleCloudPlatform/ml-auto-solutions
``dags/solutions_team/configs/tensorflow/common.py``). Without them TensorFlow sees only the
CPU and connecting fails with ``No OpKernel ... ConfigureDistributedTPU ... Registered devices:
[CPU]``.

:func:`configure` runs when ``tpu_bo`` is imported, so every entry point (the CLI, the smoke
check, ``import tpu_bo`` in a notebook) sets them in time, provided tpu_bo comes before
TensorFlow. It only looks at files and environment variables: it imports neither TensorFlow
nor anything that touches a device, and it never overrides a value the user set.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger("tpu_bo")

LIBRARY_VAR = "TF_PLUGGABLE_DEVICE_LIBRARY_PATH"
C_API_VAR = "NEXT_PLUGGABLE_DEVICE_USE_C_API"
# v2-v4 chips appear as /dev/accel*, v5e and newer as VFIO groups (/dev/vfio/0, ...).
DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What :func:`configure` found and did.

    Attributes:
      evidence: Why this looks like a TPU machine (a device node or ``TPU_ACCELERATOR_TYPE``),
        or ``None`` on a machine without one.
      values: The two variables as they stand after :func:`configure`.
      set_here: The names :func:`configure` set (the rest were set already, or left unset).
      problem: One sentence on what stops the plugin from loading, or ``None``.
    """

    evidence: str | None
    values: dict[str, str | None]
    set_here: tuple[str, ...]
    problem: str | None

    def describe(self) -> str:
        """One line for logs and the smoke check."""
        if self.evidence is None:
            return "no TPU device on this machine; the TPU plugin variables are not needed"
        shown = ", ".join(
            f"{name}={value}" + (" (set by tpu_bo)" if name in self.set_here else "")
            for name, value in self.values.items()
            if value is not None
        )
        text = f"TPU device ({self.evidence}); {shown or 'no plugin variable set'}"
        return f"{text}; {self.problem}" if self.problem else text


def tpu_evidence(environ: MutableMapping[str, str] | None = None) -> str | None:
    """A device node or variable showing this machine has a TPU, or ``None``."""
    environ = os.environ if environ is None else environ
    for pattern in DEVICE_GLOBS:
        nodes = sorted(glob.glob(pattern))
        if nodes:
            return nodes[0]
    if environ.get("TPU_ACCELERATOR_TYPE"):
        return f"TPU_ACCELERATOR_TYPE={environ['TPU_ACCELERATOR_TYPE']}"
    return None


def libtpu_path() -> str | None:
    """The path of ``libtpu.so`` from the ``libtpu`` package, or ``None`` if not installed."""
    if importlib.util.find_spec("libtpu") is None:
        return None
    # A small pure-Python wrapper: it sets TPU_LIBRARY_PATH and loads nothing.
    import libtpu

    getter = getattr(libtpu, "get_library_path", None)
    if getter is not None:
        return str(getter())
    return os.path.join(os.path.dirname(libtpu.__file__), "libtpu.so")


def configure(environ: MutableMapping[str, str] | None = None) -> Setup:
    """Sets the PJRT plugin variables on a TPU machine, never overriding the user's values.

    Args:
      environ: The environment to update; ``os.environ`` by default.

    Returns:
      What was found and set, as a :class:`Setup`.
    """
    environ = os.environ if environ is None else environ
    evidence = tpu_evidence(environ)
    set_here: list[str] = []
    problem = None
    if evidence is not None and environ.get("TPU_LOAD_LIBRARY") == "0":
        # A pod slice's single client (worker 0): the TPU gRPC workers hold the chips, so this
        # process must not load libtpu itself (ml-auto-solutions sets only TPU_LOAD_LIBRARY=0
        # and TPU_NAME for pods, and the plugin variables only for single hosts).
        evidence = f"{evidence}, TPU_LOAD_LIBRARY=0: a pod slice's client; plugin not loaded"
    elif evidence is not None:
        path = environ.get(LIBRARY_VAR) or libtpu_path()
        if path is None:
            problem = (
                "libtpu is not installed, so TensorFlow cannot reach the TPU; install "
                "requirements-tpu.txt"
            )
        else:
            for name, value in ((LIBRARY_VAR, path), (C_API_VAR, "true")):
                if name not in environ:
                    environ[name] = value
                    set_here.append(name)
            if set_here and "tensorflow" in sys.modules:
                problem = (
                    "TensorFlow was imported before tpu_bo, so these came too late; restart "
                    "the runtime and import tpu_bo first"
                )
    setup = Setup(
        evidence=evidence,
        values={name: environ.get(name) for name in (LIBRARY_VAR, C_API_VAR)},
        set_here=tuple(set_here),
        problem=problem,
    )
    if evidence is not None:
        log.debug("TPU runtime: %s", setup.describe())
    return setup


def stray_tpu_build(setup: Setup, environ: MutableMapping[str, str] | None = None) -> str | None:
    """A warning when tensorflow-tpu is installed on a machine that shows no TPU.

    tensorflow-tpu 2.20 opens libtpu while TensorFlow is imported, whatever the plugin
    variables say, and libtpu then asks the GCE metadata server about the TPU: measured here,
    the import was still waiting after ten minutes. ``TPU_SKIP_MDS_QUERY=1`` skips the query.
    """
    environ = os.environ if environ is None else environ
    if setup.evidence is not None or environ.get("TPU_SKIP_MDS_QUERY"):
        return None
    try:
        importlib.metadata.version("tensorflow-tpu")
    except importlib.metadata.PackageNotFoundError:
        return None
    return (
        "tensorflow-tpu is installed but this machine has no TPU device (/dev/accel*, "
        "/dev/vfio/*), and importing it waits minutes for the GCE metadata server; install "
        "requirements.txt (CPU) or requirements-gpu.txt here, or set TPU_SKIP_MDS_QUERY=1"
    )


SETUP: Setup | None = None


def ensure_configured() -> Setup:
    """Runs :func:`configure` once per process and returns its result."""
    global SETUP
    if SETUP is None:
        SETUP = configure()
    return SETUP
