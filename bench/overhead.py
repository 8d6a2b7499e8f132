r"""Overhead of one study run three ways, tpu_bo, the blog recipe and KerasTuner, on two workloads.

  python -m bench.overhead                     # digits and MNIST, 20 trials per method each
  python -m bench.overhead --workload=digits   # one workload (digits, mnist or both)
  python -m bench.overhead --jit_compile       # XLA (jit_compile=True everywhere): MNIST, 8 trials
  python -m bench.overhead --quick             # digits, 3 trials (CI, under a minute)

The workloads (``--trials``, ``--init_points``, ``--seed``, ``--train_split`` and
``--eval_split`` override a workload's own):

* ``digits``: the study of ``python -m tpu_bo.main --dataset=digits --epochs=2 --batch_size=64
  --init_points=4 --n_iter=16 --seed=1``: scikit-learn's 8x8 digits (tpu_bo's ``digits`` source,
  whose ``train`` is the first 1,500 images), trained on ``train[:90%]`` (1,350 images) and
  scored on ``train[90%:]`` (150), 20 trials (4 random), 2 epochs per trial, batch 64, seed 1.
  (The CLI then scores the ``test`` split once for the best trial; no method does that here.)
* ``mnist``: the real MNIST in ``--data_dir``: ``train[:5%]`` (3,000 images) scored on
  ``train[90%:]`` (6,000), 20 trials (5 random), 1 epoch per trial, batch 128, seed 0.

The same study, three ways: the seed CNN (``tpu_bo.train.models.mnist_cnn``: Conv 32 -> Conv 64 ->
MaxPool -> Dropout .25 -> Flatten -> Dense 128 -> Dropout(``dropout_2``) -> Dense 10, RMSprop,
logits with sparse cross-entropy) on the workload's images, over ``dropout_2`` in [0.1, 0.5]
and ``learning_rate`` in [1e-4, 1e-2], with the same trials, epochs, batch and seed:

* ``tpu_bo``: ``tpu_bo.run_study`` (``accelerator="cpu"``, a temporary ``output_dir``, no test
  split), learning rate on a log scale; one compiled train and eval program for all trials.
* ``blog``: the blog post's recipe (``bench/baselines.py``): ``bayes_opt``'s
  ``BayesianOptimization(f, pbounds).maximize(init_points, n_iter)`` over a function that builds
  a fresh Keras model, ``compile``\ s it, ``fit``\ s it and ``evaluate``\ s it once. The arrays
  are loaded into NumPy once; each trial builds its own ``tf.data`` pipeline from them (shuffle,
  batch, normalise, prefetch), as ``fit(x, y)`` does inside. The learning rate is searched on
  the **linear** range [1e-4, 1e-2], as the blog does.
* ``blog_clear`` (only with ``--methods``): the blog recipe plus
  ``keras.backend.clear_session()`` at the start of every trial.
* ``kerastuner``: ``keras_tuner.BayesianOptimization`` (``max_trials`` = the trials,
  ``num_initial_points`` = ``--init_points``) over a hypermodel that builds and compiles the
  same CNN; ``tuner.search(train, validation_data=eval, epochs=...)`` with one ``tf.data``
  pipeline built before the search. Log-scale learning rate; the score is the best epoch's
  ``val_accuracy`` (its objective; tpu_bo's target is also the best epoch's).

Each method runs in its own fresh subprocess, so none inherits another's TensorFlow state and
the RSS figures are its own. Reported per method and workload (ratios are method / tpu_bo):

* ``wall s``: the whole study, from before its data are loaded to the last trial (TensorFlow,
  Keras, KerasTuner, bayes_opt and scikit-learn imports excluded for all three).
* ``1st trial s``, ``median trial s``: build + compile + train + evaluate (tpu_bo: its
  ``TrialRecord.seconds``, weight reset, train and eval), the suggestion excluded.
* ``overhead``: 1 - (seconds inside train and eval calls) / wall. tpu_bo: a
  ``bench.common.TrialTimer`` observer; the baselines: time inside ``fit`` and ``evaluate``,
  which include Keras' tracing, so theirs is an *under*-estimate.
* ``traces``: programs traced. tpu_bo: ``result.traces``; the baselines: a counter wrapped
  around every model's ``train_step`` and ``test_step`` (their Python runs only on a trace; a
  smaller last batch retraces, which tpu_bo avoids by dropping it in train and padding eval).
* ``trace s``: a callback times every batch; what an epoch's batches (or an evaluation's) take
  beyond batches x their median batch is tracing. tpu_bo: its first trial's train + eval
  seconds minus the later trials' median. ``RSS growth``: ``psutil`` RSS after the last trial
  minus after the first; also the peak (``ru_maxrss``).

**Time split** (second table; ``time`` in the JSON): the wall time in ``setup`` (data loading
and input pipelines), ``trace``, ``train``, ``eval``, ``reset``, ``suggest_wait``,
``checkpoint``, ``journal`` and ``other`` (the rest), in seconds and % of wall.

* tpu_bo: its own clock, ``StudyResult.time`` (``tpu_bo/timing.py``: ``trace`` is every call
  that traced, whole; ``reset`` loads trials into slots on the device; ``journal`` writes its
  study storage); the few ms between ``run_study``'s clock and this one's go to ``other``.
* the baselines: a ``bench.common.TimeSplit`` around their calls (``bench/baselines.py``'s
  docstring says which call goes where); their ``train`` includes ``fit``'s own setup.
* ``outside``: 1 - (train + eval + trace) / wall, the share of the study spent neither in train
  or eval steps nor tracing (issue target for tpu_bo: <= 10%). tpu_bo traces in its first trial
  only; the baselines trace in every trial and all of it counts as ``trace`` here, which
  flatters theirs. Under the table, for each baseline, tpu_bo's wall over its wall (issue
  targets on digits: <= 0.25 against the blog, <= 0.12 against KerasTuner).

``--jit_compile`` sets ``jit_compile=True`` in tpu_bo's Config and every ``model.compile``; XLA
on this CPU is slow for the CNN and each baseline trial compiles its own programs, so it
defaults to MNIST only, 8 trials (3 random), to stay within 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import tempfile
import time
from typing import Any

from bench import baselines
from bench.common import (
    SPLIT_KEYS,
    RssMeter,
    TrialTimer,
    default_out,
    fmt,
    outside_fraction,
    peak_rss_mib,
    quiet,
    ratio,
    rss_mib,
    spawn,
    write_results,
)

METHODS = ("tpu_bo", "blog", "kerastuner")
BATCH = baselines.BATCH
SPACE = ["dropout_2:float:0.1:0.5", "learning_rate:log:1e-4:1e-2"]
FIELDS = ("dataset", "train_split", "eval_split", "epochs", "batch_size", "trials", "init_points")


def workload(*values: Any) -> dict[str, Any]:
    return dict(zip((*FIELDS, "seed"), values, strict=True))


WORKLOADS = {  # the digits study of tpu_bo.main, and MNIST train[:5%] (the module docstring)
    "digits": workload("digits", "train[:90%]", "train[90%:]", 2, 64, 20, 4, 1),
    "mnist": workload("mnist", "train[:5%]", "train[90%:]", 1, BATCH, 20, 5, 0),
}
QUICK: dict[str, dict[str, Any]] = {
    "digits": {"trials": 3, "init_points": 2},
    "mnist": {
        "trials": 3,
        "init_points": 2,
        "train_split": "train[:1%]",
        "eval_split": "train[99%:]",
    },
}
JIT = {"trials": 8, "init_points": 3}
OVERRIDES = ("trials", "init_points", "seed", "train_split", "eval_split")
# Issue targets on digits: tpu_bo's wall over each baseline's, and tpu_bo's outside fraction.
TARGETS = {"blog": 0.25, "kerastuner": 0.12}
OUTSIDE_TARGET = 0.10


def run_tpu_bo(args: argparse.Namespace) -> dict[str, Any]:
    """The study through ``tpu_bo.run_study``, measured by a ``TrialTimer`` and an ``RssMeter``."""
    from tpu_bo import run_study

    timer, meter = TrialTimer(), RssMeter()
    with tempfile.TemporaryDirectory() as tmp, quiet():
        started = time.perf_counter()
        result = run_study(
            dataset=args.dataset,
            data_dir=args.data_dir,
            download=False,
            train_split=args.train_split,
            eval_split=args.eval_split,
            test_split="",
            model="mnist_cnn",
            space=SPACE,
            epochs=args.epochs,
            batch_size=args.batch_size,
            init_points=args.init_points,
            n_iter=args.trials - args.init_points,
            seed=args.seed,
            jit_compile=args.jit_compile,
            parallel_trials=args.parallel_trials,
            accelerator="cpu",
            output_dir=tmp,
            observers=[timer, meter],
        )
        wall = time.perf_counter() - started
    if not getattr(result, "time", None):
        raise SystemExit("tpu_bo's StudyResult has no time split (StudyResult.time)")
    split = {k: float(v) for k, v in result.time.items()}
    split["other"] = split.get("other", 0.0) + wall - split["wall"]  # outside run_study's clock
    split["wall"] = wall
    trials = timer.figures(result, meter)
    return {"wall_seconds": wall, "trials": trials, "traces": result.traces, "time": split}


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
    import sklearn.datasets  # noqa: F401 - the digits
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
        "time": raw["time"],
        "outside_fraction": outside_fraction(raw["time"]),
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
    "outside_fraction",
    "traces",
    "trace_setup_seconds",
    "rss_growth_mib",
    "peak_rss_mib",
)


def child_flags(args: argparse.Namespace) -> list[str]:
    """The workload's flags for a child (``bench.memory``'s children take the same)."""
    names = (*FIELDS, "seed", "data_dir")
    flags = [f"--{name}={getattr(args, name)}" for name in names]
    flags.append(f"--parallel_trials={args.parallel_trials}")
    return flags + (["--jit_compile"] if args.jit_compile else [])


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The workload and measurement settings a results file records (overhead and memory)."""
    return {
        "quick": args.quick,
        "jit_compile": args.jit_compile,
        "parallel_trials": args.parallel_trials,
        "workload": {
            "dataset": args.dataset,
            "train_split": args.train_split,
            "eval_split": args.eval_split,
            "trials": args.trials,
            "init_points": args.init_points,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
        },
        "rss": "psutil.Process().memory_info().rss, one subprocess per method",
    }


