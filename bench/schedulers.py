r"""Schedulers at equal compute: tpu_bo's pruners and PBT against KerasTuner and Optuna.

  python -m bench.schedulers                     # MNIST train[:10%], 7 methods x 3 seeds:
                                                 # budget 32, about 1 h on 2 CPU cores
  python -m bench.schedulers --methods=fifo,asha --seeds=1 --budget=32
  python -m bench.schedulers --quick             # digits, 1 seed, budget 8, 2 epochs (CI)
  python -m bench.schedulers --from_json=bench/results/schedulers.json --target=0.98

One workload: the seed CNN (``tpu_bo.train.models.mnist_cnn``'s layers) on ``--train_split``
of MNIST in ``--data_dir``, scored on ``train[90%:]`` after every epoch, batch 128, up to
``--epochs`` (8) per trial, over ``learning_rate`` log [1e-4, 1e-2], ``dropout_1`` [0, 0.5],
``dropout_2`` [0.1, 0.6] and ``label_smoothing`` [0, 0.2]. Every method gets the same
``--budget`` of compute in **tower-epochs** (epochs trained by all trials together), for seeds
0 .. ``--seeds`` - 1, one method after another in this process:

* ``fifo``, ``median``, ``asha``, ``hyperband``: ``tpu_bo.run_study`` with ``prune`` none,
  median, asha, hyperband (``min_epochs`` 1, ``reduction_factor`` 3, ``--prune_after``), ``--k``
  trials per pack, ``--sampler`` (bayes_opt, tpu_bo's default). ``fifo`` gets budget / epochs
  trials, the pruners more than the budget can hold.
* ``pbt``: ``run_study`` with ``scheduler="pbt"`` (``--pbt_interval`` 2, ``pbt_quantile`` and
  ``pbt_resample`` 0.25): populations of K, one after another, budget / epochs trials in all.
  Reported unavailable when ``Config`` has no such field.
* ``kerastuner`` (``Hyperband``, ``factor`` 3) and ``optuna`` (``TPESampler`` with
  ``HyperbandPruner``, reduction factor 3), both up to ``--epochs`` per trial: plain Keras, one
  model at a time (``bench/scheduler_peers.py``).

**Compute.** A peer is charged one tower-epoch per epoch it trains. tpu_bo is charged its
**computed slot-epochs**, idle slots included: K per pack epoch, counted by an ``Observer``
(``PackMeter``: a pack epoch begins when ``on_progress``'s step starts over), and each epoch's
score is recorded at the compute of its whole pack epoch. A method stops once its compute
reaches the budget (``fifo``'s study ends there by itself, the others are stopped by
``BudgetSpent``); curves are truncated at the budget. So the budget must be a multiple of K.

**Reported** per method, the median over seeds (every seed in the JSON): the best validation
accuracy within the budget; the compute and wall seconds to the first epoch at or above
``--target`` (``-``/``None``: not reached; the median counts a miss as infinite); utilization
(tpu_bo: useful / computed slot-epochs as the observer counts them, ``StudyResult.utilization``
too in the JSON when the study returned; the peers: 1.0, one model at a time); the wall seconds
until the budget was spent (its last epoch; data loading and tracing included; the JSON's
``wall_seconds_total`` adds the teardown: tpu_bo's summary, or the asks in flight when stopped;
the process's first run also pays TensorFlow's start, a few seconds).
Each epoch is recorded as (compute, wall seconds since the method's start, val accuracy, best so
far); ``--plot`` draws the best so far against compute, every seed faint and the median bold.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import pathlib
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

from bench.common import default_out, fmt, peak_rss_mib, quiet, write_results
from bench.scheduler_figures import (  # noqa: F401 - tests read them here too
    best_at,
    best_by_wall,
    censored_median,
    median_curve,
    resummarise,
    run_figures,
    summarise,
    time_to_target,
    truncate,
    with_best,
)
from bench.scheduler_peers import SPACE, BudgetSpent, Curve, run_kerastuner, run_optuna
from tpu_bo.report.observers import Observer

METHODS = ("fifo", "median", "asha", "hyperband", "pbt", "kerastuner", "optuna")
PRUNE = {"fifo": "none", "median": "median", "asha": "asha", "hyperband": "hyperband"}
RECORD_FIELDS = ("compute", "wall_seconds", "val_accuracy", "best_so_far")


class Unavailable(Exception):
    """The method cannot run with this tpu_bo (``pbt`` before ``Config.scheduler`` exists)."""


class PackMeter(Observer):
    """Charges a tpu_bo study its computed slot-epochs, and stops it at the budget.

    A pack epoch begins when ``on_progress``'s step starts over: ``width`` computed slot-epochs,
    of which the trials running at its start are useful (as ``StudyResult`` counts them). Each
    ``on_epoch`` is recorded at the compute of its whole pack epoch. Once the budget is spent,
    ``BudgetSpent`` is raised at the pack epoch's last ``on_epoch`` unless the study ends there
    by itself, else when a trial starts or the next pack epoch begins.
    """

    def __init__(self, curve: Curve, width: int, epochs: int, budget: int) -> None:
        self.curve, self.width, self.epochs, self.budget = curve, width, epochs, budget
        self.computed = self.useful = self.expected = self.seen = self.trials = 0
        self.running: dict[int, int] = {}  # trial number -> its epochs so far
        self.last_step: int | None = None
        self.study: Any = None

    def on_study_start(self, study: Any) -> None:
        self.study = study

    def on_pack(self, width: int) -> None:
        self.width = width  # the ramp's packs widen as the study goes on

    def on_trial_start(self, trial: Any) -> None:
        self._stop_if_spent()
        self.running[trial.number] = 0
        self.trials += 1

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        self.running.pop(record.number, None)

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        if self.last_step is None or step <= self.last_step:
            self._stop_if_spent()
            self.computed += self.width
            self.expected, self.seen = len(self.running), 0
            self.useful += len(self.running)
        self.last_step = step

    def on_epoch(self, trial: Any, metrics: Any) -> None:
        self.running[trial.number] = self.running.get(trial.number, 0) + 1
        self.seen += 1
        self.curve.add(self.computed, metrics["val_accuracy"])
        last = all(n >= self.epochs for n in self.running.values())
        if self.seen == self.expected and not (last and self.study.remaining == 0):
            self._stop_if_spent()

    def _stop_if_spent(self) -> None:
        if self.computed >= self.budget:
            raise BudgetSpent


def tpu_bo_fields(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields of one tpu_bo method's study."""
    exact = method in ("fifo", "pbt")  # full-length trials: the budget holds this many
    k = args.population if method == "pbt" or args.k == "auto" else int(args.k)
    total = max(2, args.budget // args.epochs if exact else args.budget + k)
    init = min(args.init_points, total - 1)
    space = [f"{n}:{'log' if log else 'float'}:{lo}:{hi}" for n, (lo, hi, log) in SPACE.items()]
    width = args.population if method == "pbt" else args.k  # a population has a fixed size
    width = width if width == "auto" else int(width)
    fields = dict(model="mnist_cnn", epochs=args.epochs, parallel_trials=width, seed=seed)
    fields.update(ramp=not args.no_ramp)
    fields.update(init_points=init, n_iter=total - init, sampler=args.sampler, space=space)
    fields.update(dataset=args.dataset, train_split=args.train_split, eval_split=args.eval_split)
    fields.update(accelerator="cpu", batch_size=args.batch_size, test_split="")
    fields.update(min_epochs=1, reduction_factor=3, prune_after=args.prune_after)
    if args.dataset != "digits":
        fields.update(data_dir=args.data_dir, download=False)
    if method == "pbt":
        fields.update(
            scheduler="pbt", pbt_interval=args.pbt_interval, pbt_quantile=0.25, pbt_resample=0.25
        )
    else:
        fields.update(prune=PRUNE[method])
    return fields


def run_tpu_bo(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One seed of a tpu_bo method: its epochs and slot-epochs."""
    from tpu_bo import run_study
    from tpu_bo.config import Config

    curve, result = Curve(), None
    try:
        config = Config(**tpu_bo_fields(method, seed, args))
    except TypeError as e:  # a field this tpu_bo does not have (yet)
        raise Unavailable(f"Config has no field for it ({e})") from e
    meter = PackMeter(curve, config.trials_per_pack, args.epochs, args.budget)
    with tempfile.TemporaryDirectory() as tmp, quiet(), contextlib.suppress(BudgetSpent):
        result = run_study(config, output_dir=tmp, observers=[meter])
    return {
        "events": curve.events,
        "wall_seconds_total": curve.elapsed(),
        "utilization": meter.useful / meter.computed if meter.computed else None,
        "computed_slot_epochs": meter.computed,
        "useful_slot_epochs": meter.useful,
        "study_utilization": None if result is None else result.utilization,
        "traces": None if result is None else result.traces,
        "trials": meter.trials,  # started
    }


def run_method(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One seed of ``method``: its figures and records (see the module docstring)."""
    # The earlier runs' garbage (models, programs, datasets) goes now, outside any run's clock:
    # collected later, it cost the run it fell in up to 30 s.
    gc.collect()
    if method in ("kerastuner", "optuna"):
        peer = run_kerastuner if method == "kerastuner" else run_optuna
        run = {**peer(seed, args), "utilization": 1.0}
    else:
        run = run_tpu_bo(method, seed, args)
    records = with_best(run.pop("events"))
    figures = run_figures(records, args.budget, args.target)
    return {"seed": seed, **figures, **run, "records": records}


def run_all(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every method of ``--methods``, seed after seed, in this process."""
    results: dict[str, dict[str, Any]] = {}
    for method in [m for m in args.methods.split(",") if m]:
        runs: list[dict[str, Any]] = []
        try:
            for seed in range(args.seeds):
                runs.append(r := run_method(method, seed, args))
                best = fmt(r["best_at_budget"], ".4f")
                wall = r["wall_seconds_total"]
                print(f"{method} seed {seed}: best {best}, {wall:.1f} s", flush=True)
        except Unavailable as e:
            print(f"{method}: unavailable: {e}", flush=True)
            results[method] = {"available": False, "reason": str(e)}
            continue
        results[method] = {"available": True, "summary": summarise(runs), "runs": runs}
    return results


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """The medians, and the best accuracy at equal wall time: by the time the quickest method
    (by its median) spent the budget."""
    ran = {m: e for m, e in results.items() if e["available"]}
    walls = [e["summary"]["wall_seconds"] for e in ran.values() if e["summary"]["wall_seconds"]]
    equal = min(walls, default=0.0)
    print(
        f"\nbudget {args.budget} tower-epochs (tpu_bo: computed slot-epochs), target val "
        f"accuracy {args.target}, medians over {args.seeds} seed(s); peers train one model "
        f"at a time (utilization 1.0)\n{'method':<11} {'best val':>9} {'compute to target':>18} "
        f"{'s to target':>12} {'reached':>8} {'util':>6} {'wall s':>8} "
        f"{f'best by {equal:.0f} s':>14}"
    )
    for method, entry in results.items():
        if not entry["available"]:
            print(f"{method:<11} unavailable: {entry['reason']}")
            continue
        s, n = entry["summary"], len(entry["runs"])
        by_wall = best_by_wall(entry["runs"], equal)
        print(
            f"{method:<11} {fmt(s['best_at_budget'], '.4f'):>9} "
            f"{fmt(s['compute_to_target'], '.0f'):>18} {fmt(s['wall_to_target'], '.1f'):>12} "
            f"{s['reached_target']:>6}/{n} {fmt(s['utilization'], '.3f'):>6} "
            f"{fmt(s['wall_seconds'], '.1f'):>8} {fmt(by_wall, '.4f'):>14}"
        )


def write_plot(path: str, results: dict[str, dict[str, Any]], budget: int) -> None:
    """Best so far against compute: every seed faint, the median over seeds bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def nan(values: Sequence[float | None]) -> list[float]:
        return [math.nan if v is None else v for v in values]

    fig, ax = plt.subplots(figsize=(8, 5))
    grid = list(range(1, budget + 1))
    available = [(m, e) for m, e in results.items() if e["available"]]
    for i, (method, entry) in enumerate(available):
        curves = [[best_at(run["records"], c) for c in grid] for run in entry["runs"]]
        for curve in curves:
            ax.step(grid, nan(curve), where="post", color=f"C{i}", alpha=0.25, lw=0.8)
        ax.step(grid, nan(median_curve(curves)), where="post", color=f"C{i}", lw=2, label=method)
    ax.set(xlabel="compute (tower-epochs; tpu_bo: computed slot-epochs)")
    ax.set(ylabel="best validation accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--methods", default=",".join(METHODS), help="comma list, run in this order")
    add("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    add("--budget", type=int, default=32, help="tower-epochs per method and seed")
    add("--epochs", type=int, default=8, help="epochs of a full-length trial")
    add("--target", type=float, default=0.97, help="val accuracy for the time to target")
    add("--k", default="4", help="tpu_bo's trials per pack: a number, or auto (measured, ramped)")
    add("--population", type=int, default=4, help="PBT's population (with --k=auto too)")
    add("--no_ramp", action="store_true", help="with --k=auto: every pack K wide from the start")
    add("--at_budget", type=int, default=0, help="with --from_json: the figures at this budget")
    add("--init_points", type=int, default=4)
    add("--pbt_interval", type=int, default=2, help="PBT: epochs between exploit steps")
    add("--prune_after", type=int, default=4, help="trials finished before median prunes")
    add("--sampler", default="bayes_opt", help="tpu_bo's sampler")
    add("--dataset", default="mnist")
    add("--data_dir", default=os.path.join("..", "shared", "tfds"))
    add("--train_split", default="train[:10%]")
    add("--eval_split", default="train[90%:]")
    add("--batch_size", type=int, default=128)
    add("--quick", action="store_true", help="digits, 1 seed, budget 8, 2 epochs")
    add("--out", default="", help="default bench/results/schedulers[_quick].json")
    add("--from_json", default="", help="print a written JSON's tables for --target; run nothing")
    add("--plot", default="", help="PNG or 'none'; default next to the JSON (--quick: tmp)")
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.train_split, args.batch_size = "digits", "train[:90%]", 64
        args.seeds, args.budget, args.epochs, args.target = 1, 8, 2, 0.9
        args.pbt_interval = 1  # an exploit step within 2 epochs
    if not args.plot and args.quick and not args.out:  # not among bench/results' figures
        args.plot = os.path.join(tempfile.gettempdir(), "schedulers_quick.png")
    args.out = args.out or default_out("schedulers", quick=args.quick)
    args.plot = args.plot or str(pathlib.Path(args.out).with_suffix(".png"))
    if args.k != "auto" and (not args.k.isdigit() or args.budget % int(args.k)):
        parser.error("--budget must be a multiple of --k (tpu_bo is charged K per pack epoch)")
    return args


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Keras on the peers' tf.data input ("shuffle=True ... ignored") and on KerasTuner's
    # continued trials, whose checkpoint restores the weights but not the optimizer's slots.
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    args = parse_args()
    if args.from_json:  # the figures of a finished run, for another --target
        payload = json.loads(pathlib.Path(args.from_json).read_text())
        args.budget, args.seeds = args.at_budget or payload["budget"], payload["seeds"]
        print_table(resummarise(payload["methods"], args.budget, args.target), args)
        return
    started = time.perf_counter()
    results = run_all(args)
    print_table(results, args)
    if args.plot != "none":
        write_plot(args.plot, results, args.budget)
    payload = {"benchmark": "schedulers", **vars(args), "record_fields": RECORD_FIELDS}
    payload.update(
        workload=f"{args.dataset} {args.train_split}, scored on {args.eval_split}",
        compute_unit="tower-epochs (tpu_bo: computed slot-epochs, idle slots included)",
        space={n: list(v) for n, v in SPACE.items()},
        methods=results,
        total_seconds=time.perf_counter() - started,
        peak_rss_mib=peak_rss_mib(),
    )
    out = write_results(args.out, payload)
    plot = "" if args.plot == "none" else f" and {args.plot}"
    print(f"{time.perf_counter() - started:.0f} s; wrote {out}{plot}")


if __name__ == "__main__":
    main()
