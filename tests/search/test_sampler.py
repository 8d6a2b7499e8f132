"""The samplers and pruners a study can use; bayes_opt's as an Optuna sampler."""

from __future__ import annotations

import importlib.util
import math
import statistics
import types

import optuna
import pytest

from tpu_bo.errors import ConfigError
from tpu_bo.search.sampler import BayesOptSampler, distributions, make_sampler
from tpu_bo.search.space import SearchSpace

SPACE = SearchSpace.from_value(
    {
        "x": ("float", -2.0, 2.0),
        "lr": ("log", 1e-4, 1e-1),
        "n": ("int", 1, 4),
        "act": ("choice", ["relu", "tanh"]),
    }
)


def objective(params):
    return -((params["x"] - 0.7) ** 2) - (math.log10(params["lr"]) + 2) ** 2


def settings(**fields):
    base = dict(
        sampler="bayes_opt", init_points=4, seed=0, maximize=True, acquisition="ei", xi=0.0,
        kappa=2.576, domain_reduction=False, prune="none", prune_after=2, min_epochs=1,
        reduction_factor=3, epochs=4,
    )  # fmt: skip
    return types.SimpleNamespace(**{**base, **fields})


def run(sampler, trials=14):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(trials):
        trial = study.ask(distributions(SPACE))
        assert SPACE.contains(trial.params)
        study.tell(trial, objective(trial.params))
    return study


def test_bayes_opt_guides_after_its_random_start_and_beats_random():
    # Three seeds each (the studies are deterministic; on seed 0 alone random is luckier);
    # bench/optimizer_quality measures many.
    guided = [
        run(BayesOptSampler(SPACE, init_points=4, seed=s, maximize=True), trials=10)
        for s in range(3)
    ]
    random = [run(optuna.samplers.RandomSampler(seed=s), trials=10) for s in range(3)]
    assert statistics.median(t.best_value for t in guided) > statistics.median(
        t.best_value for t in random
    )
    # The first init_points trials are the random ones, the same for the same seed.
    again = run(BayesOptSampler(SPACE, init_points=4, seed=0, maximize=True), trials=4)
    assert [t.params for t in again.trials] == [t.params for t in guided[0].trials[:4]]


def test_a_running_trial_is_a_pending_point_that_the_next_one_avoids():
    sampler = BayesOptSampler(SPACE, init_points=3, seed=0, maximize=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(6):
        t = study.ask(distributions(SPACE))
        study.tell(t, objective(t.params))
    first = study.ask(distributions(SPACE))  # left running
    second = study.ask(distributions(SPACE))
    assert first.params != second.params


def test_pruned_and_failed_trials_are_registered():
    sampler = BayesOptSampler(SPACE, init_points=2, seed=0, maximize=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for value in (0.1, 0.5):
        t = study.ask(distributions(SPACE))
        t.report(value / 2, 1)
        t.report(value, 2)
        study.tell(t, value)
    pruned = study.ask(distributions(SPACE))
    pruned.report(0.2, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    failed = study.ask(distributions(SPACE))
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    from tpu_bo.search.sampler import pruned_estimate, replay
    from tpu_bo.search.suggester import Suggester

    trials = study.get_trials()
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # The median later gain of the completed trials (0.05 and 0.25) is added to 0.2.
    assert pruned_estimate(trials[2], completed, 1.0) == pytest.approx(0.35)
    suggester = Suggester(SPACE, seed=0)
    assert replay(suggester, trials, number=99, maximize=True)
    assert suggester.observed == 4  # two completed, the pruned one, and the failure


@pytest.mark.parametrize("name", ["bayes_opt", "tpe", "random", "gp"])
def test_every_sampler_proposes_points_in_the_space(name):
    if name == "gp" and importlib.util.find_spec("torch") is None:
        with pytest.raises(ConfigError, match="torch==2.13.0") as e:
            make_sampler(name, SPACE, init_points=4, seed=0, maximize=True)
        assert e.value.flag == "sampler"
        return
    run(make_sampler(name, SPACE, init_points=4, seed=0, maximize=True), trials=6)


def test_a_resumed_study_proposes_what_the_uninterrupted_one_does():
    """The sampler's memo of kernel fits only saves work: an empty one proposes the same."""
    wanted = distributions(SPACE)
    warm = BayesOptSampler(SPACE, init_points=3, seed=0, maximize=True)
    study = optuna.create_study(direction="maximize", sampler=warm)
    running = []
    for i in range(30):  # three slots, finishing out of order; two are left running
        running.append(study.ask(wanted))
        if len(running) == 3:
            done = running.pop(i % 3)
            study.tell(done, objective(done.params))
    assert 0 < warm.work["fits"] < warm.work["suggestions"] == 27  # refits skipped
    resumed = optuna.create_study(
        direction="maximize", sampler=BayesOptSampler(SPACE, init_points=3, seed=0, maximize=True)
    )
    resumed.add_trials(study.get_trials())  # the same storage contents, a fresh process
    for _ in range(3):
        a, b = study.ask(wanted), resumed.ask(wanted)
        assert a.params == b.params
        study.tell(a, objective(a.params))
        resumed.tell(b, objective(b.params))
    assert resumed.sampler.work["fits"] > 0  # it refit what the warm sampler reused
