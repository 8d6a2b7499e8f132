r"""The blog recipe, KerasTuner, Optuna TPE and tpu_bo side by side on the offline digits task.

  python -m bench.side_by_side              # 10 seeds x 4 methods (+ tpu_bo's equal-time run)
  python -m bench.side_by_side --seeds=5    # fewer seeds
  python -m bench.side_by_side --quick      # 2 seeds, 4 trials x 1 epoch (CI)

**The task**, the same for every method: tpu_bo's offline ``digits`` dataset (scikit-learn's 8x8
digits in ``tpu_bo.data.sources.digits_arrays``' fixed order), trained on ``train[:90%]``
(1,350 images) and scored on ``train[90%:]`` (150): the arrays of ``bench.overhead``'s digits
workload, which ``bench.baselines.load_arrays`` takes from tpu_bo's own source. The seed CNN
(``mnist_cnn``: Conv 32 -> Conv 64 -> MaxPool -> Dropout .25 -> Flatten -> Dense(``dense_units``)
-> Dropout(``dropout_2``) -> Dense 10, RMSprop, sparse cross-entropy on logits), over
``dropout_2`` in [0.1, 0.5], ``learning_rate`` log [1e-4, 1e-2] and ``dense_units`` in
{128, 256, 384}; 20 trials (``--trials``) of 2 epochs (``--epochs``), batch 64, **4 random
trials for every method** (``--init_points``; not each library's own default: KerasTuner's
would be 9, Optuna's 10, tpu_bo's 5), seeds 0 .. ``--seeds`` - 1: one seed seeds the sampler,
Keras (``keras.utils.set_random_seed``) and the data order of every method.

* ``blog``: the blog post's recipe (``bench.baselines.run_blog``): ``bayes_opt``'s
  ``BayesianOptimization(f, pbounds).maximize(init_points, n_iter)`` over a function that builds,
  compiles, fits and evaluates a fresh Keras model. Its coordinates are tpu_bo's
  (``SearchSpace.pbounds``): log10 of the learning rate (the post searched it linearly, so this
  helps it) and a ``CategoricalParameter`` for the width.
* ``kerastuner``: ``keras_tuner.BayesianOptimization`` (``bench.baselines.run_kerastuner``) over
  a hypermodel of the same CNN, ``hp.Choice("dense_units", ...)``; ``tuner.search`` with
  ``validation_data``: its score is the best epoch's ``val_accuracy``.
* ``optuna``: ``optuna.samplers.TPESampler(seed, n_startup_trials=init_points)`` and
  ``study.optimize`` over an objective of the same recipe as the blog's (``baselines.Recipe``:
  build, compile, fit, ``evaluate``), with ``keras.backend.clear_session()`` first, as Optuna's
  Keras example does.
* ``tpu_bo``: ``tpu_bo.run_study`` with its defaults (the ``bayes_opt`` sampler) but
  ``--parallel_trials`` (1 unless given), ``accelerator="cpu"``, a temporary ``output_dir``,
  no test split; ``dense_units`` is structural (one program per width). Scored by the best epoch.
* ``tpu_bo_time``: the same study with ``--time_trials`` (200) trials, stopped before a trial
  would start after ``--time_factor`` (1.3) x that seed's blog wall time. Its per-trial finish
  times (an observer's ``on_trial_end``, from before ``run_study`` is called) give **tpu_bo at
  the blog's wall time**: the best accuracy among the trials it finished within the blog's
  median wall time (and, in the JSON, within that seed's own blog wall time). Its first
  ``--trials`` trials should repeat the ``tpu_bo`` run's (``same_first_trials`` in the JSON).

Each method runs in a fresh subprocess per seed (``bench.common.spawn``), the libraries imported
before its clock starts; ``--in_process`` (``--quick``'s way, and the test's) runs them all in
this process instead, the Keras session cleared and garbage collected before each run.
``--max_minutes`` starts no seed that would end after it, the mean seed so far as the estimate.
``wall s`` is the whole study: loading the arrays, every trial, the suggestions and what each
library writes.

Reported per method over the seeds: the median and mean of the study's best validation
accuracy (its own objective: the last epoch's accuracy for blog and optuna, which
``evaluate`` once after ``fit``; the best epoch's for kerastuner and tpu_bo, so ``best last``
also gives every method's best last-epoch accuracy), the median wall time, the median of the
per-seed ratio of its wall time to the blog's, and the seeds on which its best beat, tied or
lost to the blog's. The figures are written after every seed (``--out``), so a run cut short
keeps the seeds it finished.
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench import baselines
from bench.baselines import BOUNDS
from bench.common import default_out, fmt, quiet, ratio, spawn, write_results
from bench.overhead import WORKLOADS
from bench.scheduler_peers import BudgetSpent
from tpu_bo.report.observers import Observer

DENSE = (128, 256, 384)
SPACE = [
    "dropout_2:float:{}:{}".format(*BOUNDS["dropout_2"]),
    "learning_rate:log:{}:{}".format(*BOUNDS["learning_rate"]),
    f"dense_units:choice:{','.join(map(str, DENSE))}",
]
METHODS = ("blog", "kerastuner", "optuna", "tpu_bo", "tpu_bo_time")
DIGITS = WORKLOADS["digits"]  # bench.overhead's digits workload: the splits, batch 64, 20 x 2
STUDY_FIELDS = (
    "dataset",
    "train_split",
    "eval_split",
    "epochs",
    "batch_size",
    "init_points",
    "seed",
)
QUICK = {"seeds": 2, "trials": 4, "epochs": 1, "init_points": 2}  # and --in_process


class FinishTimes(Observer):
    """Each ended trial's figures and its end in seconds since ``started``; with ``limit``,
    stops the study (``BudgetSpent``) before a trial would start after ``limit`` seconds."""

    def __init__(self, started: float, limit: float | None = None) -> None:
        self.started, self.limit = started, limit
        self.trials: list[dict[str, Any]] = []

    def on_trial_start(self, trial: Any) -> None:
        if self.limit is not None and time.perf_counter() - self.started > self.limit:
            raise BudgetSpent

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        last = record.history[-1].get("val_accuracy") if record.history else None
        self.trials.append(
            {
                "trial": record.number,
                "status": record.status.value,
                "target": record.target,
                "last_target": last,
                "params": record.params,
                "seconds": record.seconds,
                "end_seconds": time.perf_counter() - self.started,
                "width": record.width,
                "source": record.source,
            }
        )


def run_tpu_bo(args: argparse.Namespace, limit: float | None = None) -> dict[str, Any]:
    """The study through ``run_study`` (its defaults but the workload's fields); with
    ``limit``, ``args.time_trials`` trials stopped at ``limit`` seconds (``FinishTimes``)."""
    from tpu_bo import run_study

    trials = args.trials if limit is None else args.time_trials
    result = None
    with tempfile.TemporaryDirectory() as tmp, quiet():
        started = time.perf_counter()
        clock = FinishTimes(started, limit)
        try:
            result = run_study(
                **{name: getattr(args, name) for name in STUDY_FIELDS},
                n_iter=trials - args.init_points,
                test_split="",
                model="mnist_cnn",
                space=SPACE,
                accelerator="cpu",
                # K=1, as the figures in bench/RESULTS.md were measured (before auto K was the
                # default); auto's start-up would also outlast a tiny --quick blog run.
                parallel_trials=args.parallel_trials,
                output_dir=tmp,
                observers=[clock],
            )
        except BudgetSpent:
            pass  # the time limit
        wall = time.perf_counter() - started
    traces = None if result is None else result.traces
    return {"wall_seconds": wall, "trials": clock.trials, "traces": traces, "limit": limit}


def run_optuna(args: argparse.Namespace) -> dict[str, Any]:
    """Optuna's TPE over the common recipe: build, compile, fit and evaluate per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    traces, split = baselines.TraceCounter(), baselines.TimeSplit()
    started = time.perf_counter()
    recipe = baselines.Recipe(args, split, traces, clear_session=True)
    sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=args.init_points)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial: Any) -> float:
        with split.measure("suggest_wait"):
            params = {
                "dropout_2": trial.suggest_float("dropout_2", *BOUNDS["dropout_2"]),
                "learning_rate": trial.suggest_float(
                    "learning_rate", *BOUNDS["learning_rate"], log=True
                ),
                "dense_units": trial.suggest_categorical("dense_units", list(DENSE)),
            }
        return recipe(params)

    study.optimize(objective, n_trials=args.trials)
    return baselines.figures(time.perf_counter() - started, recipe.trials, traces, split)


