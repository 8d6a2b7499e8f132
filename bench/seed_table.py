r"""The blog post's study, run by tpu_bo, next to the post's own figures.

  python -m bench.seed_table                       # full MNIST, 20 trials (~2 min/trial here)
  python -m bench.seed_table --train_fraction=0.1  # train[:5400] (= train[:9%]), ~5 min here
  python -m bench.seed_table --quick               # train_fraction 0.01, 4 trials (CI)

The post's study: the seed CNN (``mnist_cnn``), one epoch per trial, ``dropout_2`` in
[0.1, 0.5], ``learning_rate`` in [1e-4, 1e-2] (tpu_bo searches it on a log scale; the post
searched it linearly) and ``dense_units`` in {128, 256, 384} (structural: one program per
width), ``init_points=10`` random trials and ``n_iter=10`` guided ones, through
``tpu_bo.run_study`` on the real MNIST in ``--data_dir``. Trials train on ``train[:90%]``,
are scored on ``train[90%:]`` (6,000 images, which no trial trains on), and the best trial is
scored once on ``test`` (10,000 images).

``--train_fraction=F`` shortens the study by training on the first ``round(54000 * F)``
images of the training split, ``train[:N]`` (F = 1 is the full ``train[:90%]``; F = 0.1 is
``train[:5400]``, the same images as ``train[:9%]``). Validation and test sets stay whole, so
the scores remain comparable, only lower because each trial sees fewer images. ``--quick`` is
F = 0.01 (540 images) with 2 random and 2 guided trials.

Reported: the best validation accuracy, the test accuracy of the best trial as tpu_bo
selects it (``--select_best``, default ``posterior``; ``result.test_metrics``), how many
trials it took for the validation accuracy to first reach 0.989 (or "never"), whether the
best was a random start (trials are numbered from 0, as Optuna numbers them), how many guided
trials beat the best random start and how many guided trials landed on a learning-rate bound
(within 1% of the log range), on a dropout bound (within 1% of its range) or on either, next
to the post's figures: 0.989 after 4 trials (judged on 640 test images), its best a random
starting point, none of its 10 guided steps better, most of them on the learning-rate bounds.

``--repeat_best=N`` reruns the selected candidate to N runs with new seeds after the budget
(tpu_bo's ``--repeat_best``): the spread of those runs is the objective's seed-to-seed noise,
reported with them. Repeats are left out of the counts above.

tpu_bo's console is silenced; ``bench.common.TrialLog``, an observer, prints a line per
finished trial as progress.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from typing import Any

from bench.common import TrialLog, quiet, write_results

TRAIN_IMAGES = 54_000  # train[:90%]
THRESHOLD = 0.989
SPACE = [
    "dropout_2:float:0.1:0.5",
    "learning_rate:log:1e-4:1e-2",
    "dense_units:choice:128,256,384",
]
LR_BOUNDS = (1e-4, 1e-2)
DROPOUT_BOUNDS = (0.1, 0.5)
POST = {
    "best_accuracy": 0.989,
    "judged_on": "640 test images",
    "trials_to_reach_0.989": 4,
    "best_is_random_start": True,
    "guided_better_than_best_random": 0,
    "guided_trials": 10,
    "guided_on_lr_bound": "most",
}
POST_ROWS = ["0.989 (640 test images)", "-", "4", "True", "0 of 10", "most of 10"]


def train_split(fraction: float) -> str:
    if fraction >= 1:
        return "train[:90%]"
    return f"train[:{max(1, round(TRAIN_IMAGES * fraction))}]"


def on_lr_bound(lr: float) -> bool:
    lo, hi = (math.log10(b) for b in LR_BOUNDS)
    x = math.log10(lr)
    return min(x - lo, hi - x) <= 0.01 * (hi - lo)


def on_dropout_bound(dropout: float) -> bool:
    lo, hi = DROPOUT_BOUNDS
    return min(dropout - lo, hi - dropout) <= 0.01 * (hi - lo)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_fraction", type=float, default=1.0)
    parser.add_argument("--init_points", type=int, default=10)
    parser.add_argument("--n_iter", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "tfds"))
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument(
        "--select_best", default="posterior", help="tpu_bo's --select_best (posterior|observed)"
    )
    parser.add_argument(
        "--repeat_best",
        type=int,
        default=1,
        help="tpu_bo's --repeat_best: N runs of the chosen candidate, whose spread measures the "
        "objective's seed-to-seed noise",
    )
    parser.add_argument(
        "--quick", action="store_true", help="train_fraction 0.01, 2 + 2 trials, 2 runs of the best"
    )
    parser.add_argument("--out", default="", help="default bench/results/seed_table_<tag>.json")
    args = parser.parse_args()
    if args.quick:
        args.train_fraction, args.init_points, args.n_iter = 0.01, 2, 2
        args.repeat_best = max(args.repeat_best, 2)
    tag = "full" if args.train_fraction >= 1 else f"f{args.train_fraction:g}"
    tag += f"_seed{args.seed}" if args.seed else ""
    args.out = args.out or f"bench/results/seed_table_{'quick' if args.quick else tag}.json"
    return args


def run(args: argparse.Namespace, split: str) -> tuple[Any, float]:
    """The study through ``run_study``, its console silenced; returns it and its wall time."""
    from tpu_bo import run_study

    log = TrialLog()  # the real stdout, before quiet() replaces it
    with tempfile.TemporaryDirectory() as tmp, quiet():
        started = time.perf_counter()
        result = run_study(
            dataset="mnist",
            data_dir=args.data_dir,
            download=False,
            train_split=split,
            eval_split="train[90%:]",
            test_split="test",
            model="mnist_cnn",
            space=SPACE,
            epochs=1,
            init_points=args.init_points,
            n_iter=args.n_iter,
            seed=args.seed,
            select_best=args.select_best,
            repeat_best=args.repeat_best,
            jit_compile=args.jit_compile,
            accelerator="cpu",
            output_dir=tmp,
            observers=[log],
        )
        return result, time.perf_counter() - started


def figures(result: Any, wall: float, init_points: int) -> dict[str, Any]:
    """What the table reports, from the study's ``TrialRecord``s."""
    records = sorted(result.trials, key=lambda r: r.number)
    repeats = [r for r in records if r.repeat_of is not None]
    records = [r for r in records if r.repeat_of is None]
    ok = [r for r in records if r.status.value == "ok"]
    reached = next((r.number for r in ok if r.target >= THRESHOLD), None)
    random = [r for r in ok if r.source == "random"] or ok[:init_points]
    guided = [r for r in ok if r not in random]
    best_random = max((r.target for r in random), default=-math.inf)
    best = next(r for r in result.trials if r.number == result.best_trial)
    observed = max(ok, key=lambda r: r.target)
    test = result.test_metrics or {}
    spread = [r.target for r in result.trials if r.target is not None and r.params == best.params]
    return {
        "best_val_accuracy": result.best_target,
        "best_trial": result.best_trial,
        "best_params": result.best_params,
        "test_accuracy_of_best": test.get("accuracy"),
        "test_examples": test.get("examples"),
        "trials_to_reach_0.989": None if reached is None else reached + 1,
        "best_is_random_start": best.number in {r.number for r in random}
        or best.repeat_of in {r.number for r in random},
        "best_observed_trial": observed.number,
        "best_observed_val_accuracy": observed.target,
        "guided_better_than_best_random": sum(r.target > best_random for r in guided),
        "guided_trials": len(guided),
        "guided_on_lr_bound": sum(on_lr_bound(r.params["learning_rate"]) for r in guided),
        "guided_on_dropout_bound": sum(on_dropout_bound(r.params["dropout_2"]) for r in guided),
        "guided_on_any_bound": sum(
            on_lr_bound(r.params["learning_rate"]) or on_dropout_bound(r.params["dropout_2"])
            for r in guided
        ),
        "repeats": len(repeats),
        "best_runs_val_accuracy": spread,
        "best_runs_std": statistics.stdev(spread) if len(spread) > 1 else None,
        "traces": result.traces,
        "wall_seconds": wall,
        "median_trial_seconds": statistics.median(r.seconds for r in records),
    }


