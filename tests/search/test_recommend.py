"""The recommendation rule and the grouping of repeats (no TensorFlow)."""

from __future__ import annotations

import pytest

from tpu_bo.records import Status, TrialRecord
from tpu_bo.search import recommend


def test_the_best_posterior_mean_among_the_top_observed_is_recommended():
    scores = [0.90, 0.99, 0.95, 0.97, 0.96, 0.94, 0.93]
    means = [0.999, 0.95, 0.96, 0.965, 0.955, 0.97, 0.9]
    # Trial 0 has the best mean but is not among the 5 best scores; trial 5 is (the 5th).
    assert recommend.recommend(scores, means, maximize=True) == 5
    assert recommend.recommend(scores, means, maximize=True, top=4) == 3
    assert recommend.recommend(scores, means, maximize=True, top=1) == 1
    # Minimising: the smallest mean among the smallest scores.
    assert recommend.recommend([3.0, 1.0, 2.0], [1.5, 2.0, 1.0], maximize=False, top=2) == 2


def test_repeats_group_by_their_hyperparameters_and_spread_is_a_sample_std():
    def record(n, target, lr):
        return TrialRecord(n, Status.OK, {"lr": lr, "units": 32}, target)

    groups = recommend.groups(
        [record(0, 0.9, 1e-3), record(1, 0.8, 2e-3), record(2, 0.7, 1e-3), record(3, None, 1e-3)]
    )
    assert sorted(len(g) for g in groups.values()) == [1, 2]  # no target: not grouped
    spread = recommend.spread([0.9, 0.7])
    assert spread["mean"] == pytest.approx(0.8) and spread["std"] == pytest.approx(0.1414, abs=1e-4)
    assert recommend.spread([0.5])["std"] == 0.0
