"""A study's ``--output_dir``: every file in it, by name, and the one way to read and write them.

Layout of ``<output_dir>`` (local disk, Drive or ``gs://``: all I/O goes through
``tf.io.gfile``; a local look imports no TensorFlow):

* ``trials.journal``: the study's trials, an Optuna journal (:mod:`tpu_bo.study.journal`), unless
  ``--storage`` names a database for them.
* ``writer.lock``: held by the one process that writes the study
  (:mod:`tpu_bo.study.writer_lock`).
* ``inflight/trial_<n>.npz``: the last saved epoch of trial ``n`` while it runs; the trial's
  ``checkpoint`` attribute names it. Removed when the trial ends.
* ``config.json``, ``flags.txt``, ``summary.json``, ``summary.png``, ``best/`` (the best trial's
  ``model.weights.h5`` and ``trial.json``), ``kept/`` (``--select_best=posterior`` or
  ``--repeat_best``: the weights of the top trials), ``tensorboard/``, and for a moment at the
  start of a lockstep study ``workers.check``.
* ``final/`` (with ``--final_epochs``, see :mod:`tpu_bo.session.final`): the best configuration
  retrained, as ``model.keras`` and ``saved_model/``, and ``final.json``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import numpy as np

from tpu_bo.errors import ConfigError
from tpu_bo.records import Checkpoint

log = logging.getLogger("tpu_bo")

JOURNAL = "trials.journal"
LEGACY_JOURNAL = "trials.jsonl"
LOCK = "writer.lock"
INFLIGHT = "inflight"
CONFIG = "config.json"
SUMMARY = "summary.json"
PLOT = "summary.png"
BEST_DIR = "best"
BEST_WEIGHTS = os.path.join(BEST_DIR, "model.weights.h5")
BEST_TRIAL = os.path.join(BEST_DIR, "trial.json")
TENSORBOARD = "tensorboard"
FINAL_DIR = "final"
FINAL_MODEL = os.path.join(FINAL_DIR, "model.keras")
FINAL_SAVED_MODEL = os.path.join(FINAL_DIR, "saved_model")
FINAL_JSON = os.path.join(FINAL_DIR, "final.json")
WORKERS_CHECK = "workers.check"  # a lockstep study's start-up token (session.lockstep)
KEPT_DIR = "kept"


def kept_name(number: int) -> str:
    """Trial ``number``'s kept weights (``--select_best=posterior``, ``--repeat_best``)."""
    return os.path.join(KEPT_DIR, f"trial_{number}.weights.h5")


