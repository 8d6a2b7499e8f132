"""The ramp (tpu_bo.session.ramp): packs start one trial wide and widen to the measured K as
trials are told, moving running trials along; one program per (structure, width)."""

from __future__ import annotations

import json

from tpu_bo import Config, run_study
from tpu_bo.records import Status
from tpu_bo.session import ramp, run
from tpu_bo.train.trainer import Trainer
from tpu_bo.train.width import Measured

from .test_run import SMALL


def test_the_widths_double_as_trials_are_told_up_to_k():
    assert [ramp.width(4, told) for told in range(9)] == [1, 2, 2, 4, 4, 4, 4, 4, 4]
    assert [ramp.width(8, told) for told in (6, 7, 100)] == [4, 8, 8]
    assert ramp.width(1, 5) == 1 and ramp.width(3, 10) == 2  # a power of two below K...
    assert ramp.widths(4) == [1, 2, 4] and ramp.widths(3) == [1, 2, 3] and ramp.widths(1) == [1]
    assert ramp.line(4) == (
        "ramp: packs train 1 trial at first, 2 once 1 is told, 4 once 3 are told (K=4)"
    )


def test_a_study_ramps_to_k_moving_running_trials_with_one_program_per_width(
    tmp_path, capsys, monkeypatch
):
    """K=4 as if measured (the measurement's timing would make the test depend on the machine;
    it keeps no program here, so the ramp traces each width itself). A runtime gain above 38.5
    diverges at once (tests.custom_models:diverging), 36% of [0, 60], so trials end at
    different epochs and a widening finds trials running (at seed 4: trial 0 ends at width 1, and
    the widening to 4 moves one running trial)."""
    measured = Measured(4, {1: 1.0, 2: 2.0, 4: 4.0}, key="as if measured")
    monkeypatch.setattr(run, "_measure_width", lambda *args: measured)
    dropped, drop = [], Trainer.drop_program

    def drop_program(trainer, params, width):  # the real one, seen
        dropped.append(width)
        drop(trainer, params, width)

    monkeypatch.setattr(Trainer, "drop_program", drop_program)
    config = Config(
        **{**SMALL, "init_points": 6, "n_iter": 4, "epochs": 3, "parallel_trials": "auto"},
        seed=4,
        model="tests.custom_models:diverging",
        space=["gain:float:0:60"],
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    printed = capsys.readouterr().out
    records = sorted(result.trials, key=lambda r: r.number)
    assert len(records) == 10
    assert records[0].width == 1 and {r.width for r in records} <= {1, 2, 4}
    assert max(r.width for r in records) == 4
    assert result.traces == 6  # a train and an eval function for each of widths 1, 2 and 4
    assert dropped == [1, 2]  # a width the ramp has passed is dropped
    assert "ramp: packs train 1 trial at first, 2 once 1 is told, 4 once 3 are told" in printed
    assert "ramp: 1 trial told; packs now train 2 side by side" in printed
    assert (
        "ramp: 3 trials told; packs now train 4 side by side (1 running trial moved with its "
        "state)" in printed
    )
    for r in records:  # a moved trial ran its epochs once each, on one clock
        if r.status is Status.OK:
            assert [h["epoch"] for h in r.history] == [1, 2, 3]
            assert r.resumed_from_epoch is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["parallel_trials"]["chosen"] == 4
    # Off: every pack is K wide from the first trial.
    off = run_study(config, ramp=False, output_dir=str(tmp_path / "off"), n_iter=0)
    assert {r.width for r in off.trials} == {4} and off.traces == 2
