"""The methods of ``bench/optimizer_quality.py``: one run of a method on a problem, and the point
it recommends after each checkpoint's count of evaluations (see that module's docstring).

:func:`run_one` returns a :class:`Run`: every (observed, noise-free) value in evaluation order,
and for the methods recommended by the posterior rule the index recommended at each
checkpoint, plus the fitted observation noise. The others recommend the best observed point
(:func:`pick`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.problems import PROBLEMS
from tpu_bo.search.recommend import recommend
from tpu_bo.search.space import SearchSpace
from tpu_bo.search.suggester import Suggester

INIT_POINTS = 5

SAMPLERS = {  # method -> tpu_bo.config.Config.sampler
    "optuna_bayes_opt": "bayes_opt",
    "optuna_tpe": "tpe",
    "optuna_random": "random",
    "optuna_gp": "gp",
}
# Suggester methods -> their arguments; the noise-aware ones are recommended by the posterior.
SUGGESTERS: dict[str, dict[str, Any]] = {
    "tpu_bo": {},
    # tpu_bo before the noise work: interpolating, raw coordinates, expected improvement.
    "tpu_bo_exact": {"noise": False, "unit": False, "acquisition": "ei"},
}
VARIANTS = {
    # tpu_bo before issue 27: one length scale, no amplitude, no output warping.
    "tpu_bo_before": {"ard": False, "warp": False},
    "tpu_bo_nowarp": {"warp": False},
    "tpu_bo_iso": {"ard": False},
    "tpu_bo_logei": {"acquisition": "logei"},
    "tpu_bo_fit_failures": {"fit_failures": True},
    "tpu_bo_xi001": {"xi": 0.01},
    "tpu_bo_raw_xi": {"xi": 0.01, "scale_xi": False},
    "tpu_bo_ucb": {"acquisition": "ucb"},
}
# Rows computed from another method's runs: tpu_bo's runs, recommended by best observed score.
DERIVED = {"tpu_bo_observed": "tpu_bo"}


@dataclasses.dataclass
class Run:
    """What one run saw and recommended.

    Attributes:
      seen: (observed, noise-free) objective values in evaluation order, minimised; a failed
        trial is observed as ``inf`` (never recommended).
      picks: Checkpoint -> index of the recommended observation (the posterior rule); empty for
        the methods recommended by the best observed score.
      noise_std: The Suggester's fitted noise standard deviation at the last checkpoint.
    """

    seen: list[tuple[float, float]]
    picks: dict[int, int] = dataclasses.field(default_factory=dict)
    noise_std: float | None = None


def pick(run: Run, upto: int) -> int:
    """The index recommended after ``upto`` evaluations: the posterior rule's if the run has
    one, else the best observed score's (the earlier among equals)."""
    if upto in run.picks:
        return run.picks[upto]
    return min(range(min(upto, len(run.seen))), key=lambda i: (run.seen[i][0], i))


def regret(run: Run, minimum: float, upto: int) -> float:
    """Noise-free value of the point recommended after ``upto`` evaluations, minus the minimum."""
    return run.seen[pick(run, upto)][1] - minimum


def posterior_pick(suggester: Suggester, params: Sequence[dict], scores: Sequence[float]) -> int:
    """:func:`tpu_bo.search.recommend.recommend` over the finite ``scores`` (a failure is never
    recommended), with the Suggester's posterior means at their ``params``."""
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        return 0
    try:
        means, _ = suggester.posterior([params[i] for i in finite])
    except ValueError:  # nothing registered yet: the best observed one
        return min(finite, key=lambda i: scores[i])
    return finite[recommend([scores[i] for i in finite], list(means), maximize=False)]


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

    from tpu_bo.config import Config
    from tpu_bo.search.sampler import distributions
    from tpu_bo.study.study import sampler_for

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # not a note per trial
    # Config's defaults are tpu_bo's: acquisition, xi, kappa, no domain reduction.
    config = Config(sampler=sampler, init_points=INIT_POINTS, seed=seed, objective_mode="min")
    chosen = sampler_for(config, space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning
        study = optuna.create_study(direction="minimize", sampler=chosen)
        wanted = distributions(space)
        for _ in range(budget):
            trial = study.ask(wanted)
            score = evaluate(trial.params)
            if math.isnan(score):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, score)


def run_suggester(
    space: SearchSpace,
    method: str,
    evaluate: Callable,
    run: Run,
    seed: int,
    budget: int,
    checkpoints,
) -> None:
    """tpu_bo's Suggester (or random points from it), point by point; a noise-aware one also
    recommends by the posterior rule at every checkpoint, from its state at that count (into
    ``run``, whose ``seen`` ``evaluate`` fills)."""
    kwargs = {**SUGGESTERS.get(method, {}), **VARIANTS.get(method, {})}
    suggester = Suggester(space, seed=seed, maximize=False, **kwargs)
    guided = method != "random"
    by_posterior = guided and kwargs.get("noise", True)
    params: list[dict[str, Any]] = []
    for i in range(budget):
        v = suggester.suggest(random=not guided or i < INIT_POINTS)
        score = evaluate(v)
        params.append(v)
        if guided:
            failed = math.isnan(score)
            suggester.observe(v, None if failed else score, status="failed" if failed else "ok")
        if by_posterior and i + 1 in checkpoints:
            scores = [observed for observed, _ in run.seen]
            run.picks[i + 1] = posterior_pick(suggester, params, scores)
            run.noise_std = suggester.noise_std


def run_one(problem: str, method: str, seed: int, budget: int, checkpoints=()) -> Run:
    """One method's run on one problem (the noise drawn from ``1000 + seed``: every method of a
    seed sees the same draws, in evaluation order)."""
    spec = PROBLEMS[problem]
    f: Callable[[dict[str, Any]], float] = spec["f"]
    noise = np.random.default_rng(1000 + seed)
    run = Run(seen=[])

    def evaluate(v: dict[str, Any]) -> float:
        true = f(v)
        if math.isnan(true):  # a failed trial
            run.seen.append((math.inf, spec["failed_value"]))
            return math.nan
        run.seen.append((true + spec.get("noise", 0.0) * noise.standard_normal(), true))
        return run.seen[-1][0]

    space = SearchSpace.parse(spec["space"])
    if method == "bayes_opt":
        run_bayes_opt(spec, evaluate, seed, budget)
    elif method in SAMPLERS:
        run_optuna(space, SAMPLERS[method], evaluate, seed, budget)
    else:
        run_suggester(space, method, evaluate, run, seed, budget, checkpoints)
    return run
