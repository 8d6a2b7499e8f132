"""What every benchmark shares: where its figures go, the machine they were measured on, and
the observers (:class:`tpu_bo.report.observers.Observer`) that measure a ``run_study`` from inside.

No benchmark reads what a study prints: a meter is passed as ``run_study(...,
observers=[...])``, and the console is only silenced (``quiet()``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tpu_bo.report.observers import Observer

# Where a study's wall time goes: tpu_bo's ``StudyResult.time`` keys (``tpu_bo.timing``), which
# the baselines' ``TimeSplit`` fills too; ``other`` is the rest of ``wall``.
TIME_KEYS = ("setup", "trace", "train", "eval", "reset", "suggest_wait", "checkpoint", "journal")
SPLIT_KEYS = (*TIME_KEYS, "other", "wall")


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


def spawn(method: str, args: Any, extra: list[str]) -> dict[str, Any]:
    """Runs ``python -m args._module --_child=method ...extra`` in a fresh process; returns the
    JSON it writes to ``--_result`` (``bench.overhead`` and ``bench.memory``: one per method)."""
    with tempfile.TemporaryDirectory() as tmp:
        result, log = os.path.join(tmp, "result.json"), os.path.join(tmp, "log.txt")
        cmd = [sys.executable, "-m", args._module, f"--_child={method}", f"--_result={result}"]
        with open(log, "w") as f:
            proc = subprocess.run(cmd + extra, stdout=f, stderr=subprocess.STDOUT, check=False)
        if proc.returncode:
            tail = pathlib.Path(log).read_text()[-3000:]
            raise SystemExit(f"{method} failed (status {proc.returncode}):\n{tail}")
        return json.loads(pathlib.Path(result).read_text())


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

    def figures(self, result: Any, meter: RssMeter) -> list[dict[str, Any]]:
        """The trials of ``result`` (a ``StudyResult``) in the form ``bench.overhead`` reads
        (see ``bench/baselines.py``), with their RSS from ``meter``."""
        trials = []
        for r in sorted(result.trials, key=lambda r: r.number):
            train, evaluation = self.train_seconds(r), self.eval_seconds.get(r.number, 0.0)
            trials.append(
                {
                    "trial": r.number,
                    "status": r.status.value,
                    "target": r.target,
                    "params": r.params,
                    "seconds": r.seconds,
                    "step_seconds": train + evaluation,
                    "train_seconds": train,
                    "eval_seconds": evaluation,
                    "trace_setup_seconds": 0.0,
                    "rss_mib": meter.rss.get(r.number),
                }
            )
        # Only the first trial traces: its excess over the later trials' median is the tracing.
        later = [t["step_seconds"] for t in trials[1:]]
        if later:
            trials[0]["trace_setup_seconds"] = trials[0]["step_seconds"] - statistics.median(later)
        return trials


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


class TimeSplit:
    """Seconds per category of a baseline's study (``TIME_KEYS``), measured from outside.

    Sections nest and are exclusive: a section inside another counts in its own category only
    (a checkpoint saved inside ``fit`` is ``checkpoint``, not ``train``), and so do the seconds
    ``add``-ed while a section is open (a callback's estimate of the tracing inside ``fit``).
    Single-threaded: the baselines run their trials, suggestions and saves on one thread.
    """

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(TIME_KEYS, 0.0)
        self._claimed: list[float] = []  # per open section: seconds its inner sections took

    @contextlib.contextmanager
    def measure(self, category: str) -> Iterator[None]:
        start = time.perf_counter()
        self._claimed.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[category] += elapsed - self._claimed.pop()
            if self._claimed:
                self._claimed[-1] += elapsed

    def add(self, category: str, seconds: float) -> None:
        """Moves ``seconds`` of the open section (if any) to ``category``."""
        self.seconds[category] += seconds
        if self._claimed:
            self._claimed[-1] += seconds

    def wrap(self, obj: Any, name: str, category: str) -> None:
        """Times every call of ``obj.name`` as ``category`` (an instance attribute shadows it)."""
        method = getattr(obj, name)

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.measure(category):
                return method(*args, **kwargs)

        setattr(obj, name, timed)

    def split(self, wall: float) -> dict[str, float]:
        """Every category, ``other`` (the wall time in none) and ``wall``, in seconds."""
        out = dict(self.seconds)
        out["other"] = max(0.0, wall - sum(self.seconds.values()))
        out["wall"] = wall
        return out


def outside_fraction(split: Mapping[str, float]) -> float:
    """The study's time outside train, eval and trace: 1 - (train + eval + trace) / wall."""
    return 1 - (split["train"] + split["eval"] + split["trace"]) / split["wall"]
