r"""How fast does the suggestion engine find known optima, and how good is what it recommends?
(No TensorFlow involved.)

  python -m bench.optimizer_quality            # 10 seeds, 40 evaluations, 10 problems (~1 h)
  python -m bench.optimizer_quality --variants # plus the variants behind the defaults
  python -m bench.optimizer_quality --quick    # 2 seeds, 10 evaluations, 7 problems (CI, 45 s)
  python -m bench.optimizer_quality --methods tpu_bo,optuna_bayes_opt  # tpu_bo's engine only
  python -m bench.optimizer_quality --problems hartmann6,hartmann6_n03

Functions with known minima, each as a tpu_bo search space (``bench/problems.py``):

* ``branin``: x1 in [-5, 10], x2 in [0, 15]; minimum 0.397887.
* ``hartmann6``: six floats in [0, 1]; minimum -3.32237.
* ``log_branin``: Branin reached through the kinds a hyperparameter space has: x1 in [-5, 0]
  comes from a log-scale ``lr`` in [1e-4, 1] (x1 = -5 + 5 * (log10(lr) + 4) / 4, so the
  optimum sits near lr = 3e-3, as learning rates do), x2 is an ``int`` in [0, 15], and a
  ``choice`` of ``scale`` in {0.5, 1, 2} multiplies the result (0.5 is right). Its minimum over
  that domain is found by brute force.
* ``accuracy_like``: what a study of validation accuracy looks like: scores between about 0.9
  and 0.985 with seeded evaluation noise (standard deviation 0.0015), over a log learning rate,
  a dropout rate and a width choice.
* ``lr_cliff``: a learning-rate landscape with the traps real ones have: accuracy climbs with
  the (log) learning rate up to a cliff at 0.05, where the network dies (chance accuracy, 0.1),
  and above 1 the loss turns NaN (a failed trial; plain bayes_opt, which cannot take a NaN,
  is given the chance accuracy a user's code would see). Noise as in ``accuracy_like``.
* Noisier copies, the same functions and minima: ``accuracy_like_n003`` and ``_n006`` (noise
  0.003 and 0.006: a one-epoch score's seed-to-seed spread), ``lr_cliff_n004`` (0.004),
  ``hartmann6_n01`` and ``_n03`` (0.1 and 0.3, on a function spanning about 3.3).

Methods, each with the same budget, seeds and noise draws:

* ``tpu_bo``: tpu_bo's Suggester with its defaults (``init_points`` random, then the ``auto``
  acquisition under a fitted observation noise, on coordinates scaled to [0, 1]: expected
  improvement with xi = 0 over the best posterior mean while the fitted noise is under 0.5% of
  the scores' variance, UCB with kappa 2.576 above it; since issue 27 an ARD kernel with
  priors on warped scores, see ``tpu_bo.search.kernel``).
* ``tpu_bo_observed``: the same runs as ``tpu_bo`` (no extra runs), recommended by their best
  observed score instead of the posterior rule: the rule's own contribution.
* ``tpu_bo_exact``: ``Suggester(noise=False, unit=False, acquisition="ei")``, tpu_bo before
  it modelled noise: the interpolating process on raw coordinates with plain expected
  improvement, recommended by its best observed score.
* ``random``: random search over the same space (log-uniform for log parameters).
* ``bayes_opt``: plain ``BayesianOptimization.maximize`` as a user would call it: linear
  bounds (a log parameter becomes a linear range), ints and choices as bayes_opt 3 types,
  its default UCB acquisition.
* Optuna's samplers, as a tpu_bo study runs them, each driven by a plain
  ``optuna.create_study(direction="minimize", sampler=tpu_bo.search.make_sampler(...))`` with
  ``study.ask(tpu_bo.search.sampler.distributions(space))`` and ``study.tell`` (a NaN is told as a
  failed trial), ``init_points`` and the seed as for the others: ``optuna_tpe`` (TPESampler),
  ``optuna_gp`` (GPSampler; it needs PyTorch and is skipped with a note without ``torch``, and
  in ``--quick``, where it would double the time); and, only through ``--methods``,
  ``optuna_bayes_opt`` (``sampler="bayes_opt"``: the same engine as ``tpu_bo``, the Suggester,
  behind Optuna's sampler interface) and ``optuna_random`` (RandomSampler).

``--variants`` adds variants of tpu_bo's engine that the defaults were chosen against, each
recommended by the posterior rule as ``tpu_bo`` is: ``tpu_bo_before`` (the default before
issue 27: one length scale, no amplitude, no warping), ``tpu_bo_nowarp``, ``tpu_bo_iso`` (one
length scale, warped), ``tpu_bo_logei`` (log expected improvement instead of ``auto``),
``tpu_bo_fit_failures`` (failures' penalties in the hyperparameter fit), ``tpu_bo_xi001``
(xi = 0.01 in standard deviations of the scores), ``tpu_bo_raw_xi`` (xi = 0.01 in raw target
units, as bayes_opt applies it) and ``tpu_bo_ucb`` (UCB, kappa 2.576).

**Regret of the recommended point.** After c = 10, 20 and 40 evaluations each method
recommends one of its evaluated points, and the regret is that point's *noise-free* value minus
the minimum. ``tpu_bo`` (and the variants) recommend by the posterior rule of
:func:`tpu_bo.search.recommend.recommend`: among the 5 best observed scores of the first c, the best
posterior mean of the Suggester as it stood after exactly c observations. Every other method
recommends its best observed score (what its user gets). A failed trial is never recommended.

Reported: per problem, the median over seeds of that regret and each method's ratio to
``tpu_bo`` (above 1: tpu_bo is ahead); then a summary: the method with the lowest median regret
at 20 and 40 evaluations, on how many seeds ``tpu_bo`` beats ``tpu_bo_exact`` at 40, and the
median noise standard deviation ``tpu_bo`` fitted at the last checkpoint next to the true one.
A full run took 58 min on two busy cores (load 4-8), 32 min expected on idle ones: 95% of the
CPU goes to ``bayes_opt`` and ``optuna_gp``; ``optuna_bayes_opt`` would add about 5%.
The JSON keeps every seed's regret (``regret_by_seed``, to compare two runs seed by seed) and
every tpu_bo run's fitted noise (``noise_std_by_seed``).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import multiprocessing
import statistics
import time
from typing import Any

from bench.common import default_out, write_results
from bench.problems import PROBLEMS, QUICK_PROBLEMS, set_minima
from bench.quality_methods import DERIVED, INIT_POINTS, VARIANTS, Run, regret, run_one

METHODS = (
    "tpu_bo",
    "tpu_bo_observed",
    "tpu_bo_exact",
    "random",
    "bayes_opt",
    "optuna_tpe",
    "optuna_gp",
)
EXTRA = ("optuna_bayes_opt", "optuna_random")  # through --methods only
ALL_METHODS = (*METHODS, *EXTRA, *VARIANTS)
# Rough cost of a run, to start the slowest first: no process idles at the end.
COST = {"random": 0, "optuna_random": 0, "optuna_tpe": 1, "bayes_opt": 4, "optuna_gp": 4}


def _one_thread() -> None:
    # One BLAS thread per worker: the Gaussian-process fits would otherwise oversubscribe.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _job(args: tuple[str, str, int, int, tuple[int, ...]]) -> tuple[str, str, int, Run, float]:
    problem, method, seed, budget, checkpoints = args
    start = time.perf_counter()
    run = run_one(problem, method, seed, budget, checkpoints)
    return problem, method, seed, run, time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
        "--problems",
        default="",
        help="comma-separated subset of the problems (default: all; --quick: "
        + ",".join(QUICK_PROBLEMS)
        + ")",
    )
    parser.add_argument(
        "--out", default="", help="default bench/results/optimizer_quality[_quick].json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget = 2, 10
    return args


def methods_to_run(args: argparse.Namespace) -> tuple[str, ...]:
    """The methods to report, in table order (the derived ones included)."""
    methods = METHODS + (tuple(VARIANTS) if args.variants else ())
    if args.methods:
        wanted = {"tpu_bo", *args.methods.split(",")}
        unknown = wanted - set(ALL_METHODS)
        if unknown:
            raise SystemExit(f"unknown methods: {', '.join(sorted(unknown))}")
        methods = tuple(m for m in ALL_METHODS if m in wanted)
    if "optuna_gp" in methods and importlib.util.find_spec("torch") is None:
        print("note: optuna_gp skipped: Optuna's GPSampler needs PyTorch (torch not installed)")
        methods = tuple(m for m in methods if m != "optuna_gp")
    elif "optuna_gp" in methods and args.quick:  # it alone costs as much as the rest together
        print("note: optuna_gp skipped in --quick (slow); run without --quick for it")
        methods = tuple(m for m in methods if m != "optuna_gp")
    return methods


def problems_to_run(args: argparse.Namespace) -> tuple[str, ...]:
    if not args.problems:
        return QUICK_PROBLEMS if args.quick else tuple(PROBLEMS)
    wanted = args.problems.split(",")
    unknown = set(wanted) - set(PROBLEMS)
    if unknown:
        raise SystemExit(f"unknown problems: {', '.join(sorted(unknown))}")
    return tuple(p for p in PROBLEMS if p in wanted)


def run_all(jobs: list[tuple[str, str, int, int, tuple[int, ...]]], processes: int) -> list[Any]:
    """Every job, on a pool of ``processes`` (in this process for 1), the slowest first."""
    order = sorted(
        jobs, key=lambda j: (COST.get(j[1], 2), j[0].startswith("hartmann6")), reverse=True
    )
    if processes == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return [_job(job) for job in order]
    with multiprocessing.Pool(processes, initializer=_one_thread) as pool:
        return list(pool.imap_unordered(_job, order, chunksize=1))


def runs_by_method(results: list[Any]) -> dict[str, dict[str, list[Run]]]:
    """Runs by problem and method, in seed order, with the derived rows (``DERIVED``): the
    source's runs recommended by their best observed score."""
    table: dict[str, dict[str, list[Run]]] = {}
    for problem, method, _seed, run, _ in sorted(results, key=lambda r: r[:3]):
        table.setdefault(problem, {}).setdefault(method, []).append(run)
    for by_method in table.values():
        for derived, source in DERIVED.items():
            if source in by_method:
                by_method[derived] = [Run(seen=r.seen) for r in by_method[source]]
    return table