def print_table(f: dict[str, Any], split: str) -> None:
    guided = f["guided_trials"]
    rows = [
        ("best validation accuracy", f"{f['best_val_accuracy']:.4f} (6,000 val images)"),
        (
            "test accuracy of the best trial",
            f"{f['test_accuracy_of_best']:.4f} ({f['test_examples']} test images)",
        ),
        ("trials to reach 0.989", str(f["trials_to_reach_0.989"] or "never")),
        (
            "best trial is a random start",
            f"{f['best_is_random_start']} (trial {f['best_trial']})",
        ),
        (
            "guided trials beating the best random",
            f"{f['guided_better_than_best_random']} of {guided}",
        ),
        ("guided trials on a learning-rate bound", f"{f['guided_on_lr_bound']} of {guided}"),
    ]
    extra = [
        ("guided trials on a dropout bound", f"{f['guided_on_dropout_bound']} of {guided}"),
        ("guided trials on any bound", f"{f['guided_on_any_bound']} of {guided}"),
        (
            "best observed trial",
            f"trial {f['best_observed_trial']} ({f['best_observed_val_accuracy']:.4f})",
        ),
    ]
    if f["best_runs_std"] is not None:
        runs = ", ".join(f"{v:.4f}" for v in f["best_runs_val_accuracy"])
        extra.append(("runs of the selected point", f"{runs}: std {f['best_runs_std']:.4f}"))
    print(f"\n{'':<40} {'tpu_bo (' + split + ')':<28} {'the post (full MNIST)'}")
    for (name, ours), theirs in zip(rows, POST_ROWS, strict=True):
        print(f"{name:<40} {ours:<28} {theirs}")
    for name, ours in extra:
        print(f"{name:<40} {ours}")
    print(
        f"wall {f['wall_seconds']:.0f} s, median trial {f['median_trial_seconds']:.1f} s, "
        f"{f['traces']} traces"
    )


def main() -> None:
    args = parse_args()
    split = train_split(args.train_fraction)
    total = args.init_points + args.n_iter
    print(f"tpu_bo: {total} trials of MNIST {split}, 1 epoch each...", flush=True)
    result, wall = run(args, split)
    found = figures(result, wall, args.init_points)
    print_table(found, split)
    keys = ("status", "target", "params", "source", "seconds", "repeat_of")
    out = write_results(
        args.out,
        {
            "benchmark": "seed_table",
            "quick": args.quick,
            "train_fraction": args.train_fraction,
            "train_split": split,
            "eval_split": "train[90%:]",
            "test_split": "test",
            "init_points": args.init_points,
            "n_iter": args.n_iter,
            "seed": args.seed,
            "select_best": args.select_best,
            "repeat_best": args.repeat_best,
            "jit_compile": args.jit_compile,
            "tpu_bo": found,
            "post": POST,
            "trials": [
                {"trial": r.number, **{k: r.to_dict()[k] for k in keys}}
                for r in sorted(result.trials, key=lambda r: r.number)
            ],
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
