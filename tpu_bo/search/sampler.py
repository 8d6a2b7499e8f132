"""Optuna's samplers for a study, with ``bayes_opt`` as the default (:func:`make_sampler`).

:class:`BayesOptSampler` is an ``optuna.samplers.BaseSampler`` over
:class:`tpu_bo.search.suggester.Suggester`. For every trial it replays the study's finished
trials into a fresh ``bayes_opt`` process and asks it for one point:

* the first ``init_points`` trials are random points (seeded by the trial number);
* completed trials are registered with their target, the best of their epochs;
* pruned trials with their best partial score plus the median gain that completed trials made
  after the same epoch (the bare partial score would call an early, still improving point bad);
* failed trials one spread below the worst success (see :mod:`tpu_bo.search.suggester`);
* trials still running are pending points, registered at the best score so far: the "max"
  lie of ``ConstantLiar``, which pushes the new point away from them.

Replaying from the storage every time makes the sampler stateless, so a resumed or shared
study proposes exactly what it would have proposed without the interruption. The one thing it
keeps between asks is a memo of fitted kernel hyperparameters (:class:`KernelMemo`), which only
saves recomputing them: a fit depends on nothing but its data (a prefix of the finished trials
in trial-number order) and the study's seed, so a fresh process with an empty memo refits and
proposes the same points (see :mod:`tpu_bo.search.suggester`). The trials before the first one still
running are settled: a trial finishing later cannot change them, so a pack's out-of-order
finishes do not keep invalidating the memo.

This module does not import TensorFlow.
"""

from __future__ import annotations

