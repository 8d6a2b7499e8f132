"""bench/optimizer_quality.py: the problems, the recommended point's regret, the summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import optimizer_quality
from bench.problems import PROBLEMS
from bench.quality_methods import Run, pick, posterior_pick, regret, run_one
from tpu_bo.search.recommend import TOP, recommend
from tpu_bo.search.space import SearchSpace
from tpu_bo.search.suggester import Suggester


def test_the_noisy_problems_are_copies_with_more_noise_and_the_originals_are_unchanged():
    assert [PROBLEMS[p].get("noise", 0.0) for p in list(PROBLEMS)[:5]] == [
        0.0,
        0.0,
        0.0,
        0.0015,
        0.0015,
    ]
    for name, base, noise in [
        ("accuracy_like_n003", "accuracy_like", 0.003),
        ("accuracy_like_n006", "accuracy_like", 0.006),
        ("lr_cliff_n004", "lr_cliff", 0.004),
        ("hartmann6_n01", "hartmann6", 0.1),
        ("hartmann6_n03", "hartmann6", 0.3),
    ]:
        spec = PROBLEMS[name]
        assert spec["noise"] == noise
        assert spec["f"] is PROBLEMS[base]["f"] and spec["minimum"] == PROBLEMS[base]["minimum"]


def test_regret_is_the_noise_free_value_of_the_recommended_point():
    run = Run(seen=[(5.0, 4.0), (math.inf, 0.9), (1.0, 3.0), (2.0, 1.5)])
    assert pick(run, 2) == 0 and pick(run, 4) == 2  # best observed; a failure never
    assert regret(run, 1.0, 4) == pytest.approx(2.0)  # its true value 3.0, not the observed 1.0
    run.picks[4] = 3  # the posterior rule's choice wins over the best observed
    assert regret(run, 1.0, 4) == pytest.approx(0.5)


def test_the_posterior_pick_asks_only_about_finished_points_and_maps_back_its_index():
    asked = []

    class Model:
        def posterior(self, points):
            asked.extend(points)
            return np.array([1.0, -5.0, 0.0]), np.ones(3)

    params = [{"a": 0}, {"a": 1}, {"a": 2}, {"a": 3}]
    assert posterior_pick(Model(), params, [0.3, math.inf, 0.5, 0.4]) == 2
    assert asked == [{"a": 0}, {"a": 2}, {"a": 3}]


def test_the_posterior_pick_falls_back_to_the_best_observed_before_any_registration():
    space = SearchSpace.parse(["x:float:0:1"])
    assert posterior_pick(Suggester(space), [{"x": 0.1}, {"x": 0.2}], [0.5, 0.2]) == 1


def test_tpu_bo_recommends_from_its_state_after_exactly_c_observations():
    # Seed 0 of lr_cliff fails its fifth trial (lr above 1): the pick must skip it.
    run = run_one("lr_cliff", "tpu_bo", 0, 12, (8, 12))
    assert math.isinf(run.seen[4][0]) and set(run.picks) == {8, 12}
    assert run.noise_std is not None and run.noise_std > 0
    for c, chosen in run.picks.items():
        scores = [observed for observed, _ in run.seen[:c]]
        finite = sorted((s, i) for i, s in enumerate(scores) if math.isfinite(s))
        assert chosen in [i for _, i in finite[:TOP]]
    # The posterior rule chose differently from the best observed score here.
    assert any(run.picks[c] != pick(Run(seen=run.seen), c) for c in run.picks)
    # A run stopped at 8 evaluations recommends what the longer run did at 8 ...
    assert run_one("lr_cliff", "tpu_bo", 0, 8, (8,)).picks == {8: run.picks[8]}
    # ... and asking the posterior does not change what the Suggester proposes.
    assert run_one("lr_cliff", "tpu_bo", 0, 12).seen == run.seen


def test_the_exact_suggester_and_the_others_recommend_the_best_observed():
    for method in ("tpu_bo_exact", "random"):
        run = run_one("accuracy_like", method, 1, 10, (10,))
        assert run.picks == {} and run.noise_std is None


def test_the_posterior_pick_is_recommend_over_the_suggester_s_means():
    space = SearchSpace.parse(["x:float:0:1"])
    s = Suggester(space, seed=0, maximize=False)
    draws = np.random.default_rng(0)
    params = [s.suggest(random=True) for _ in range(9)]
    scores = [(v["x"] - 0.3) ** 2 + 0.05 * draws.standard_normal() for v in params]
    for v, score in zip(params, scores, strict=True):
        s.observe(v, score)
    means, _ = s.posterior(params)
    assert posterior_pick(s, params, scores) == recommend(scores, list(means), maximize=False)


def test_a_small_run_reports_every_method_the_summary_and_the_fitted_noise(tmp_path, capsys):
    out = tmp_path / "quality.json"
    optimizer_quality.main(
        [
            "--seeds=2",
            "--budget=10",
            "--problems=lr_cliff,hartmann6_n03",
            "--methods=tpu_bo,tpu_bo_observed,tpu_bo_exact,random",
            "--processes=1",
            f"--out={out}",
        ]
    )
    printed = capsys.readouterr().out
    assert "summary: lowest median regret" in printed and "tpu_bo_observed" in printed
    result = json.loads(out.read_text())
    assert list(result["regret_by_seed"]) == ["lr_cliff", "hartmann6_n03"]
    by_seed = result["regret_by_seed"]["hartmann6_n03"]
    assert set(by_seed) == {"tpu_bo", "tpu_bo_observed", "tpu_bo_exact", "random"}
    assert all(len(v["10"]) == 2 and min(v["10"]) >= 0 for v in by_seed.values())
    assert len(result["noise_std_by_seed"]["hartmann6_n03"]) == 2
    assert result["problems"]["hartmann6_n03"]["noise"] == 0.3
    assert set(result["best_method"]["lr_cliff"]["10"]) <= set(by_seed)
