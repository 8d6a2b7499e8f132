"""What every benchmark shares: where its figures go and the machine they were measured on."""

from __future__ import annotations

import io
import json
import os
import pathlib
import platform
from typing import Any


def default_out(name: str, *, quick: bool = False) -> str:
    """``bench/results/<name>.json``; ``--quick`` runs get ``<name>_quick.json``, so a quick
    check never overwrites the figures that ``bench/RESULTS.md`` quotes."""
    return f"bench/results/{name}{'_quick' if quick else ''}.json"


def machine(*, tensorflow: bool = True) -> dict[str, Any]:
    """Python, TensorFlow and Keras versions and the CPU count."""
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    if tensorflow:
        import keras
        import tensorflow as tf

        info.update(tensorflow=tf.__version__, keras=keras.__version__)
    return info


def write_results(out: str, payload: dict[str, Any], *, tensorflow: bool = True) -> pathlib.Path:
    """Writes ``payload`` plus the machine as indented JSON to ``out``; returns the path."""
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "machine": machine(tensorflow=tensorflow)}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


class TableOnly(io.TextIOBase):
    """A stdout for ``contextlib.redirect_stdout`` around ``run_study``: passes tpu_bo's trial
    table and summary lines through as they come (progress on a long benchmark), drops the
    rest (headers, live progress lines)."""

    KEEP = ("data:", "|", "trials:", "best:", "test")

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._line = ""

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if line.startswith(self.KEEP):
                self.stream.write(line + "\n")
                self.stream.flush()
        return len(text)

    def isatty(self) -> bool:
        return False
