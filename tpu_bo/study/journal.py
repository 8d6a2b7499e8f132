"""An Optuna journal backend over ``tf.io.gfile``: the default storage of a study's trials.

``<output_dir>/trials.journal`` holds one JSON operation per line, the format of
``optuna.storages.journal.JournalFileBackend``, so ``optuna-dashboard <output_dir>/trials.journal``
reads it. The journal is read once when the study opens and then kept in memory: its one writer
is this process (:mod:`tpu_bo.study.writer_lock`), so nothing else can change it. A kill in the
middle of an append can leave a torn last line; the writer drops it when it opens the journal.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from tpu_bo.errors import ConfigError
from tpu_bo.study.output_dir import tf_gfile, write_atomic

log = logging.getLogger("tpu_bo")


class GFileJournal(BaseJournalBackend):
    """An Optuna journal backend over ``tf.io.gfile`` for a study with one writer.

    The file is read once; later reads come from memory. A non-writer (a lockstep study's
    other workers) keeps its appends in memory only: it takes the same decisions as the chief,
    which writes them.
    """

    def __init__(self, path: str, *, writer: bool = True) -> None:
        self.path = path
        self.writer = writer
        self._logs: list[dict[str, Any]] = list(self._read(path, repair=writer))

    @staticmethod
    def _read(path: str, *, repair: bool) -> Iterator[dict[str, Any]]:
        gfile = tf_gfile()
        if not gfile.exists(path):
            return
        with gfile.GFile(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        complete = lines[:-1]  # the last piece is empty or a torn line with no newline
        for i, line in enumerate(complete):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(
                    "output_dir",
                    f"{path} line {i + 1} is not valid JSON; repair the file or use a new "
                    "--output_dir.",
                ) from None
        if lines[-1] and repair:
            log.warning("%s ended in a partly written line; dropping it.", path)
            write_atomic(path, b"".join(line + b"\n" for line in complete))

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self.writer:
            text = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)
            gfile = tf_gfile()
            gfile.makedirs(os.path.dirname(self.path) or ".")
            with gfile.GFile(self.path, "a") as f:
                f.write(text)
                f.flush()
        self._logs.extend(logs)