def seed_regrets(table: dict[str, Any], checkpoints: list[int]) -> dict[str, Any]:
    """Regret by problem, method and checkpoint, one per seed in seed order (for paired
    comparisons of two runs)."""
    return {
        problem: {
            method: {
                str(c): [regret(r, PROBLEMS[problem]["minimum"], c) for r in runs]
                for c in checkpoints
            }
            for method, runs in by_method.items()
        }
        for problem, by_method in table.items()
    }


def medians(by_seed: dict[str, Any]) -> dict[str, Any]:
    """The median over seeds of every list in ``seed_regrets``'s shape."""
    return {
        p: {m: {c: statistics.median(v) for c, v in r.items()} for m, r in d.items()}
        for p, d in by_seed.items()
    }


def print_tables(regrets: dict[str, Any], methods: tuple[str, ...], seeds: int) -> None:
    width = 18
    checkpoints = list(next(iter(regrets.values()))["tpu_bo"])
    print(
        f"median regret of the recommended point over {seeds} seeds (lower is better); "
        "ratio = method / tpu_bo"
    )
    for problem, by_method in regrets.items():
        spec = PROBLEMS[problem]
        print(f"\n{problem} (minimum {spec['minimum']:.6g}, noise {spec.get('noise', 0.0):g})")
        print("method".ljust(width) + "".join(f"{'@' + c:>10}{'ratio':>8}" for c in checkpoints))
        for method in methods:
            row = method.ljust(width)
            for c in checkpoints:
                value, ours = by_method[method][c], by_method["tpu_bo"][c]
                ratio = value / ours if ours > 0 else math.inf
                row += f"{value:>10.4g}{ratio:>8.2f}"
            print(row)


