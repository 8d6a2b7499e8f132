r"""How fast does the suggestion engine find known optima?  (No TensorFlow involved.)

  python -m bench.optimizer_quality            # 10 seeds, 40 evaluations (about 25 min)
  python -m bench.optimizer_quality --variants # plus the variants behind the defaults
  python -m bench.optimizer_quality --quick    # 2 seeds, 10 evaluations (CI, about a minute)
  python -m bench.optimizer_quality --methods tpu_bo,optuna_bayes_opt  # tpu_bo's engine only

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

Optuna's samplers, the ones a tpu_bo study now runs on, each driven by a plain
``optuna.create_study(direction="minimize", sampler=tpu_bo.sampler.make_sampler(...))`` with
``study.ask(tpu_bo.sampler.distributions(space))`` and ``study.tell`` (a NaN is told as a
failed trial), ``init_points`` and the seed as for the others:

``optuna_bayes_opt`` (``sampler="bayes_opt"``, tpu_bo's default: the Suggester above behind
Optuna's sampler interface), ``optuna_tpe`` (TPESampler), ``optuna_random`` (RandomSampler) and
``optuna_gp`` (GPSampler; it needs PyTorch and is skipped with a note without ``torch``, and
in ``--quick``, where it would double the time).

``--variants`` adds variants of tpu_bo's engine that the defaults were chosen against:
``tpu_bo_xi001`` (xi = 0.01 in standard deviations of the scores), ``tpu_bo_raw_xi``
(xi = 0.01 in raw target units, as bayes_opt applies it) and ``tpu_bo_ucb`` (UCB, kappa 2.576).

Reported: the median over seeds of the simple regret (best found minus the minimum) after
10, 20 and 40 evaluations, and each method's ratio to ``tpu_bo`` (above 1: tpu_bo is ahead).
The JSON also keeps every seed's regret (``regret_by_seed``), to compare two runs seed by seed.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import multiprocessing
import statistics
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import default_out, write_results
from bench.problems import PROBLEMS, log_branin_minimum
from tpu_bo.space import SearchSpace
from tpu_bo.suggest import Suggester

INIT_POINTS = 5


METHODS = ("tpu_bo", "random", "bayes_opt")
SAMPLERS = {  # method -> tpu_bo.config.Config.sampler
    "optuna_bayes_opt": "bayes_opt",
    "optuna_tpe": "tpe",
    "optuna_random": "random",
    "optuna_gp": "gp",
}
VARIANTS = {
    "tpu_bo_xi001": {"xi": 0.01},
    "tpu_bo_raw_xi": {"xi": 0.01, "scale_xi": False},
    "tpu_bo_ucb": {"acquisition": "ucb"},
}


def run_bayes_opt(spec: dict[str, Any], evaluate: Callable, seed: int, budget: int) -> None:
    """Plain ``BayesianOptimization.maximize``, as a user would call it."""
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


def run_optuna(space: SearchSpace, sampler: str, evaluate: Callable, seed: int, budget: int):
    """An Optuna study over ``space`` with tpu_bo's ``make_sampler``, by ask and tell."""
    import optuna

    from tpu_bo.sampler import distributions, make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # not a note per trial
    config = types.SimpleNamespace(
        sampler=sampler,
        init_points=INIT_POINTS,
        seed=seed,
        maximize=False,
        acquisition="ei",
        xi=0.0,
        kappa=2.576,
        domain_reduction=False,
    )  # tpu_bo's defaults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning
        study = optuna.create_study(direction="minimize", sampler=make_sampler(config, space))
        wanted = distributions(space)
        for _ in range(budget):
            trial = study.ask(wanted)
            score = evaluate(trial.params)
            if math.isnan(score):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, score)


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

    space = SearchSpace.parse(spec["space"])
    if method == "bayes_opt":
        run_bayes_opt(spec, evaluate, seed, budget)
        return seen
    if method in SAMPLERS:
        run_optuna(space, SAMPLERS[method], evaluate, seed, budget)
        return seen
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 10 evaluations")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also run the tpu_bo variants the defaults were chosen against",
    )
    parser.add_argument(
        "--methods",
        default="",
        help="comma-separated subset of the methods to run (tpu_bo is always run: the ratios "
        "are to it), e.g. tpu_bo,optuna_bayes_opt to compare a change of the suggestion engine",
    )
    parser.add_argument(
        "--out", default="", help="default bench/results/optimizer_quality[_quick].json"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.budget = 2, 10
    return args


def methods_to_run(args: argparse.Namespace) -> tuple[str, ...]:
    samplers = tuple(SAMPLERS)
    if importlib.util.find_spec("torch") is None:
        print("note: optuna_gp skipped: Optuna's GPSampler needs PyTorch (torch not installed)")
        samplers = tuple(m for m in samplers if m != "optuna_gp")
    elif args.quick:  # it alone costs as much as every other method together
        print("note: optuna_gp skipped in --quick (slow); run without --quick for it")
        samplers = tuple(m for m in samplers if m != "optuna_gp")
    methods = METHODS + samplers + (tuple(VARIANTS) if args.variants else ())
    if args.methods:
        wanted = {"tpu_bo", *args.methods.split(",")}
        unknown = wanted - {*METHODS, *SAMPLERS, *VARIANTS}
        if unknown:
            raise SystemExit(f"unknown methods: {', '.join(sorted(unknown))}")
        methods = tuple(m for m in (*METHODS, *samplers, *VARIANTS) if m in wanted)
    return methods


def run_all(jobs: list[tuple[str, str, int, int]], processes: int) -> list[Any]:
    """Every job on a pool, the slowest kinds first so that no process idles at the end."""
    slow = {"random": 0, "optuna_random": 0, "optuna_tpe": 1, "optuna_gp": 2}
    order = sorted(jobs, key=lambda j: (slow.get(j[1], 3), j[0] == "hartmann6"), reverse=True)
    with multiprocessing.Pool(processes, initializer=_one_thread) as pool:
        return list(pool.imap_unordered(_job, order, chunksize=1))


def median_regrets(
    results: list[Any], methods: tuple[str, ...], checkpoints: list[int]
) -> tuple[dict[str, dict[str, dict[int, float]]], dict[str, float]]:
    """Median regret by problem, method and checkpoint; CPU seconds by method."""
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
    return regrets, seconds


def seed_regrets(results: list[Any], checkpoints: list[int]) -> dict[str, Any]:
    """Regret by problem, method and checkpoint, one per seed in seed order (for paired
    comparisons of two runs)."""
    out: dict[str, Any] = {}
    for problem, method, _seed, values, _ in sorted(results, key=lambda r: r[:3]):
        minimum = PROBLEMS[problem]["minimum"]
        by_checkpoint = out.setdefault(problem, {}).setdefault(method, {})
        for c in checkpoints:
            by_checkpoint.setdefault(str(c), []).append(simple_regret(values, minimum, c))
    return out


def print_tables(regrets: dict[str, Any], methods: tuple[str, ...], seeds: int) -> None:
    width = 17
    checkpoints = list(next(iter(regrets.values()))["tpu_bo"])
    print(f"median simple regret over {seeds} seeds (lower is better); ratio = method / tpu_bo")
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


def main() -> None:
    args = parse_args()
    checkpoints = [c for c in (10, 20, 40) if c <= args.budget] or [args.budget]
    PROBLEMS["log_branin"]["minimum"] = log_branin_minimum()
    methods = methods_to_run(args)
    jobs = [(p, m, s, args.budget) for p in PROBLEMS for m in methods for s in range(args.seeds)]
    started = time.perf_counter()
    results = run_all(jobs, args.processes)
    regrets, seconds = median_regrets(results, methods, checkpoints)
    print_tables(regrets, methods, args.seeds)
    total = time.perf_counter() - started
    print(f"\n{len(jobs)} runs in {total:.0f} s on {args.processes} processes")
    out = write_results(
        args.out or default_out("optimizer_quality", quick=args.quick),
        {
            "benchmark": "optimizer_quality",
            "seeds": args.seeds,
            "budget": args.budget,
            "init_points": INIT_POINTS,
            "methods": list(methods),
            "median_regret": {
                p: {m: {str(c): v for c, v in r.items()} for m, r in d.items()}
                for p, d in regrets.items()
            },
            "regret_by_seed": seed_regrets(results, checkpoints),
            "cpu_seconds_by_method": seconds,
            "wall_seconds": total,
        },
        tensorflow=False,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