import collections
import importlib.util
import math
import statistics
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from tpu_bo.errors import ConfigError
from tpu_bo.search.space import SearchSpace
from tpu_bo.search.suggester import Suggester

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every parameter of ``space``."""
    out: dict[str, BaseDistribution] = {}
    for p in space.params:
        if p.kind == "choice":
            out[p.name] = CategoricalDistribution(p.choices)
        elif p.kind == "int":
            out[p.name] = IntDistribution(int(p.low), int(p.high))
        else:
            out[p.name] = FloatDistribution(p.low, p.high, log=p.kind == "log")
    return out


class BayesOptSampler(optuna.samplers.BaseSampler):
    """``bayes_opt``'s Gaussian process as an Optuna sampler (see the module docstring).

    Args:
      space: The search space.
      init_points: Trials (by number) that take random points before the GP guides.
      seed: Seeds the random points and the acquisition's optimiser, with the trial number.
      maximize: Whether larger objective values are better.
      **suggester: ``acquisition``, ``xi``, ``kappa``, ``domain_reduction`` for the Suggester.
    """

    def __init__(
        self, space: SearchSpace, *, init_points: int, seed: int, maximize: bool, **suggester: Any
    ) -> None:
        self.space = space
        self.init_points = init_points
        self.seed = seed
        self.maximize = maximize
        self.suggester = suggester
        self._distributions = distributions(space)
        self.memo = KernelMemo()
        self.work: collections.Counter[str] = collections.Counter()  # Suggester.work, summed

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        suggester = Suggester(
            self.space,
            seed=(self.seed * 100_003 + trial.number) % 2**31,
            maximize=self.maximize,
            fit_seed=self.seed,
            memo=self.memo,
            **self.suggester,
        )
        trials = study.get_trials(deepcopy=False)
        random = trial.number < self.init_points
        if not random:
            random = not replay(suggester, trials, trial.number, maximize=self.maximize)
        point = suggester.suggest(random=random)
        self.work.update(suggester.work)
        return {name: _clip(search_space[name], point[name]) for name in search_space}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        # Only for a parameter outside the space (a notebook suggesting its own): random.
        sampler = optuna.samplers.RandomSampler(seed=self.seed * 100_003 + trial.number)
        return sampler.sample_independent(study, trial, param_name, param_distribution)


class KernelMemo(collections.OrderedDict):
    """A sampler's fitted kernel hyperparameters (see :class:`tpu_bo.search.suggester.Suggester`'s
    ``memo``): the newest ``size`` fits."""

    size = 16

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.size:
            self.popitem(last=False)


def replay(
    suggester: Suggester, trials: Sequence[FrozenTrial], number: int, *, maximize: bool
) -> bool:
    """Registers finished trials, then running ones as pending; False if nothing scored.

    The finished trials before the first unfinished one are settled (``Suggester.settle``):
    no trial that finishes later can come before them.
    """
    sign = 1.0 if maximize else -1.0
    done = sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number)
    ok = [t for t in done if t.state == TrialState.COMPLETE and t.intermediate_values]
    first_open = min((t.number for t in trials if t.state not in FINISHED), default=math.inf)
    settled = sum(1 for t in done if t.number < first_open)
    for i, t in enumerate(done):
        if i == settled:
            suggester.settle()
        if t.state == TrialState.COMPLETE and t.value is not None:
            suggester.observe(t.params, t.value)
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            suggester.observe(t.params, pruned_estimate(t, ok, sign), status="pruned")
        else:
            suggester.observe(t.params, None, status="failed")
    if suggester.observed == 0:
        return False
    for t in trials:
        if t.state == TrialState.RUNNING and t.number != number and t.params:
            suggester.pending(t.params)
    return True


def pruned_estimate(trial: FrozenTrial, completed: Sequence[FrozenTrial], sign: float) -> float:
    """A pruned trial's best partial score plus the median later gain of completed trials.

    In natural units (a minimised objective stays positive).
    """
    values = trial.intermediate_values
    epoch = max(values)
    gains = [
        _best(t.intermediate_values, sign)
        - _best({k: v for k, v in t.intermediate_values.items() if k <= epoch}, sign)
        for t in completed
        if max(t.intermediate_values) > epoch and min(t.intermediate_values) <= epoch
    ]
    gain = statistics.median(gains) if gains else 0.0
    return sign * (_best(values, sign) + gain)


def _best(values: dict[int, float], sign: float) -> float:
    """The signed best value (larger is better) among finite ``values``; -inf when none."""
    finite = [sign * v for v in values.values() if math.isfinite(v)]
    return max(finite, default=-math.inf)


def _clip(distribution: BaseDistribution, value: Any) -> Any:
    if isinstance(distribution, FloatDistribution):
        return min(max(float(value), distribution.low), distribution.high)
    if isinstance(distribution, IntDistribution):
        return min(max(int(value), distribution.low), distribution.high)
    return value


def make_sampler(
    name: str,
    space: SearchSpace,
    *,
    init_points: int,
    seed: int,
    maximize: bool,
    acquisition: str = "auto",
    xi: float = 0.0,
    kappa: float = 2.576,
    domain_reduction: bool = False,
) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` (``--sampler``) names: ``bayes_opt`` (:class:`BayesOptSampler`),
    or Optuna's ``tpe``, ``gp`` and ``random``.

    Args:
      name: The sampler.
      space: The search space.
      init_points: Random trials before the model guides (``--init_points``).
      seed: The study's seed.
      maximize: Whether larger objective values are better.
      acquisition: ``bayes_opt``'s acquisition (``--acquisition``), with ``xi``, ``kappa`` and
        ``domain_reduction``.

    Raises:
      ConfigError: naming ``sampler``, for ``gp`` without PyTorch.
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(
            n_startup_trials=init_points, seed=seed, constant_liar=True
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        if importlib.util.find_spec("torch") is None:
            raise ConfigError(
                "sampler",
                "gp is Optuna's GPSampler, which needs PyTorch: pip install torch==2.13.0 "
                "(a CPU build), or pick bayes_opt, tpe or random.",
            )
        return optuna.samplers.GPSampler(n_startup_trials=init_points, seed=seed)
    return BayesOptSampler(
        space,
        init_points=init_points,
        seed=seed,
        maximize=maximize,
        acquisition=acquisition,
        xi=xi,
        kappa=kappa,
        domain_reduction=domain_reduction,
    )