class OutputDir:
    """The files of one study's output directory.

    Args:
      output_dir: The directory; created on the first write.
      writer: Whether this process writes. In a lockstep study only the chief does; the
        others read the same directory and write nothing.
    """

    def __init__(self, output_dir: str, *, writer: bool = True) -> None:
        self.output_dir = output_dir
        self.writer = writer

    def path(self, name: str) -> str:
        """The full path of ``name`` inside the directory."""
        return os.path.join(self.output_dir, name)

    def exists(self, name: str) -> bool:
        path = self.path(name)
        if "://" not in path:
            return os.path.exists(path)  # no TensorFlow import for a local look
        return tf_gfile().exists(path)

    def read_json(self, name: str) -> Any:
        """``name`` parsed as JSON; ``None`` if it does not exist."""
        return read_json(self.path(name))

    def write_text(self, name: str, text: str | bytes) -> None:
        """Atomically (re)writes ``name``, if this process is the writer."""
        if self.writer:
            tf_gfile().makedirs(os.path.dirname(self.path(name)))
            write_atomic(self.path(name), text)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def save_checkpoint(self, number: int, checkpoint: Checkpoint) -> str:
        """Saves running trial ``number``'s checkpoint in one file; returns its name inside the
        directory (writer only).

        Written to a temporary name and renamed, so a kill leaves the old state or the new one.
        """
        name = self.checkpoint_name(number)
        parts = [checkpoint, *checkpoint.executions]  # one file: the executions stay in step
        metas, arrays = [], []
        for part in parts:
            metas.append(
                {
                    "epoch": part.epoch,
                    "history": part.history,
                    "steps": part.steps,
                    "seconds": part.seconds,
                    "num_model": len(part.model),
                    "num_arrays": len(part.model) + len(part.optimizer),
                }
            )
            arrays += [*part.model, *part.optimizer]
        meta = {**metas[0], "executions": metas[1:]}
        buffer = io.BytesIO()
        encoded = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(buffer, __meta__=encoded, **{f"a{i}": a for i, a in enumerate(arrays)})
        self.write_text(name, buffer.getvalue())
        return name

    @staticmethod
    def checkpoint_name(number: int) -> str:
        """The saved-state file of running trial ``number``, inside the directory."""
        return os.path.join(INFLIGHT, f"trial_{number:04d}.npz")

    def checkpoints(self) -> list[str]:
        """Every saved-state file present, inside the directory."""
        pattern = os.path.join(self.output_dir, INFLIGHT, "trial_*.npz")
        return sorted(os.path.join(INFLIGHT, os.path.basename(p)) for p in tf_gfile().glob(pattern))

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        """A checkpoint saved by :meth:`save_checkpoint`, or ``None`` if missing or unreadable."""
        path = self.path(name)
        try:
            with tf_gfile().GFile(path, "rb") as f:
                data = np.load(io.BytesIO(f.read()))
                meta = json.loads(data["__meta__"].tobytes().decode())
                arrays = [data[f"a{i}"] for i in range(len(data.files) - 1)]
        except Exception as e:  # noqa: BLE001 - missing or damaged: the trial starts again
            log.warning("cannot read the saved state %s (%s); its trial starts again", path, e)
            return None
        metas, start, parts = [meta, *meta.get("executions", ())], 0, []
        for m in metas:
            end = start + m.get("num_arrays", len(arrays) - start)
            split = start + m["num_model"]
            parts.append(
                Checkpoint(
                    epoch=m["epoch"],
                    history=m["history"],
                    model=arrays[start:split],
                    optimizer=arrays[split:end],
                    steps=m["steps"],
                    seconds=m["seconds"],
                )
            )
            start = end
        parts[0].executions = parts[1:]
        return parts[0]

    def remove(self, name: str) -> None:
        """Deletes ``name`` if it exists (writer only)."""
        if self.writer and tf_gfile().exists(self.path(name)):
            tf_gfile().remove(self.path(name))

    def check_not_legacy(self) -> None:
        """Refuses a directory written by tpu_bo's first engine (``trials.jsonl``)."""
        if self.exists(LEGACY_JOURNAL) and not self.exists(JOURNAL):
            raise ConfigError(
                "output_dir",
                f"{self.output_dir} holds a study of tpu_bo's first version ({LEGACY_JOURNAL}); "
                "finish it with that version, or start this one in a new --output_dir.",
            )


def tf_gfile() -> Any:
    """``tf.io.gfile``, imported on first use (reading a local study needs no TensorFlow)."""
    import tensorflow as tf

    return tf.io.gfile


def copy_file(source: str, target: str) -> None:
    """Copies a file (local or ``gs://``), replacing ``target``."""
    gfile = tf_gfile()
    gfile.makedirs(os.path.dirname(target) or ".")
    gfile.copy(source, target, overwrite=True)


def copy_tree(local: str, target: str) -> None:
    """Copies local directory ``local`` to ``target`` (any ``tf.io.gfile`` path), replacing it."""
    gfile = tf_gfile()
    if gfile.exists(target):
        gfile.rmtree(target)
    for directory, _subdirs, names in gfile.walk(local):
        relative = os.path.relpath(directory, local)
        destination = target if relative == "." else os.path.join(target, relative)
        gfile.makedirs(destination)
        for name in names:
            gfile.copy(os.path.join(directory, name), os.path.join(destination, name))


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename (the temporary name
    is this writer's own: the workers of a shared study write the same files)."""
    gfile = tf_gfile()
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(3).hex()}"
    with gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    gfile.rename(tmp, path, overwrite=True)


def read_json(path: str) -> Any:
    """Reads a JSON file through ``tf.io.gfile``; ``None`` if it does not exist."""
    gfile = tf_gfile()
    if not gfile.exists(path):
        return None
    with gfile.GFile(path, "r") as f:
        return json.loads(f.read())