def workload_args(args: argparse.Namespace, name: str) -> argparse.Namespace:
    """``args`` for one workload: its settings, then ``--jit_compile``'s or ``--quick``'s
    trials, then the flags given explicitly."""
    values = dict(WORKLOADS[name])
    if args.jit_compile:
        values.update(JIT)
    if args.quick:
        values.update(QUICK[name])
    values.update({k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None})
    return argparse.Namespace(**{**vars(args), **values, "workload": name})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workload",
        choices=[*WORKLOADS, "both"],
        help="default both; digits with --quick, mnist with --jit_compile",
    )
    parser.add_argument("--trials", type=int, help="default 20, or 8 with --jit_compile")
    parser.add_argument("--init_points", type=int, help="default 4 (digits), 5 (mnist)")
    parser.add_argument("--seed", type=int, help="default 1 (digits), 0 (mnist)")
    parser.add_argument("--train_split", help="default the workload's")
    parser.add_argument("--eval_split", help="default the workload's")
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "tfds"))
    parser.add_argument("--methods", default=",".join(METHODS), help="tpu_bo must come first")
    parser.add_argument("--jit_compile", action="store_true", help="XLA for every method")
    parser.add_argument(
        "--parallel_trials", default="auto", help="tpu_bo's (auto, its default, or a number)"
    )
    parser.add_argument("--quick", action="store_true", help="3 trials (mnist: train[:1%%])")
    parser.add_argument("--out", default="")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_result", default="", help=argparse.SUPPRESS)
    for name, kind in (("dataset", str), ("epochs", int), ("batch_size", int)):
        parser.add_argument(f"--{name}", type=kind, help=argparse.SUPPRESS)  # a child's workload
    args = parser.parse_args()
    args._module = "bench.overhead"
    if args.workload is None:
        args.workload = "digits" if args.quick else "mnist" if args.jit_compile else "both"
    args.workloads = list(WORKLOADS) if args.workload == "both" else [args.workload]
    args.out = args.out or default_out(
        "overhead_jit" if args.jit_compile else "overhead", quick=args.quick
    )
    return args


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.workload}: {args.trials} trials ({args.init_points} random), {args.dataset} "
        f"{args.train_split} -> {args.eval_split}, {args.epochs} epoch(s), batch "
        f"{args.batch_size}, seed {args.seed}, jit_compile={args.jit_compile}; "
        f"(ratio) = method / {rows[0]['method']}"
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


