"""What every benchmark shares: where its figures go and the machine they were measured on."""

from __future__ import annotations

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
