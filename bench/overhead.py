r"""Overhead of one study run three ways: tpu_bo, the blog recipe and KerasTuner.

  python -m bench.overhead                     # MNIST train[:5%], 20 trials per method (5 random)
  python -m bench.overhead --jit_compile       # XLA (jit_compile=True everywhere), 8 trials
  python -m bench.overhead --quick             # train[:1%], 3 trials (CI, under a minute)

The same study, three ways: the seed CNN (``tpu_bo.models.mnist_cnn``: Conv 32 -> Conv 64 ->
MaxPool -> Dropout .25 -> Flatten -> Dense 128 -> Dropout(``dropout_2``) -> Dense 10, RMSprop,
logits with sparse cross-entropy, batch 128), one epoch per trial on ``--train_split`` of the
real MNIST in ``--data_dir`` (default ``train[:5%]``: 3,000 images), scored by accuracy on
``--eval_split`` (default ``train[90%:]``: 6,000 images), over ``dropout_2`` in [0.1, 0.5] and
``learning_rate`` in [1e-4, 1e-2], with the same number of trials (``--init_points`` random,
the rest guided) and the same seed:

* ``tpu_bo``: ``tpu_bo.run_study`` (``accelerator="cpu"``, a temporary ``output_dir``, no test
  split), learning rate on a log scale; one compiled train and eval program for all trials.
* ``blog``: the blog post's recipe, written here (``bench/baselines.py``) as the baseline:
  ``bayes_opt``'s ``BayesianOptimization(f, pbounds).maximize(init_points, n_iter)`` over a
  function that
  builds a fresh Keras model, ``compile``\ s it, ``fit``\ s it for one epoch and ``evaluate``\ s
  it. The images are loaded into NumPy once; each trial builds its own ``tf.data`` pipeline
  from them (shuffle, batch 128, normalise, prefetch), which is what ``fit(x, y)`` does inside
  anyway. The learning rate is searched on the **linear** range [1e-4, 1e-2], as the blog does.
* ``blog_clear`` (not run by default; ``--methods`` adds it): the blog recipe plus
  ``keras.backend.clear_session()`` at the start of every trial, the usual fix for memory
  that grows with each new model.
* ``kerastuner``: ``keras_tuner.BayesianOptimization`` (``max_trials`` = the trial count,
  ``num_initial_points`` = ``--init_points``) over a hypermodel that builds and compiles the
  same CNN; ``tuner.search(train, validation_data=eval, epochs=1)`` with one ``tf.data``
  pipeline built before the search (KerasTuner's usage). The learning rate is
  ``hp.Float(..., sampling="log")``. Its score is fit's ``val_accuracy`` on the same split.

Each method runs in its own fresh subprocess (``python -m bench.overhead --_child=METHOD``), so
none inherits another's TensorFlow state and the RSS figures are the method's own. Reported per
method:

* ``wall s``: the whole study, from before its data are loaded to the last trial (TensorFlow,
  Keras and KerasTuner imports excluded for all three).
* ``1st trial s`` and ``median trial s``: a trial is build + compile + train + evaluate (for
  tpu_bo its ``TrialRecord.seconds``: weight redraw, train and eval), the suggestion excluded.
* ``overhead``: the fraction of the wall time spent outside train and eval steps. For tpu_bo,
  1 - sum(train + eval seconds) / wall, measured by ``bench.common.TrialTimer`` (an observer
  passed to ``run_study``: train seconds from each epoch's ``steps_per_second``, eval seconds
  from the last train call to the epoch's metrics); for the blog recipe,
  1 - (time inside ``fit`` and ``evaluate`` calls) / wall; for KerasTuner, 1 - (time inside
  ``fit``, which also evaluates) / wall. ``fit`` and ``evaluate`` include their own tracing
  and data-adapter setup, so the baselines' overhead is an *under*-estimate.
* ``traces``: programs traced per study. tpu_bo: ``result.traces``. The baselines: every model
  gets a counter wrapped around its ``train_step`` and ``test_step``; their Python body runs
  only while ``tf.function`` traces, so the counter is the number of train and eval traces
  (a new model per trial means new traced functions per trial; an epoch's last, smaller batch
  adds a retrace of the train step, since the baselines keep it as Keras does, where tpu_bo
  drops it: 24 steps against 23 on the default 3,000 images).
* ``trace s``: seconds of tracing and setup inside the train and eval calls, summed over the
  study. For the baselines a callback times every batch; a call's time beyond (batches x its
  median batch) is counted (the callback's per-batch timestamps cost the baselines a little
  time of their own). For tpu_bo, which traces in the first trial only, the first
  trial's train + eval seconds minus the median of the later trials'. An estimate (the machine
  is noisy), but the same kind of estimate for every method.
* ``RSS growth``: resident set size (``psutil.Process().memory_info().rss``) after the last
  trial minus after the first, i.e. growth over the trials once everything is warm; also the
  RSS before the study and the peak (``ru_maxrss``). tpu_bo's is sampled by
  ``bench.common.RssMeter``, an observer whose ``on_trial_end`` reads it as each trial ends.

Ratios are method / tpu_bo (above 1: tpu_bo is faster or smaller). ``--jit_compile`` sets
``jit_compile=True`` in tpu_bo's Config and in every ``model.compile``; XLA on this CPU is
slow for the CNN and each baseline trial compiles its own programs, so it defaults to 8 trials
(3 random) to stay within 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import baselines
from bench.common import (
    RssMeter,
    TrialTimer,
    default_out,
    fmt,
    peak_rss_mib,
    quiet,
    ratio,
    rss_mib,
    write_results,
)

METHODS = ("tpu_bo", "blog", "kerastuner")
BATCH = baselines.BATCH
SPACE = ["dropout_2:float:0.1:0.5", "learning_rate:log:1e-4:1e-2"]


def run_tpu_bo(args: argparse.Namespace) -> dict[str, Any]:
    """The study through ``tpu_bo.run_study``, measured by a ``TrialTimer`` and an ``RssMeter``."""
    from tpu_bo import run_study

    timer, meter = TrialTimer(), RssMeter()
    with tempfile.TemporaryDirectory() as tmp, quiet():
        started = time.perf_counter()
        result = run_study(
            dataset="mnist",
            data_dir=args.data_dir,
            download=False,
            train_split=args.train_split,
            eval_split=args.eval_split,
            test_split="",
            model="mnist_cnn",
            space=SPACE,
            epochs=1,
            batch_size=BATCH,
            init_points=args.init_points,
            n_iter=args.trials - args.init_points,
            seed=args.seed,
            jit_compile=args.jit_compile,
            accelerator="cpu",
            output_dir=tmp,
            observers=[timer, meter],
        )
        wall = time.perf_counter() - started
    trials = []
    for r in sorted(result.trials, key=lambda r: r.number):
        train, evaluation = timer.train_seconds(r), timer.eval_seconds.get(r.number, 0.0)
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
    return {"wall_seconds": wall, "trials": trials, "traces": result.traces}


RUNNERS = {
    "tpu_bo": run_tpu_bo,
    "blog": baselines.run_blog,
    "blog_clear": lambda a: baselines.run_blog(a, clear_session=True),
    "kerastuner": baselines.run_kerastuner,
}


def child(args: argparse.Namespace) -> None:
    """Runs one method in this process and writes its raw figures to ``args._result``."""
    import keras
    import tensorflow as tf  # noqa: F401 - imported before the clock starts, for every method

    if args._child == "kerastuner":
        import keras_tuner  # noqa: F401
    import bayes_opt  # noqa: F401
    import tensorflow_datasets  # noqa: F401

    import tpu_bo  # noqa: F401

    keras.utils.set_random_seed(args.seed)
    rss_start = rss_mib()
    out = RUNNERS[args._child](args)
    out.update(method=args._child, rss_start_mib=rss_start, peak_rss_mib=peak_rss_mib())
    pathlib.Path(args._result).write_text(json.dumps(out))


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    trials = raw["trials"]
    seconds = [t["seconds"] for t in trials]
    inside = sum(t["step_seconds"] for t in trials)
    rss = [t["rss_mib"] for t in trials if t.get("rss_mib") is not None]
    targets = [t["target"] for t in trials if t["target"] is not None]
    return {
        "method": raw["method"],
        "wall_seconds": raw["wall_seconds"],
        "trials": len(trials),
        "first_trial_seconds": seconds[0],
        "median_trial_seconds": statistics.median(seconds),
        "train_eval_seconds": inside,
        "overhead_fraction": 1 - inside / raw["wall_seconds"],
        "traces": raw["traces"],
        "trace_setup_seconds": sum(t["trace_setup_seconds"] for t in trials),
        "rss_start_mib": raw["rss_start_mib"],
        "rss_after_first_trial_mib": rss[0] if rss else None,
        "rss_after_last_trial_mib": rss[-1] if rss else None,
        "rss_growth_mib": rss[-1] - rss[0] if rss else None,
        "peak_rss_mib": raw["peak_rss_mib"],
        "best_val_accuracy": max(targets) if targets else None,
        "median_val_accuracy": statistics.median(targets) if targets else None,
        "per_trial": trials,
    }


RATIO_KEYS = (
    "wall_seconds",
    "first_trial_seconds",
    "median_trial_seconds",
    "overhead_fraction",
    "traces",
    "trace_setup_seconds",
    "rss_growth_mib",
    "peak_rss_mib",
)


def spawn(method: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result, log = os.path.join(tmp, "result.json"), os.path.join(tmp, "log.txt")
        cmd = [sys.executable, "-m", args._module, f"--_child={method}", f"--_result={result}"]
        with open(log, "w") as f:
            proc = subprocess.run(cmd + extra, stdout=f, stderr=subprocess.STDOUT, check=False)
        if proc.returncode:
            tail = pathlib.Path(log).read_text()[-3000:]
            raise SystemExit(f"{method} failed (status {proc.returncode}):\n{tail}")
        return json.loads(pathlib.Path(result).read_text())


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = [
        f"--trials={args.trials}",
        f"--init_points={args.init_points}",
        f"--seed={args.seed}",
        f"--train_split={args.train_split}",
        f"--eval_split={args.eval_split}",
        f"--data_dir={args.data_dir}",
    ]
    return flags + (["--jit_compile"] if args.jit_compile else [])


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The workload and measurement settings a results file records (overhead and memory)."""
    return {
        "quick": args.quick,
        "jit_compile": args.jit_compile,
        "workload": {
            "dataset": "mnist",
            "train_split": args.train_split,
            "eval_split": args.eval_split,
            "trials": args.trials,
            "init_points": args.init_points,
            "epochs": 1,
            "batch_size": BATCH,
            "seed": args.seed,
        },
        "rss": "psutil.Process().memory_info().rss, one subprocess per method",
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, help="default 20, or 8 with --jit_compile")
    parser.add_argument("--init_points", type=int, help="default 5, or 3 with --jit_compile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_split", default="train[:5%]")
    parser.add_argument("--eval_split", default="train[90%:]")
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "tfds"))
    parser.add_argument("--methods", default=",".join(METHODS), help="tpu_bo must come first")
    parser.add_argument("--jit_compile", action="store_true", help="XLA for every method")
    parser.add_argument(
        "--quick", action="store_true", help="train[:1%%], eval train[99%%:], 3 trials"
    )
    parser.add_argument("--out", default="")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args._module = "bench.overhead"
    if args.trials is None:
        args.trials = 8 if args.jit_compile else 20
    if args.init_points is None:
        args.init_points = 3 if args.jit_compile else 5
    if args.quick:
        args.trials, args.init_points = 3, 2
        args.train_split, args.eval_split = "train[:1%]", "train[99%:]"
    args.out = args.out or default_out(
        "overhead_jit" if args.jit_compile else "overhead", quick=args.quick
    )
    return args


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = rows[0]
    print(
        f"\n{args.trials} trials, MNIST {args.train_split} -> {args.eval_split}, "
        f"jit_compile={args.jit_compile}; (ratio) = method / {base['method']}"
    )
    print(
        f"{'method':<11} {'wall s':>14} {'1st trial s':>14} {'median trial s':>15} "
        f"{'overhead':>14} {'traces':>11} {'trace s':>13} {'RSS growth MiB':>17} "
        f"{'peak MiB':>15} {'best val':>9}"
    )
    for r in rows:
        q = r["ratio_vs_tpu_bo"]
        print(
            f"{r['method']:<11} {r['wall_seconds']:>7.1f} ({fmt(q['wall_seconds'], '4.2f')}) "
            f"{r['first_trial_seconds']:>7.1f} ({fmt(q['first_trial_seconds'], '4.2f')}) "
            f"{r['median_trial_seconds']:>8.2f} ({fmt(q['median_trial_seconds'], '4.2f')}) "
            f"{r['overhead_fraction']:>7.1%} ({fmt(q['overhead_fraction'], '4.2f')}) "
            f"{r['traces']:>4} ({fmt(q['traces'], '4.1f')}) "
            f"{r['trace_setup_seconds']:>5.1f} ({fmt(q['trace_setup_seconds'], '5.1f')}) "
            f"{fmt(r['rss_growth_mib'], '8.1f')} ({fmt(q['rss_growth_mib'], '5.2f')}) "
            f"{r['peak_rss_mib']:>7.0f} ({fmt(q['peak_rss_mib'], '4.2f')}) "
            f"{fmt(r['best_val_accuracy'], '9.4f')}"
        )


def main() -> None:
    args = parse_args()
    if args._child:
        child(args)
        return
    started = time.perf_counter()
    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        print(f"{method}: {args.trials} trials in a subprocess...", flush=True)
        rows.append(summarise(spawn(method, args, child_flags(args))))
        print(f"  {rows[-1]['wall_seconds']:.1f} s", flush=True)
    for r in rows:
        r["ratio_vs_tpu_bo"] = {k: ratio(r[k], rows[0][k]) for k in RATIO_KEYS}
    print_table(rows, args)
    total = time.perf_counter() - started
    out = write_results(
        args.out,
        {"benchmark": "overhead", **settings(args), "rows": rows, "total_seconds": total},
    )
    print(f"{total:.0f} s in all; wrote {out}")


if __name__ == "__main__":
    main()
