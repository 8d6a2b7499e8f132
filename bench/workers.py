"""Many workers, one study in PostgreSQL: a load test of the shared storage, and trials per minute
with 1 and 2 workers on the digits study.

    python -m bench.workers                # both: 8 x 40 synthetic trials; digits, 1 then 2 workers
    python -m bench.workers --quick        # smaller (CI)
    python -m bench.workers --parts=load   # only the load test

* **load**: ``--workers`` processes ask and tell through :class:`tpu_bo.study.study.Study`, the path
  ``run_study`` takes (the study lock, the budget count, heartbeats, the retrying storage), with
  a synthetic objective of two reported epochs instead of a model, until the shared budget of
  ``workers x trials`` is spent. The random sampler proposes, so what is timed is the storage,
  not a GP. Checked: every budgeted trial COMPLETE, told by exactly one worker, numbers unique.
  Printed: trials per second, and the p50/p99 latency of ask and of tell.
* **digits**: ``python -m tpu_bo.main`` workers on the digits study, the same budget with 1 worker
  and with 2; trials per minute from the first start to the last exit, and their ratio.

Each run starts its own throw-away PostgreSQL server (:mod:`tpu_bo.study.shared.local_postgres`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = {"x": ("float", 0.0, 1.0), "y": ("log", 1e-4, 1e-1)}

flags.DEFINE_boolean("quick", False, "Smaller runs, for CI.")
flags.DEFINE_list("parts", ["load", "digits"], "Which measurements: load, digits.")
flags.DEFINE_integer("workers", 8, "Load test: worker processes.")
flags.DEFINE_integer("trials", 40, "Load test: trials per worker (the budget is the product).")
flags.DEFINE_integer("digits_trials", 32, "Digits: the study's budget, with 1 and with 2 workers.")
flags.DEFINE_string("out", "", "Where the figures go (default bench/results/workers.json).")
# One synthetic worker process (used by the load test itself).
flags.DEFINE_string("worker", "", "Internal: run one synthetic worker on this storage URL.")
flags.DEFINE_string("worker_study", "load", "Internal: the synthetic study's name.")
flags.DEFINE_integer("worker_budget", 320, "Internal: the synthetic study's budget.")


def synthetic_worker(url: str, name: str, budget: int) -> dict[str, Any]:
    """Asks and tells until the shared budget is spent; returns the numbers and latencies."""
    from tpu_bo.config import Config
    from tpu_bo.records import Outcome
    from tpu_bo.study.study import Study

    config = Config(
        storage=url,
        study_name=name,
        output_dir=os.path.join(tempfile.gettempdir(), f"tpu_bo_load_{name}"),
        space=SPACE,
        init_points=budget - 1,
        n_iter=1,  # with the random sampler, the same as budget random points
        sampler="random",
        epochs=2,
    ).validate()
    study = Study(config).open()
    asks, tells, numbers = [], [], []
    try:
        while True:
            t0 = time.perf_counter()
            trial = study.ask()
            asks.append(time.perf_counter() - t0)
            if trial is None:
                break
            x, y = trial.params["x"], trial.params["y"]
            history = []
            for epoch in (1, 2):
                score = 1.0 - (x - 0.3) ** 2 - 0.01 * abs(y - 0.01) / epoch
                history.append({"epoch": epoch, "val_accuracy": score})
                study.report(trial, history[-1])
            t0 = time.perf_counter()
            study.tell(trial, Outcome(status="ok", history=history))
            tells.append(time.perf_counter() - t0)
            numbers.append(trial.number)
    finally:
        study.close()
    return {"numbers": numbers, "ask": asks, "tell": tells, "outages": study.crew.outage.outages}


def run_all(
    command: list[str], n: int, timeout: float = 1800, env: dict[str, str] | None = None
) -> tuple[float, list[str]]:
    """Starts ``n`` copies of ``command`` together; their wall time and stdouts (all must
    exit 0)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **(env or {})}
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(n)
    ]
    outputs = [p.communicate(timeout=timeout) for p in procs]
    seconds = time.perf_counter() - started
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    return seconds, [out.decode() for out, _ in outputs]


def milliseconds(seconds: list[float], q: float) -> float:
    """The ``q``-th percentile of ``seconds`` (an observed value), in ms."""
    import numpy as np

    return round(1000 * float(np.percentile(seconds, q, method="nearest")), 1)