def print_split(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Where each method's wall time went (s and % of wall), its wall ratio and ``outside``."""
    keys = SPLIT_KEYS[:-1]
    print(f"\n{args.workload}: time split, s (% of wall); outside = 1 - (train+eval+trace)/wall")
    names = [k.replace("suggest_wait", "suggest").replace("checkpoint", "ckpt") for k in keys]
    print(f"{'method':<11}" + "".join(f"{n:>12}" for n in names) + "  wall s  ratio outside")
    for r in rows:
        t, wall = r["time"], r["time"]["wall"]
        cells = "".join(f"{t.get(k, 0.0):>6.1f} ({t.get(k, 0.0) / wall:>3.0%})" for k in keys)
        wall_ratio = fmt(r["ratio_vs_tpu_bo"]["wall_seconds"], "5.2f")
        print(
            f"{r['method']:<11}{cells} {wall:>7.1f} {wall_ratio:>6} {r['outside_fraction']:>6.1%}"
        )
    base, targeted = rows[0], args.workload == "digits" and not args.quick
    for r in rows[1:]:
        share = ratio(base["wall_seconds"], r["wall_seconds"])
        target = TARGETS.get(r["method"]) if targeted else None
        goal = f" (target <= {target})" if target else ""
        print(f"  {base['method']} wall / {r['method']} wall = {fmt(share, '.3f')}{goal}")
    goal = f" (target <= {OUTSIDE_TARGET:.0%})" if targeted else ""
    print(f"  {base['method']} outside train, eval and trace: {base['outside_fraction']:.1%}{goal}")


def run_workload(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every method on one workload (``workload_args``), each in its own subprocess."""
    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        print(f"{args.workload} / {method}: {args.trials} trials in a subprocess...", flush=True)
        rows.append(summarise(spawn(method, args, child_flags(args))))
        print(f"  {rows[-1]['wall_seconds']:.1f} s", flush=True)
    for r in rows:
        r["ratio_vs_tpu_bo"] = {k: ratio(r[k], rows[0][k]) for k in RATIO_KEYS}
    return rows


def main() -> None:
    args = parse_args()
    if args._child:
        child(args)
        return
    started = time.perf_counter()
    studies = [workload_args(args, name) for name in args.workloads]
    results = [(w, run_workload(w)) for w in studies]
    for w, rows in results:
        print_table(rows, w)
        print_split(rows, w)
    total = time.perf_counter() - started
    workloads = {w.workload: {**settings(w), "rows": rows} for w, rows in results}
    payload = {"quick": args.quick, "jit_compile": args.jit_compile, "workloads": workloads}
    out = write_results(args.out, {"benchmark": "overhead", **payload, "total_seconds": total})
    print(f"\n{total:.0f} s in all; wrote {out}")


if __name__ == "__main__":
    main()
