"""The clock that splits a study's wall time (tpu_bo.timing)."""

from __future__ import annotations

import time

from tpu_bo.timing import CATEGORIES, Clock, split_line


def test_the_split_adds_up_to_the_wall_time_with_the_rest_as_other():
    clock = Clock()
    clock.add("train", 2.0)
    clock.add("train", 1.0)
    with clock.measure("eval"):
        time.sleep(0.01)
    split = clock.split(5.0)
    assert set(split) == {*CATEGORIES, "other", "wall"}
    assert split["train"] == 3.0 and 0.01 <= split["eval"] < 1.0
    assert abs(sum(v for k, v in split.items() if k != "wall") - 5.0) < 1e-2
    assert clock.split(1.0)["other"] == 0.0  # never negative
    line = split_line(split)
    assert line.startswith("time: train 3.0 s (60%), other ") and line.endswith("of 5.0 s")