def load(url: str, workers: int, trials: int, name: str = "load") -> dict[str, Any]:
    """The load test; raises AssertionError if any trial is lost or duplicated."""
    import optuna
    from optuna.trial import TrialState

    budget = workers * trials
    command = [sys.executable, "-m", "bench.workers", f"--worker={url}", f"--worker_study={name}"]
    command.append(f"--worker_budget={budget}")
    seconds, outputs = run_all(command, workers)
    runs = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    told = sorted(n for r in runs for n in r["numbers"])
    trials_in_db = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    complete = sorted(t.number for t in trials_in_db if t.state == TrialState.COMPLETE)
    assert told == list(range(budget)), f"told {len(told)} of {budget}, or twice"
    assert complete == told and len(trials_in_db) == budget, "the database disagrees"
    asks = [a for r in runs for a in r["ask"]]
    tells = [t for r in runs for t in r["tell"]]
    return {
        "workers": workers,
        "trials": budget,
        "seconds": round(seconds, 2),
        "trials_per_second": round(budget / seconds, 2),
        "per_worker": [len(r["numbers"]) for r in runs],
        "ask_p50_ms": milliseconds(asks, 50),
        "ask_p99_ms": milliseconds(asks, 99),
        "tell_p50_ms": milliseconds(tells, 50),
        "tell_p99_ms": milliseconds(tells, 99),
    }


def digits_flags(url: str, name: str, output_dir: str, trials: int) -> list[str]:
    return [
        "--dataset=digits",
        "--accelerator=cpu",
        "--epochs=2",
        "--batch_size=32",
        f"--init_points={min(4, trials)}",
        f"--n_iter={trials - min(4, trials)}",
        f"--output_dir={output_dir}",
        f"--storage={url}",
        f"--study_name={name}",
        "--heartbeat_interval=2",
        "--grace_period=30",
    ]


def digits(url: str, workers: int, trials: int, directory: str, threads: int = 0) -> dict[str, Any]:
    """Trials per minute of the digits study with ``workers`` CLI processes (``threads``: each
    process's TensorFlow intra-op threads; 0: TensorFlow's default, every core)."""
    name = f"digits{workers}t{threads}"
    args = digits_flags(url, name, os.path.join(directory, name), trials)
    env = {"TF_NUM_INTRAOP_THREADS": str(threads)} if threads else {}
    seconds, _ = run_all([sys.executable, "-m", "tpu_bo.main", *args], workers, env=env)
    import optuna

    trials_in_db = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    first = min(t.datetime_start for t in trials_in_db)
    last = max(t.datetime_complete for t in trials_in_db)
    span = (last - first).total_seconds()  # the first trial's start to the last one's end
    return {
        "workers": workers,
        "trials": trials,
        "intra_op_threads": threads or "default",
        "seconds": round(seconds, 1),
        "trials_per_minute": round(60 * trials / seconds, 2),
        "trial_span_seconds": round(span, 1),
        "trials_per_minute_of_trials": round(60 * trials / span, 2),
    }


def main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    if f.worker:
        print(json.dumps(synthetic_worker(f.worker, f.worker_study, f.worker_budget)), flush=True)
        return
    from bench.common import default_out, write_results
    from tpu_bo.study.shared.local_postgres import LocalPostgres

    quick = f.quick
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory, LocalPostgres() as pg:
        if "load" in f.parts:
            workers, trials = (4, 10) if quick else (f.workers, f.trials)
            figures["load"] = result = load(pg.url, workers, trials)
            print(
                f"load: {result['workers']} workers x {trials} trials = {result['trials']} in "
                f"{result['seconds']} s: {result['trials_per_second']} trials/s; ask p50 "
                f"{result['ask_p50_ms']} ms p99 {result['ask_p99_ms']} ms; tell p50 "
                f"{result['tell_p50_ms']} ms p99 {result['tell_p99_ms']} ms; nothing lost or "
                "told twice",
                flush=True,
            )
        if "digits" in f.parts:
            trials = 6 if quick else f.digits_trials
            figures["digits"] = []
            for threads in (0,) if quick else (0, 1):
                one = digits(pg.url, 1, trials, directory, threads)
                two = digits(pg.url, 2, trials, directory, threads)
                ratio = round(two["trials_per_minute"] / one["trials_per_minute"], 2)
                ratio_of_trials = round(
                    two["trials_per_minute_of_trials"] / one["trials_per_minute_of_trials"], 2
                )
                figures["digits"].append(
                    {"one": one, "two": two, "ratio": ratio, "ratio_of_trials": ratio_of_trials}
                )
                print(
                    f"digits, {trials} trials, intra-op threads {one['intra_op_threads']}: "
                    f"1 worker {one['trials_per_minute']} trials/min ({one['seconds']} s; "
                    f"{one['trials_per_minute_of_trials']} over its trials' span), 2 workers "
                    f"{two['trials_per_minute']} ({two['seconds']} s; "
                    f"{two['trials_per_minute_of_trials']}): ratio {ratio} ({ratio_of_trials})",
                    flush=True,
                )
    write_results(f.out or default_out("workers", quick=quick), figures)


if __name__ == "__main__":
    app.run(main)