def winners(regrets: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Per problem and checkpoint, the method(s) with the lowest median regret."""
    out: dict[str, dict[str, list[str]]] = {}
    for problem, by_method in regrets.items():
        for c in next(iter(by_method.values())):
            best = min(r[c] for r in by_method.values())
            out.setdefault(problem, {})[c] = [m for m, r in by_method.items() if r[c] == best]
    return out


def paired(by_seed: dict[str, Any], a: str, b: str, c: str) -> dict[str, tuple[int, int]]:
    """Per problem, on how many seeds ``a``'s regret at ``c`` is below ``b``'s, and above."""
    out = {}
    for problem, by_method in by_seed.items():
        if a in by_method and b in by_method:
            pairs = list(zip(by_method[a][c], by_method[b][c], strict=True))
            out[problem] = (sum(x < y for x, y in pairs), sum(x > y for x, y in pairs))
    return out


def noise_fits(table: dict[str, Any]) -> dict[str, list[float]]:
    """The noise standard deviation each tpu_bo run fitted at its last checkpoint."""
    return {
        p: [r.noise_std for r in d["tpu_bo"] if r.noise_std is not None]
        for p, d in table.items()
        if "tpu_bo" in d
    }


def print_summary(regrets: dict[str, Any], by_seed: dict[str, Any], fits: dict[str, Any]) -> None:
    best = winners(regrets)
    checkpoints = list(next(iter(by_seed.values()))["tpu_bo"])
    last, shown = checkpoints[-1], [c for c in ("20", "40") if c in checkpoints] or checkpoints
    versus = paired(by_seed, "tpu_bo", "tpu_bo_exact", last)
    print(
        f"\nsummary: lowest median regret; tpu_bo vs tpu_bo_exact @{last} (seeds where each is "
        "lower); tpu_bo's fitted noise sd (median) / the true one"
    )
    names = {p: {c: "=".join(best[p][c]) for c in shown} for p in regrets}
    width = 2 + max(len(n) for by_c in names.values() for n in by_c.values())
    header = "problem".ljust(20) + "".join(f"{'best @' + c:<{width}}" for c in shown)
    print(header + f"{'tpu_bo:exact':>13}{'noise fit / true':>22}")
    for problem in regrets:
        row = problem.ljust(20) + "".join(f"{names[problem][c]:<{width}}" for c in shown)
        score = ":".join(map(str, versus[problem])) if problem in versus else "-"
        row += f"{score:>13}"
        fit = statistics.median(fits[problem]) if fits.get(problem) else math.nan
        row += f"{fit:>12.3g} / {PROBLEMS[problem].get('noise', 0.0):<8g}"
        print(row)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    checkpoints = [c for c in (10, 20, 40) if c <= args.budget] or [args.budget]
    set_minima()
    methods, problems = methods_to_run(args), problems_to_run(args)
    running = [m for m in methods if m not in DERIVED]
    jobs = [
        (p, m, s, args.budget, tuple(checkpoints))
        for p in problems
        for m in running
        for s in range(args.seeds)
    ]
    started = time.perf_counter()
    results = run_all(jobs, args.processes)
    table = runs_by_method(results)
    by_seed = seed_regrets({p: table[p] for p in problems}, checkpoints)
    regrets, fits = medians(by_seed), noise_fits(table)
    print_tables(regrets, methods, args.seeds)
    print_summary(regrets, by_seed, fits)
    total = time.perf_counter() - started
    print(f"\n{len(jobs)} runs in {total:.0f} s on {args.processes} processes")
    seconds: dict[str, float] = {}
    for _, method, _, _, spent in results:
        seconds[method] = seconds.get(method, 0.0) + spent
    out = write_results(
        args.out or default_out("optimizer_quality", quick=args.quick),
        {
            "benchmark": "optimizer_quality",
            "seeds": args.seeds,
            "budget": args.budget,
            "init_points": INIT_POINTS,
            "methods": list(methods),
            "problems": {p: {"noise": PROBLEMS[p].get("noise", 0.0)} for p in problems},
            "recommendation": "tpu_bo and variants: posterior rule; others: best observed",
            "median_regret": regrets,
            "regret_by_seed": by_seed,
            "best_method": winners(regrets),
            "noise_std_by_seed": fits,
            "median_noise_std": {p: statistics.median(v) for p, v in fits.items() if v},
            "cpu_seconds_by_method": seconds,
            "wall_seconds": total,
        },
        tensorflow=False,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
