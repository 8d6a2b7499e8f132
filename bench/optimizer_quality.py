r"""How fast does the suggestion engine find known optima?  (No TensorFlow involved.)

  python -m bench.optimizer_quality            # 10 seeds, 40 evaluations (about 10 min)
  python -m bench.optimizer_quality --variants # plus the variants behind the defaults
  python -m bench.optimizer_quality --quick    # 2 seeds, 12 evaluations (CI, seconds)

Functions with known minima, each as a tpu_bo search space:

* ``branin``: x1 in [-5, 10], x2 in [0, 15]; minimum 0.397887.
* ``hartmann6``: six floats in [0, 1]; minimum -3.32237.
* ``log_branin``: Branin reached through the kinds a hyperparameter space has: x1 in [-5, 0]
  comes from a log-scale ``lr`` in [1e-4, 1] (x1 = -5 + 5 * (log10(lr) + 4) / 4, so the
  optimum sits near lr = 3e-3, as learning rates do), x2 is an ``int`` in [0, 15], and a
  ``choice`` of ``scale`` in {0.5, 1, 2} multiplies the result (0.5 is right). Its minimum over
  that domain is found by brute force.
* ``accuracy_like``: what a study of validation accuracy looks like: scores between about 0.9
  and 0.985 with seeded evaluation noise (standard deviation 0.0015), over a log learning rate,
  a dropout rate and a width choice. Regret is measured on the noise-free value of the point
  with the best *observed* score, as a user would pick it.
* ``lr_cliff``: a learning-rate landscape with the traps real ones have: accuracy climbs with
  the (log) learning rate up to a cliff at 0.05, where the network dies (chance accuracy, 0.1),
  and above 1 the loss turns NaN (a failed trial; plain bayes_opt, which cannot take a NaN,
  is given the chance accuracy a user's code would see). Noise as in ``accuracy_like``.

Methods, each with the same budget and seeds:

* ``tpu_bo``: tpu_bo's Suggester with its defaults (``init_points`` random, then expected
  improvement with xi = 0).
* ``random``: random search over the same space (log-uniform for log parameters).
* ``bayes_opt``: plain ``BayesianOptimization.maximize`` as a user would call it: linear
  bounds (a log parameter becomes a linear range), ints and choices as bayes_opt 3 types,
  its default UCB acquisition.

``--variants`` adds variants of tpu_bo's engine that the defaults were chosen against:
``tpu_bo_xi001`` (xi = 0.01 in standard deviations of the scores), ``tpu_bo_raw_xi``
(xi = 0.01 in raw target units, as bayes_opt applies it) and ``tpu_bo_ucb`` (UCB, kappa 2.576).

Reported: the median over seeds of the simple regret (best found minus the minimum) after
10, 20 and 40 evaluations, and each method's ratio to ``tpu_bo`` (above 1: tpu_bo is ahead).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import default_out, write_results
from tpu_bo.space import SearchSpace
from tpu_bo.suggest import Suggester

INIT_POINTS = 5


def branin(x1: float, x2: float) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def hartmann6(*x: float) -> float:
    v = np.asarray(x)
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (v - _H_P) ** 2, axis=1))))


def _log_branin(lr: float, x2: int, scale: float) -> float:
    x1 = -5 + 5 * (math.log10(lr) + 4) / 4
    return scale * branin(x1, x2)


def _log_branin_minimum() -> float:
    x1 = np.linspace(-5, 0, 100_001)
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    best = min(
        float(np.min(a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * np.cos(x1) + s))
        for x2 in range(16)
    )
    return 0.5 * best


def _accuracy(lr: float, dropout: float, units: int) -> float:
    """A smooth stand-in for validation accuracy: best 0.985 at lr=2e-3, dropout 0.25, 256."""
    return (
        0.985
        - 0.006 * (math.log10(lr) + 2.7) ** 2
        - 0.03 * (dropout - 0.25) ** 2
        - 0.002 * (units != 256)
    )


def _cliff(lr: float, dropout: float) -> float:
    """Accuracy rising with log(lr) to a cliff at 0.05 (dead above it, NaN above 1)."""
    if lr > 1.0:
        return math.nan
    if lr > 0.05:
        return 0.1
    rise = 1.0 / (1.0 + math.exp(-3.0 * (math.log10(lr) + 3.3)))
    return 0.1 + 0.885 * rise - 0.03 * (dropout - 0.25) ** 2


PROBLEMS: dict[str, dict[str, Any]] = {
    "branin": {
        "space": ["x1:float:-5:10", "x2:float:0:15"],
        "plain": {"x1": (-5, 10), "x2": (0, 15)},
        "f": lambda v: branin(v["x1"], v["x2"]),
        "minimum": 0.397887,
    },
    "hartmann6": {
        "space": [f"x{i}:float:0:1" for i in range(6)],
        "plain": {f"x{i}": (0, 1) for i in range(6)},
        "f": lambda v: hartmann6(*(v[f"x{i}"] for i in range(6))),
        "minimum": -3.32237,
    },
    "log_branin": {
        "space": ["lr:log:1e-4:1", "x2:int:0:15", "scale:choice:0.5,1,2"],
        "plain": {"lr": (1e-4, 1), "x2": (0, 15, int), "scale": [0.5, 1, 2]},
        "f": lambda v: _log_branin(v["lr"], int(v["x2"]), float(v["scale"])),
        "minimum": None,  # computed on first use
    },
    "accuracy_like": {
        "space": ["lr:log:1e-4:1e-1", "dropout:float:0:0.6", "units:choice:128,256,384"],
        "plain": {"lr": (1e-4, 1e-1), "dropout": (0, 0.6), "units": [128, 256, 384]},
        # Minimised as an error rate, so every problem reads the same way.
        "f": lambda v: 1.0 - _accuracy(v["lr"], v["dropout"], int(v["units"])),
        "noise": 0.0015,
        "minimum": 1.0 - 0.985,
    },
    "lr_cliff": {
        "space": ["lr:log:1e-4:10", "dropout:float:0:0.6"],
        "plain": {"lr": (1e-4, 10), "dropout": (0, 0.6)},
        "f": lambda v: 1.0 - _cliff(v["lr"], v["dropout"]),
        "noise": 0.0015,
        "failed_value": 0.9,  # a diverged run: chance accuracy
        "minimum": 1.0 - _cliff(0.05, 0.25),
    },
}
METHODS = ("tpu_bo", "random", "bayes_opt")
VARIANTS = {
    "tpu_bo_xi001": {"xi": 0.01},
    "tpu_bo_raw_xi": {"xi": 0.01, "scale_xi": False},
    "tpu_bo_ucb": {"acquisition": "ucb"},
}


def run_one(problem: str, method: str, seed: int, budget: int) -> list[tuple[float, float]]:
    """(observed, noise-free) objective values one method sees, in order (minimised)."""
    spec = PROBLEMS[problem]
    f: Callable[[dict[str, Any]], float] = spec["f"]
    noise = np.random.default_rng(1000 + seed)
    seen: list[tuple[float, float]] = []

    def evaluate(v: dict[str, Any]) -> float:
        true = f(v)
        if math.isnan(true):  # a failed trial
            seen.append((math.inf, spec["failed_value"]))
            return math.nan
        seen.append((true + spec.get("noise", 0.0) * noise.standard_normal(), true))
        return seen[-1][0]

    if method == "bayes_opt":
        from bayes_opt import BayesianOptimization

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Non-float parameters")

            def target(**v: Any) -> float:
                value = evaluate(v)
                return -(spec["failed_value"] if math.isnan(value) else value)

            opt = BayesianOptimization(
                f=target,
                pbounds=spec["plain"],
                random_state=seed,
                verbose=0,
                allow_duplicate_points=True,
            )
            opt.maximize(init_points=INIT_POINTS, n_iter=budget - INIT_POINTS)
        return seen
    space = SearchSpace.parse(spec["space"])
    suggester = Suggester(space, seed=seed, maximize=False, **VARIANTS.get(method, {}))
    for i in range(budget):
        v = suggester.suggest(random=method == "random" or i < INIT_POINTS)
        score = evaluate(v)
        if method != "random":
            failed = math.isnan(score)
            suggester.observe(v, None if failed else score, status="failed" if failed else "ok")
    return seen


def simple_regret(seen: list[tuple[float, float]], minimum: float, upto: int) -> float:
    """Noise-free value of the best *observed* point among the first ``upto``, minus the minimum."""
    observed, true = min(seen[:upto], key=lambda pair: pair[0])
    return true - minimum


def _one_thread() -> None:
    # One BLAS thread per worker: the Gaussian-process fits would otherwise oversubscribe.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _job(args: tuple[str, str, int, int]) -> tuple[str, str, int, list[Any], float]:
    problem, method, seed, budget = args
    start = time.perf_counter()
    values = run_one(problem, method, seed, budget)
    return problem, method, seed, values, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 12 evaluations")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also run the tpu_bo variants the defaults were chosen against",
    )
    parser.add_argument(
        "--out", default="", help="default bench/results/optimizer_quality[_quick].json"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.budget = 2, 12
    checkpoints = [c for c in (10, 20, 40) if c <= args.budget] or [args.budget]
    PROBLEMS["log_branin"]["minimum"] = _log_branin_minimum()
    methods = METHODS + (tuple(VARIANTS) if args.variants else ())
    jobs = [(p, m, s, args.budget) for p in PROBLEMS for m in methods for s in range(args.seeds)]
    started = time.perf_counter()
    with multiprocessing.Pool(args.processes, initializer=_one_thread) as pool:
        results = pool.map(_job, jobs)
    regrets: dict[str, dict[str, dict[int, float]]] = {}
    seconds: dict[str, float] = {}
    for problem in PROBLEMS:
        regrets[problem] = {}
        minimum = PROBLEMS[problem]["minimum"]
        for method in methods:
            runs = [r for r in results if r[0] == problem and r[1] == method]
            seconds[method] = seconds.get(method, 0.0) + sum(r[4] for r in runs)
            regrets[problem][method] = {
                c: statistics.median(simple_regret(r[3], minimum, c) for r in runs)
                for c in checkpoints
            }
    width = 14
    print(
        f"median simple regret over {args.seeds} seeds (lower is better); ratio = method / tpu_bo"
    )
    for problem in PROBLEMS:
        print(f"\n{problem} (minimum {PROBLEMS[problem]['minimum']:.6g})")
        print(
            "method".ljust(width) + "".join(f"{'@' + str(c):>10}{'ratio':>8}" for c in checkpoints)
        )
        for method in methods:
            row = method.ljust(width)
            for c in checkpoints:
                value = regrets[problem][method][c]
                ours = regrets[problem]["tpu_bo"][c]
                ratio = value / ours if ours > 0 else math.inf
                row += f"{value:>10.4g}{ratio:>8.2f}"
            print(row)
    total = time.perf_counter() - started
    print(f"\n{len(jobs)} runs in {total:.0f} s on {args.processes} processes")
    out = write_results(
        args.out or default_out("optimizer_quality", quick=args.quick),
        {
            "benchmark": "optimizer_quality",
            "seeds": args.seeds,
            "budget": args.budget,
            "init_points": INIT_POINTS,
            "median_regret": {
                p: {m: {str(c): v for c, v in r.items()} for m, r in d.items()}
                for p, d in regrets.items()
            },
            "cpu_seconds_by_method": seconds,
            "wall_seconds": total,
        },
        tensorflow=False,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
