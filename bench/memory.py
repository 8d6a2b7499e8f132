r"""Memory over a long study: RSS after every trial, 50 trials in one process.

  python -m bench.memory                       # MNIST train[:1%], 50 trials, four methods
  python -m bench.memory --methods=tpu_bo,blog # tpu_bo and the blog recipe only
  python -m bench.memory --quick               # tpu_bo and blog, 8 trials, slope over 3..8 (CI)

Each method runs the whole study in one fresh subprocess, the same way as in
``bench/overhead.py`` (see its docstring for the three methods): the seed CNN, one epoch per
trial on a tiny workload so that 50 trials fit in minutes (``train[:1%]``: 600 images, scored
on ``train[99%:]``: 600 images), ``dropout_2`` in [0.1, 0.5] and ``learning_rate`` in
[1e-4, 1e-2] (tpu_bo on a log scale; the blog recipe, as the blog, on a linear one), 10 random
trials then guided ones, the same seed.

``tpu_bo`` is ``tpu_bo.run_study``; its RSS is sampled as each trial ends, by
``bench.common.RssMeter``, an observer passed to ``run_study``. The ``blog`` recipe builds,
compiles, fits and evaluates a fresh Keras model per trial inside ``bayes_opt``'s ``maximize``
and never calls ``keras.backend.clear_session()``; its RSS is sampled at the end of each trial.
``blog_clear`` is the same recipe with ``keras.backend.clear_session()`` at the start of every
trial, the usual fix a user would reach for. ``kerastuner`` is KerasTuner's ``BayesianOptimization``
tuner as in ``bench/overhead.py``, sampled at the end of each trial's ``fit``. RSS is
``psutil.Process().memory_info().rss``.

Reported per method: the RSS after 1, 5, 10, 25 and 50 trials (``@N``: after the N-th trial to
end; tpu_bo numbers its trials from 0, so ``@1`` is after its trial 0), the growth from the 5th
trial to the last, and the slope in MiB per trial, a least-squares line through the 5th..50th
(the first trials warm caches and allocators, so they are left out); the ratio is method /
tpu_bo. A slope near zero means a study can run for as long as it likes; a positive one is a
leak that ends a long study.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from bench import overhead
from bench.common import default_out, fmt, ratio, write_results


def slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ys against xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def summarise(raw: dict[str, Any], first: int) -> dict[str, Any]:
    """RSS after every trial, in the order they ended; ``first``: the 1-based count of trials
    from which the slope is fitted."""
    rss = [t["rss_mib"] for t in raw["trials"]]
    trials = list(range(1, len(rss) + 1))  # counts of trials ended
    fit = [(t, r) for t, r in zip(trials, rss, strict=True) if t >= first and r is not None]
    return {
        "method": raw["method"],
        "trials": len(rss),
        "wall_seconds": raw["wall_seconds"],
        "traces": raw["traces"],
        "rss_start_mib": raw["rss_start_mib"],
        "rss_after_trial_mib": rss,
        "slope_from_trial": first,
        "slope_mib_per_trial": slope([t for t, _ in fit], [r for _, r in fit]),
        "growth_mib": fit[-1][1] - fit[0][1],
        "peak_rss_mib": raw["peak_rss_mib"],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--init_points", type=int, default=10)
    parser.add_argument("--slope_from", type=int, default=5, help="first trial (1-based) fitted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_split", default="train[:1%]")
    parser.add_argument("--eval_split", default="train[99%:]")
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "tfds"))
    parser.add_argument(
        "--methods", default="tpu_bo,blog,blog_clear,kerastuner", help="tpu_bo must come first"
    )
    parser.add_argument("--jit_compile", action="store_true", help="XLA for every method")
    parser.add_argument(
        "--parallel_trials", default="auto", help="tpu_bo's (auto, its default, or a number)"
    )
    parser.add_argument("--quick", action="store_true", help="8 trials, slope over trials 3..8")
    parser.add_argument("--out", default="", help="default bench/results/memory[_quick].json")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_result", default="", help=argparse.SUPPRESS)
    # The workload's shape, which bench.overhead's children read: MNIST, 1 epoch, batch 128.
    parser.add_argument("--dataset", default="mnist", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batch_size", type=int, default=overhead.BATCH, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args._module = "bench.memory"
    if args.quick and not args._child:
        args.trials, args.init_points, args.slope_from = 8, 3, 3
        args.methods = "tpu_bo,blog"
    return args


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = rows[0]
    marks = [t for t in (1, 5, 10, 25, 50) if t <= args.trials]
    if args.trials not in marks:
        marks.append(args.trials)
    print(
        f"\nRSS (MiB) after N trials, {args.trials} trials of MNIST {args.train_split}; "
        f"slope = least squares over trials {args.slope_from}..{args.trials}; "
        f"ratio = method / {base['method']}"
    )
    print(
        f"{'method':<11}"
        + "".join(f"{'@' + str(t):>8}" for t in marks)
        + f"{'growth':>9}{'MiB/trial':>11}{'ratio':>8}{'peak':>7}{'wall s':>8}{'traces':>7}"
    )
    for r in rows:
        print(
            f"{r['method']:<11}"
            + "".join(f"{r['rss_after_trial_mib'][t - 1]:>8.0f}" for t in marks)
            + f"{r['growth_mib']:>9.1f}{r['slope_mib_per_trial']:>11.3f}"
            + f"{fmt(r['slope_ratio_vs_tpu_bo'], '.1f'):>8}"
            + f"{r['peak_rss_mib']:>7.0f}{r['wall_seconds']:>8.1f}{r['traces']:>7}"
        )


def main() -> None:
    args = parse_args()
    if args._child:
        overhead.child(args)
        return
    started = time.perf_counter()
    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        print(f"{method}: {args.trials} trials in one subprocess...", flush=True)
        raw = overhead.spawn(method, args, overhead.child_flags(args))
        rows.append(summarise(raw, args.slope_from))
        print(f"  {rows[-1]['wall_seconds']:.1f} s", flush=True)
    base = rows[0]
    for r in rows:
        r["slope_ratio_vs_tpu_bo"] = ratio(r["slope_mib_per_trial"], base["slope_mib_per_trial"])
        r["growth_ratio_vs_tpu_bo"] = ratio(r["growth_mib"], base["growth_mib"])
    print_table(rows, args)
    total = time.perf_counter() - started
    out = write_results(
        args.out or default_out("memory", quick=args.quick),
        {"benchmark": "memory", **overhead.settings(args), "rows": rows, "total_seconds": total},
    )
    print(f"{total:.0f} s in all; wrote {out}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
