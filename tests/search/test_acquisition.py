"""The capped optimisers behind a suggestion (no TensorFlow)."""

from __future__ import annotations

import numpy as np

from tpu_bo.search.acquisition import capped_lbfgsb, maximise


def test_capped_lbfgsb_stops_at_its_cap_and_keeps_the_best_point():
    calls = []

    def bowl(x):
        calls.append(x.copy())
        return float(np.sum((x - 0.3) ** 2)), 2 * (x - 0.3)

    x, value, spent = capped_lbfgsb(bowl, np.zeros(2), [(0, 1)] * 2, cap=50)
    assert np.allclose(x, 0.3, atol=1e-4) and spent == len(calls) < 50
    calls.clear()
    x, value, spent = capped_lbfgsb(bowl, np.zeros(2), [(0, 1)] * 2, cap=2)
    assert spent == len(calls) == 2 and value == min(np.sum((c - 0.3) ** 2) for c in calls)


def test_maximise_finds_the_best_point_of_a_mixed_space():
    from tpu_bo.search.space import SearchSpace
    from tpu_bo.search.suggester import Suggester

    s = Suggester(SearchSpace.parse(["x:float:0:1", "k:choice:a,b,c"]), seed=0)
    s.observe({"x": 0.5, "k": "a"}, 0.0)
    space = s.bo.space
    b = space.masks["k"]

    def acquisition(points):  # lowest at x = 0.8 with k = b
        return (points[:, space.masks["x"]][:, 0] - 0.8) ** 2 - points[:, b][:, 1]

    x = maximise(acquisition, s.bo)
    assert abs(x[space.masks["x"]][0] - 0.8) < 1e-3 and x[b][1] == 1.0
