"""The study's on-disk record: ``trials.jsonl`` (the truth), plus atomically written JSON files.

``trials.jsonl`` holds one JSON object per finished trial, appended and flushed as soon as the
trial ends, so a killed study loses at most the trial in flight. A kill in the middle of a
write can leave a torn last line; :meth:`Journal.load` drops it (and rewrites the file without
it, so the next append starts on a fresh line). All I/O goes through ``tf.io.gfile``, so the
output directory may be local or ``gs://``.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf

from tpu_bo.errors import ConfigError

log = logging.getLogger("tpu_bo")

TRIALS = "trials.jsonl"
INFLIGHT = "inflight.npz"


class Journal:
    """Appends and replays the trials of one study, and writes its other files.

    Args:
      output_dir: The study's directory; created on the first write.
      writer: Whether this process writes. In a multi-worker study only the chief does; the
        other workers read the same (shared) directory and write nothing.
    """

    def __init__(self, output_dir: str, *, writer: bool = True) -> None:
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, TRIALS)
        self.writer = writer

    def load(self) -> list[dict[str, Any]]:
        """Reads every complete record, in order; repairs a torn last line.

        Raises:
          ConfigError: naming ``output_dir``, when a line other than the last is not valid
            JSON (the file was edited, or is not a journal).
        """
        if not tf.io.gfile.exists(self.path):
            return []
        with tf.io.gfile.GFile(self.path, "r") as f:
            text = f.read()
        lines = text.split("\n")
        records, torn = [], False
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    torn = True
                    break
                raise ConfigError(
                    "output_dir",
                    f"{self.path} line {i + 1} is not valid JSON; repair the file or use a new "
                    "--output_dir.",
                ) from None
        if self.writer and (torn or (text and not text.endswith("\n"))):
            log.warning("%s ended in a partly written line; dropping it.", self.path)
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in records))
        return records

    def write_file(self, name: str, text: str) -> None:
        """Atomically (re)writes ``<output_dir>/<name>``, if this process is the writer."""
        if self.writer:
            tf.io.gfile.makedirs(self.output_dir)
            write_atomic(os.path.join(self.output_dir, name), text)

    def read_file(self, name: str) -> Any:
        """Reads ``<output_dir>/<name>`` as JSON; ``None`` if it does not exist."""
        return read_json(os.path.join(self.output_dir, name))

    def append(self, record: dict[str, Any]) -> None:
        """Appends one record as a single line and flushes it, if this process is the writer."""
        if not self.writer:
            return
        tf.io.gfile.makedirs(self.output_dir)
        with tf.io.gfile.GFile(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def save_inflight(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Saves the running trial's state: ``meta`` (JSON) and ``arrays``, in one file.

        One file, written to a temporary name and renamed, so a kill at any moment leaves
        either the previous state or the new one, never a mix.
        """
        if not self.writer:
            return
        buffer = io.BytesIO()
        np.savez(buffer, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        tf.io.gfile.makedirs(self.output_dir)
        write_atomic(os.path.join(self.output_dir, INFLIGHT), buffer.getvalue())

    def load_inflight(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The saved state of an interrupted trial, or ``None``."""
        path = os.path.join(self.output_dir, INFLIGHT)
        if not tf.io.gfile.exists(path):
            return None
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                data = np.load(io.BytesIO(f.read()))
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(arrays.pop("__meta__").tobytes().decode())
        except Exception as e:  # noqa: BLE001 - a damaged file means: start the trial again
            log.warning("ignoring unreadable in-flight state %s (%s)", path, e)
            return None
        return meta, arrays

    def clear_inflight(self) -> None:
        """Removes the in-flight state once its trial is journaled."""
        path = os.path.join(self.output_dir, INFLIGHT)
        if self.writer and tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename."""
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_json(path: str) -> Any:
    """Reads a JSON file through ``tf.io.gfile``; ``None`` if it does not exist."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())