RUNNERS = {
    "blog": lambda a: baselines.run_blog(a, space=SPACE),
    "kerastuner": lambda a: baselines.run_kerastuner(a, DENSE),
    "optuna": run_optuna,
    "tpu_bo": run_tpu_bo,
    "tpu_bo_time": lambda a: run_tpu_bo(a, limit=a.time_limit),
}


def run_method(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """One method's study for ``args.seed`` in this process, its Keras state cleared first."""
    import keras

    keras.backend.clear_session()
    gc.collect()  # the earlier runs' garbage goes now, outside any run's clock
    keras.utils.set_random_seed(args.seed)
    return {"method": method, "seed": args.seed, **RUNNERS[method](args)}


def child(args: argparse.Namespace) -> None:
    """Runs one method in this (fresh) process and writes its figures to ``args._result``."""
    import bayes_opt  # noqa: F401 - every library imported before the clock starts
    import keras_tuner  # noqa: F401
    import optuna  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import tensorflow  # noqa: F401

    import tpu_bo  # noqa: F401

    pathlib.Path(args._result).write_text(json.dumps(run_method(args._child, args)))


def best(trials: Sequence[dict[str, Any]], key: str = "target", within: float | None = None):
    """The best ``key`` among ``trials`` (those ended within ``within`` seconds), or None."""
    values = [
        t.get(key, t["target"])
        for t in trials
        if t["target"] is not None and (within is None or t["end_seconds"] <= within)
    ]
    return max((v for v in values if v is not None), default=None)


def seed_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """One method's figures for one seed."""
    trials = raw["trials"]
    return {
        "seed": raw["seed"],
        "wall_seconds": raw["wall_seconds"],
        "trials": len(trials),
        "best": best(trials),
        "best_last": best(trials, "last_target"),
        "traces": raw.get("traces"),
        "per_trial": trials,
        **({"limit": raw["limit"]} if raw.get("limit") is not None else {}),
    }


def median(values: Sequence[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def mean(values: Sequence[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per method: medians and means over the seeds, ratios to the blog's run of each seed;
    and tpu_bo at the blog's median wall time (``tpu_bo_time`` cut there)."""
    blog = {r["seed"]: r for r in runs.get("blog", [])}
    out: dict[str, Any] = {}
    for method, seeds in runs.items():
        if method == "tpu_bo_time":
            continue
        paired = [(r, blog[r["seed"]]) for r in seeds if r["seed"] in blog]
        diffs = [r["best"] - b["best"] for r, b in paired]
        out[method] = {
            "seeds": len(seeds),
            "median_best": median([r["best"] for r in seeds]),
            "mean_best": mean([r["best"] for r in seeds]),
            "median_best_last": median([r["best_last"] for r in seeds]),
            "median_wall_seconds": median([r["wall_seconds"] for r in seeds]),
            "median_wall_vs_blog": median(
                [ratio(r["wall_seconds"], b["wall_seconds"]) for r, b in paired]
            ),
            "median_best_minus_blog": median(diffs),
            "vs_blog": [sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), len(diffs)],
        }
    timed = runs.get("tpu_bo_time", [])
    wall = out.get("blog", {}).get("median_wall_seconds")
    if timed and wall is not None:
        # A seed whose study finished no trial within that time (its start-up, which now
        # measures --parallel_trials=auto, outlasted a very short blog run) has no best.
        at = [best(r["per_trial"], within=wall) for r in timed]
        own = [best(r["per_trial"], within=blog[r["seed"]]["wall_seconds"]) for r in timed]
        own = [a for a in own if a is not None]
        diffs = [
            a - blog[r["seed"]]["best"] for a, r in zip(at, timed, strict=True) if a is not None
        ]
        first = {r["seed"]: r for r in runs.get("tpu_bo", [])}
        out["tpu_bo_at_blog_wall"] = {
            "seeds": len(timed),
            "seconds": wall,
            "median_best": median([a for a in at if a is not None]),
            "mean_best": mean([a for a in at if a is not None]),
            "median_trials": median(
                [sum(t["end_seconds"] <= wall for t in r["per_trial"]) for r in timed]
            ),
            "per_seed_best": at,
            "covered": [r["wall_seconds"] >= wall for r in timed],  # ran at least that long
            "median_best_at_own_seed_blog_wall": median(own),
            "median_best_minus_blog": median(diffs),
            "vs_blog": [sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), len(diffs)],
            "same_first_trials": [
                _same_first_trials(r, first[r["seed"]]) for r in timed if r["seed"] in first
            ],
        }
    return out


def _same_first_trials(timed: dict, whole: dict) -> bool:
    """Whether two runs of one seed scored the same over the trials both ran (the timed run
    may stop first)."""
    a, b = ([t["target"] for t in run["per_trial"]] for run in (timed, whole))
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def print_table(summary: dict[str, Any], runs: dict[str, list[dict[str, Any]]], args) -> None:
    print(
        f"\ndigits {DIGITS['train_split']} -> {DIGITS['eval_split']}, {args.trials} trials "
        f"({args.init_points} random) x {args.epochs} epoch(s), batch {args.batch_size}; "
        f"over seeds; ratios and W/T/L against the blog's run of the same seed"
    )
    print(
        f"{'method':<24} {'seeds':>5} {'median best':>11} {'mean best':>9} {'best last':>9} "
        f"{'wall s':>7} {'wall/blog':>9} {'best-blog':>9} {'W/T/L vs blog':>13}"
    )
    for method, s in summary.items():
        name, wall = method, s.get("median_wall_seconds")
        if method == "tpu_bo_at_blog_wall":
            name, wall = f"tpu_bo in {s['seconds']:.1f} s", s["seconds"]
        w, t, n = s["vs_blog"]
        wtl = "-" if method == "blog" else f"{w}/{t}/{n - w - t}"
        print(
            f"{name:<24} {s['seeds']:>5} {fmt(s['median_best'], '.4f'):>11} "
            f"{fmt(s['mean_best'], '.4f'):>9} {fmt(s.get('median_best_last'), '.4f'):>9} "
            f"{fmt(wall, '.1f'):>7} {fmt(s.get('median_wall_vs_blog'), '.2f'):>9} "
            f"{fmt(s['median_best_minus_blog'], '+.4f'):>9} {wtl:>13}"
        )
    timed = summary.get("tpu_bo_at_blog_wall")
    if timed:
        print(
            f"tpu_bo in the blog's median wall: median {fmt(timed['median_trials'], '.0f')} "
            f"trials finished; at each seed's own blog wall: median best "
            f"{fmt(timed['median_best_at_own_seed_blog_wall'], '.4f')}; first {args.trials} "
            f"trials the same as the tpu_bo run's: {timed['same_first_trials']}"
        )
    print("\nbest validation accuracy per seed")
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    print(f"{'method':<12}" + "".join(f"{s:>8}" for s in seeds))
    for method, rs in runs.items():
        by_seed = {r["seed"]: r["best"] for r in rs}
        print(f"{method:<12}" + "".join(f"{fmt(by_seed.get(s), '.4f'):>8}" for s in seeds))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--seeds", type=int, default=10, help="seeds 0 .. N-1")
    add("--trials", type=int, default=DIGITS["trials"])
    add("--epochs", type=int, default=DIGITS["epochs"])
    add("--init_points", type=int, default=DIGITS["init_points"], help="random trials, all")
    add("--methods", default=",".join(METHODS), help="comma list, run in this order per seed")
    add("--parallel_trials", default="1", help="tpu_bo's --parallel_trials (1, or auto)")
    add("--time_factor", type=float, default=1.3, help="tpu_bo_time stops at F x blog's wall")
    add("--time_trials", type=int, default=200, help="tpu_bo_time's trial budget")
    add("--time_limit", type=float, default=60.0, help="tpu_bo_time's stop without a blog run")
    add("--in_process", action="store_true", help="every run in this process (--quick's way)")
    add("--max_minutes", type=float, default=0, help="start no seed that would end after it")
    add("--quick", action="store_true", help="2 seeds, 4 trials (2 random) x 1 epoch, in process")
    add("--out", default="", help="default bench/results/side_by_side[_quick].json")
    add("--seed", type=int, default=0, help=argparse.SUPPRESS)  # a child's
    add("--_child", default="", help=argparse.SUPPRESS)
    add("--_result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK, in_process=True)
    for name in ("dataset", "train_split", "eval_split", "batch_size"):
        setattr(args, name, DIGITS[name])
    args.jit_compile, args._module = False, "bench.side_by_side"
    args.out = args.out or default_out("side_by_side", quick=args.quick)
    return args


def run_seed(seed: int, args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Every method of ``--methods`` for one seed, appended to ``runs``."""
    for method in [m for m in args.methods.split(",") if m]:
        limit = args.time_limit
        blog = [r for r in runs.get("blog", []) if r["seed"] == seed]
        if blog:
            limit = args.time_factor * blog[0]["wall_seconds"]
        if args.in_process:
            seed_args = argparse.Namespace(**{**vars(args), "seed": seed, "time_limit": limit})
            raw = run_method(method, seed_args)
        else:
            names = ("trials", "epochs", "init_points", "time_trials")
            flags = [f"--{k}={getattr(args, k)}" for k in names]
            flags += [f"--seed={seed}", f"--time_limit={limit}"]
            raw = spawn(method, args, flags)
        runs.setdefault(method, []).append(figures := seed_figures(raw))
        print(
            f"seed {seed} {method}: best {fmt(figures['best'], '.4f')}, "
            f"{figures['trials']} trials, {figures['wall_seconds']:.1f} s",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args._child:
        child(args)
        return {}
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    payload: dict[str, Any] = {"benchmark": "side_by_side"}
    payload.update(quick=args.quick, seeds=args.seeds, trials=args.trials, epochs=args.epochs)
    payload.update(init_points=args.init_points, batch_size=args.batch_size, space=SPACE)
    payload.update(time_factor=args.time_factor, time_trials=args.time_trials)
    payload.update(in_process=args.in_process, workload=DIGITS, max_minutes=args.max_minutes)
    for seed in range(args.seeds):
        spent = time.perf_counter() - started
        if args.max_minutes and seed and spent * (seed + 1) / seed > 60 * args.max_minutes:
            print(f"stopping after {seed} seeds: seed {seed} would end past --max_minutes")
            break
        run_seed(seed, args, runs)
        payload.update(seeds_done=seed + 1, total_seconds=time.perf_counter() - started)
        payload.update(summary=summarise(runs), runs=runs)
        out = write_results(args.out, payload)  # after every seed: a cut run keeps its seeds
    print_table(payload["summary"], runs, args)
    print(f"\n{time.perf_counter() - started:.0f} s in all; wrote {out}")
    return payload


if __name__ == "__main__":
    main()
