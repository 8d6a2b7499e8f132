"""What every benchmark shares: where its figures go, the machine they were measured on, and
the observers (:class:`tpu_bo.observers.Observer`) that measure a ``run_study`` from inside.

No benchmark reads what a study prints: a meter is passed as ``run_study(...,
observers=[...])``, and the console is only silenced (``quiet()``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import pathlib
import platform
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tpu_bo.observers import Observer


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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Drops everything printed inside (tpu_bo's header, trial table and progress lines)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def ratio(value: Any, base: Any) -> float | None:
    """``value / base``, or ``None`` when either is missing or ``base`` is not positive."""
    if value is None or base is None or base <= 0:
        return None  # no meaningful ratio to a zero or negative figure
    return value / base


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``-`` for ``None``."""
    return "-" if value is None else format(value, spec)


def rss_mib() -> float:
    """This process's resident set size now, in MiB (``psutil``)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (``ru_maxrss``), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssMeter(Observer):
    """The RSS right after each trial ended, by trial number."""

    def __init__(self) -> None:
        self.rss: dict[int, float] = {}

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        self.rss[record.number] = rss_mib()


class TrialTimer(Observer):
    """Where a trial's time went, by trial number: train and eval seconds.

    Train seconds come from the trial's own history: every epoch records ``steps_per_second``
    over its train calls, so an epoch trained for ``steps / steps_per_second`` seconds (the
    steps per epoch are what ``on_progress`` reports). Eval seconds are measured here: from an
    epoch's last train call (``on_progress`` at the last step) to its metrics (the first
    ``on_epoch`` after it; a pack evaluates its slots together, so each gets that span).
    """

    def __init__(self) -> None:
        self.steps_per_epoch: int | None = None
        self.eval_seconds: dict[int, float] = collections.defaultdict(float)
        self._train_end = 0.0
        self._eval_end: float | None = None

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        self.steps_per_epoch = steps
        if step >= steps:
            self._train_end, self._eval_end = time.perf_counter(), None

    def on_epoch(self, trial: Any, metrics: Mapping[str, float]) -> None:
        if self._eval_end is None:
            self._eval_end = time.perf_counter()
        self.eval_seconds[trial.number] += self._eval_end - self._train_end

    def train_seconds(self, record: Any) -> float:
        """Seconds inside the train calls of ``record`` (a ``TrialRecord``)."""
        steps = self.steps_per_epoch or 0
        return sum(steps / h["steps_per_second"] for h in record.history if h["steps_per_second"])


class TrialLog(Observer):
    """Prints one line per finished trial to the real stdout (progress on a long benchmark,
    while ``quiet()`` drops tpu_bo's own table)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        target = "-" if record.target is None else f"{record.target:.4f}"
        params = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.params.items()
        )
        mark = " (best so far)" if new_best else ""
        print(
            f"  trial {record.number}: {record.status.value} {target}{mark} "
            f"{record.seconds:.1f} s {params}",
            file=self.stream,
            flush=True,
        )
