"""The suggestion engine on its own (no TensorFlow): signs, failures, bounds, transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tpu_bo.search.space import SearchSpace
from tpu_bo.search.suggester import Suggester

SPACE = SearchSpace.parse(["lr:log:1e-5:1e-1", "units:choice:16,32", "p:float:0:1"])


def registered(suggester):
    return [float(t) for t in suggester.bo.space.target]


def test_suggestions_stay_in_the_space_and_improve_on_a_simple_function():
    def score(v):  # best at lr=1e-3, units=32, p=0.3
        return -((math.log10(v["lr"]) + 3) ** 2) - (v["units"] != 32) - (v["p"] - 0.3) ** 2

    s = Suggester(SPACE, seed=0)
    for i in range(20):
        v = s.suggest(random=i < 5)
        assert all(SPACE[n].contains(x) for n, x in v.items()), v
        s.observe(v, score(v))
    best = max(registered(s))
    assert best > -0.1, best


def test_minimising_registers_negated_scores():
    s = Suggester(SPACE, seed=0, maximize=False)
    v = s.suggest()
    s.observe(v, 0.25)
    assert registered(s) == [-0.25]


def test_failed_trials_wait_for_two_successes_then_fall_below_the_worst():
    s = Suggester(SPACE, seed=1)
    a, b, c, d = (s.suggest(random=True) for _ in range(4))
    s.observe(a, None, status="failed")
    assert registered(s) == []  # nothing to compare a failure with yet
    s.observe(b, 0.9)
    assert registered(s) == [0.9]
    s.observe(c, 0.7)
    # Held back while one success alone sets the scale; then one spread below the worst.
    assert sorted(registered(s)) == pytest.approx([0.5, 0.7, 0.9])
    s.observe(d, 0.2, status="pruned")  # pruned scores do not move the failure penalty
    s.observe(a, float("nan"))  # a NaN score counts as a failure
    assert sorted(registered(s)) == pytest.approx([0.2, 0.5, 0.5, 0.7, 0.9])


def test_points_outside_the_space_are_refused():
    s = Suggester(SPACE, seed=0)
    assert not s.observe({"lr": 1.0, "units": 16, "p": 0.5}, 0.5)
    assert not s.observe({"lr": 1e-3, "units": 64, "p": 0.5}, 0.5)
    assert registered(s) == []


@pytest.mark.parametrize("acquisition", ["ei", "poi", "ucb"])
def test_every_acquisition_suggests(acquisition):
    s = Suggester(SPACE, seed=0, acquisition=acquisition)
    for i in range(4):
        v = s.suggest(random=i < 2)
        s.observe(v, -abs(math.log10(v["lr"]) + 3))


def test_domain_reduction_narrows_the_bounds():
    space = SearchSpace.parse(["x:float:-5:5", "y:log:1e-4:1"])
    s = Suggester(space, seed=0, domain_reduction=True)
    before = s.bo.space.bounds.copy()
    for i in range(10):
        v = s.suggest(random=i < 3)
        s.observe(v, -((v["x"] - 1) ** 2) - (math.log10(v["y"]) + 2) ** 2)
    after = s.bo.space.bounds
    assert (after[:, 1] - after[:, 0] < before[:, 1] - before[:, 0]).all()


def test_a_failed_region_is_predicted_worse_than_every_success():
    space = SearchSpace.parse(["x:float:0:10"])
    s = Suggester(space, seed=0)
    for x, score in [(1.0, 0.5), (2.0, 0.6), (3.0, 0.55)]:
        s.observe({"x": x}, score)
    for x in (8.0, 9.0, 10.0):
        s.observe({"x": x}, None, status="failed")
    assert sorted(registered(s))[:3] == [0.4, 0.4, 0.4]  # worst 0.5 minus the spread 0.1
    s.bo._gp.fit(s.bo.space.params, s.bo.space.target)
    mean = s.bo._gp.predict([[8.5], [9.5]])
    assert (mean < 0.5).all()
    for _ in range(3):
        x = s.suggest()["x"]
        s.observe({"x": x}, 0.6 - 0.01 * abs(x - 2))
        assert x < 8.0


def test_a_pending_point_is_avoided_and_works_with_choices():
    """A running trial is registered at the best score so far (ConstantLiar's "max" lie)."""

    def score(v):
        return -((math.log10(v["lr"]) + 3) ** 2) - (v["units"] != 32) - (v["p"] - 0.3) ** 2

    s = Suggester(SPACE, seed=0)
    for _ in range(4):
        v = s.suggest(random=True)
        s.observe(v, score(v))
    proposed = s.suggest()
    s.pending(proposed)
    assert s.observed == 5 and registered(s)[-1] == max(registered(s)[:4])
    assert s.suggest() != proposed
    fresh = Suggester(SPACE, seed=0)
    fresh.pending(proposed)  # nothing scored yet: no lie to tell
    assert fresh.observed == 0


def _fed(n, *, seed=0, memo=None, space=SPACE, noise=0.0, exact=False, **kw):
    """A Suggester with ``n`` random observations of a smooth score, plus ``noise`` (its
    standard deviation); ``exact``: a Suggester that interpolates the scores."""
    s = Suggester(space, seed=seed, fit_seed=7, memo=memo, noise=not exact, **kw)
    points = Suggester(space, seed=123)
    draws = np.random.default_rng(5)
    for _ in range(n):
        v = points.suggest(random=True)
        s.observe(v, _smooth(v) + noise * draws.standard_normal())
    return s


def _smooth(v):
    return -sum((math.log10(x) + 3) ** 2 if k == "lr" else 0.1 * x for k, x in v.items())


def test_the_refit_schedule_refits_at_every_count_then_every_tenth_more():
    from tpu_bo.search.suggester import refit_point

    assert [refit_point(n) for n in (1, 5, 12, 13, 14, 15, 16, 100, 200)] == [
        1, 5, 12, 12, 14, 14, 16, 97, 192,
    ]  # fmt: skip
    points = {refit_point(n) for n in range(1, 201)}
    assert len(points) < 45  # 200 observations, at most 44 fits (bayes_opt: 200)


def test_fits_follow_the_schedule_and_are_reused_in_between():
    s = _fed(12)
    for _ in range(13):  # from 12 to 24 observations
        v = s.suggest()
        s.observe(v, -abs(math.log10(v["lr"]) + 3))
    # Refits at 12, 14, 16, 18, 20, 22 (the schedule), not at each of the 13 suggestions.
    assert s.work["suggestions"] == 13 and s.work["fits"] == 6
    assert sorted(key[1] for key in s.memo) == [12, 14, 16, 18, 20, 22]


def test_a_cold_memo_proposes_exactly_what_a_warm_one_does():
    memo = {}
    warm = _fed(30, memo=memo)
    warm.suggest()  # the fit at 29 observations is now in the memo
    assert warm.work["fits"] == 1
    again = _fed(30, memo=memo)
    hit = again.suggest()
    assert again.work["fits"] == 0  # reused, not refit
    cold = _fed(30)
    assert cold.suggest() == hit and cold.work["fits"] == 1
    assert cold.memo.keys() == memo.keys()
    assert [list(v) for v in cold.memo.values()] == [list(v) for v in memo.values()]


def test_the_work_of_a_suggestion_is_capped_by_counts(monkeypatch):
    import tpu_bo.search.acquisition as acquisition
    import tpu_bo.search.suggester as suggest

    monkeypatch.setattr(suggest, "FIT_EVALUATIONS", 3)  # a likelihood that would not converge
    s = _fed(40)
    s.suggest()
    # One fit: the default start and FIT_RESTARTS random ones, each cut at 3 evaluations.
    assert s.work["fits"] == 1
    assert s.work["likelihood_evaluations"] == 3 * (1 + suggest.FIT_RESTARTS)
    # The acquisition: one batch of candidates, one batched L-BFGS-B, the discrete passes.
    polish = acquisition.POLISH_EVALUATIONS * (acquisition.STARTS + 1) * (2 + 1)  # 2 continuous
    discrete = acquisition.DISCRETE_PASSES * 2  # units: 16 or 32
    assert (
        s.work["posterior_calls"]
        <= 1 + acquisition.POLISH_EVALUATIONS + acquisition.DISCRETE_PASSES
    )
    assert s.work["posterior_points"] <= acquisition.CANDIDATES + polish + discrete


def test_the_acquisition_reads_the_posterior_sklearn_predicts():
    s = _fed(25, exact=True, acquisition="ei", warp=False)
    s.suggest()
    points = s.bo.space.random_sample(20, random_state=0)
    mean, std = s.bo._gp.predict(points, return_std=True)
    target = s.bo.space.target
    expected = type(s._base)(xi=0.0)
    expected.y_max = target.max()
    # Scaled by the scores' spread: the same argmax, gradients on one scale.
    ours = s._acquisition()(points) * target.std()
    assert ours == pytest.approx(-expected.base_acq(mean, std), rel=1e-6, abs=1e-12)


def test_logei_is_the_log_of_expected_improvement():
    ei, auto = _fed(25, noise=0.3, acquisition="ei"), _fed(25, noise=0.3, acquisition="logei")
    ei.suggest(), auto.suggest()
    points = ei.bo.space.random_sample(200, random_state=0)
    plain, log = -ei._acquisition()(points), -auto._acquisition()(points)
    shown = plain > 1e-12  # where expected improvement itself has not underflowed
    assert shown.sum() > 20 and np.all(np.isfinite(log))
    assert log[shown] == pytest.approx(np.log(plain[shown]), rel=1e-6, abs=1e-9)
    assert np.all(log[~shown] < np.log(1e-12) + 1e-6)  # ordered still, where EI reads 0


def test_with_noise_the_acquisition_is_expected_improvement_over_the_best_posterior_mean():
    s = _fed(25, noise=0.3, acquisition="ei", warp=False)
    s.suggest()
    gp = s.bo._gp
    points = s.bo.space.random_sample(20, random_state=0)
    # The process is conditioned with the noise on its diagonal: sklearn's predict is the
    # objective's posterior (noise excluded).
    mean, latent = gp.predict(points, return_std=True)
    assert s.noise_fraction > 0.01  # the fit saw the noise
    expected = type(s._base)(xi=0.0)
    expected.y_max = gp.predict(s.bo.space.params).max()  # not the luckiest score
    assert expected.y_max < s.bo.space.target.max()
    ours = s._acquisition()(points) * gp._y_train_std
    assert ours == pytest.approx(-expected.base_acq(mean, latent), rel=1e-5, abs=1e-12)


def test_the_fitted_noise_follows_the_scores_noise_and_the_posterior_averages_it():
    exact, interpolating = _fed(30, exact=True), _fed(30, noise=0.3, exact=True)
    smooth, noisy = _fed(30), _fed(30, noise=0.3)
    draw = Suggester(SPACE, seed=9)
    points = [draw.suggest(random=True) for _ in range(10)]
    truth = np.array([_smooth(v) for v in points])
    for s in (exact, smooth, noisy):
        s.posterior(points)
    assert exact.noise_std == 0.0
    assert smooth.noise_std < 0.01 < 0.1 < noisy.noise_std < 1.0, (
        smooth.noise_std,
        noisy.noise_std,
    )
    # Without noise the noise-aware process matches the interpolating one.
    assert smooth.posterior(points)[0] == pytest.approx(exact.posterior(points)[0], abs=0.02)
    # With noise (0.20 fitted for 0.3), the posterior is nearer the truth than an interpolation
    # of the noisy scores, and its error within its own uncertainty.
    mean, std = noisy.posterior(points)
    error = np.abs(mean - truth)
    assert np.all(error < 3 * std), (error, std)
    assert error.mean() < 0.9 * np.abs(interpolating.posterior(points)[0] - truth).mean()


def test_registering_a_point_twice_prints_nothing(capsys):
    s = Suggester(SPACE, seed=0)
    v = s.suggest(random=True)
    s.observe(v, 1.0)
    s.observe(v, 0.9)  # a repeat of the same hyperparameters
    assert len(registered(s)) == 2 and capsys.readouterr().out == ""


def test_a_noisy_function_is_optimised_better_than_random():
    """Hartmann-6 with noise 0.1 (bench/problems.py), a real run of the Suggester against
    random points over fixed seeds: the regret (noise-free) of the point recommended after 30
    evaluations by the posterior rule, as bench.optimizer_quality measures it."""
    import statistics

    from bench.problems import PROBLEMS
    from bench.quality_methods import regret, run_one

    problem, budget, seeds = "hartmann6_n01", 30, range(3)
    minimum = PROBLEMS[problem]["minimum"]
    runs = {
        m: [run_one(problem, m, s, budget, (budget,)) for s in seeds] for m in ("tpu_bo", "random")
    }
    ours, blind = ([regret(r, minimum, budget) for r in runs[m]] for m in ("tpu_bo", "random"))
    assert statistics.median(ours) < 0.5 * statistics.median(blind), (ours, blind)
