"""A trial trained N times with different seeds, scored by the mean (``--executions_per_trial``):
tpu_bo.session.executions and the loop that runs a trial's executions side by side."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tpu_bo import Config, ConfigError, run_study
from tpu_bo.records import Checkpoint, Outcome, Trial
from tpu_bo.session import executions
from tpu_bo.session.executions import mean_history, outcome, seeds, states

from .test_loop import TINY, FailsMidEpoch


def _history(*losses):
    return [{"epoch": float(e + 1), "val_loss": v} for e, v in enumerate(losses)]


def test_the_mean_history_status_and_scores_of_executions():
    a = Outcome("ok", _history(1.0, 0.4, 0.6), steps=30, seconds=2.0, train_seconds=1.0)
    b = Outcome("ok", _history(3.0, 0.8, 0.2), steps=30, seconds=3.0, train_seconds=1.5)
    got = outcome([a, b], "val_loss", maximize=False)
    assert [h["val_loss"] for h in got.history] == pytest.approx([2.0, 0.6, 0.4])
    assert [h["epoch"] for h in got.history] == [1.0, 2.0, 3.0]
    # Epoch 3 is the mean's best: each execution's score there, whose mean is the target.
    assert got.executions == (0.6, 0.2)
    assert (got.status.value, got.steps, got.seconds, got.train_seconds) == ("ok", 30, 3.0, 2.5)

    failed = Outcome("failed", _history(1.0), error="the loss became NaN")
    got = outcome([Outcome("pruned", _history(0.5)), failed], "val_loss", maximize=False)
    assert got.status.value == "failed" and got.error == "execution 1: the loss became NaN"
    assert got.history == [{"epoch": 1.0, "val_loss": 0.75}]
    nan = mean_history([_history(1.0, 2.0), [{"epoch": 1.0, "val_loss": math.nan}]])
    assert len(nan) == 1 and math.isnan(nan[0]["val_loss"])  # over the epochs all ran

    one = Outcome("ok", _history(0.5))
    assert outcome([one], "val_loss", maximize=False) is one  # one execution: as it is


def test_seeds_and_states_of_a_trial():
    trial = Trial(3, {}, seed=2**31 - 1, source="random")
    got = seeds(trial, 3)
    assert got[0] == trial.seed and len(set(got)) == 3 and all(0 <= s < 2**31 for s in got)
    assert states(trial, 2) == [None, None]

    def part(epoch, k):
        return Checkpoint(epoch, _history(k), [np.zeros(1)], [], steps=1, seconds=0.0)

    both = executions.checkpoint([part(2, 0.1), part(2, 0.2)])
    resumed = Trial(3, {}, seed=1, source="resumed", resume=both)
    got = states(resumed, 2)
    assert [s.history for s in got] == [_history(0.1), _history(0.2)]
    assert not got[0].executions
    # Another count, or executions at different epochs: the trial starts again.
    assert states(resumed, 3) == [None] * 3
    skewed = executions.checkpoint([part(2, 0.1), part(1, 0.2)])
    assert states(Trial(3, {}, 1, "resumed", skewed), 2) == [None, None]


def test_executions_share_a_pack_score_by_their_mean_and_resume_together(tmp_path, capsys):
    fields = {**TINY, "epochs": 2, "n_iter": 0, "objective": "val_loss"}
    fields["steps_per_execution"] = 1  # progress is reported inside the epoch
    # Trial 0 ends, then the session dies inside trial 1's second epoch: its two executions
    # are saved after epoch 1, in one checkpoint.
    out = str(tmp_path / "two")
    with pytest.raises(RuntimeError, match="failed mid-epoch"):
        run_study(**fields, executions_per_trial=2, output_dir=out, observers=[_Epoch2Of(1)])
    capsys.readouterr()
    result = run_study(**fields, executions_per_trial=2, output_dir=out)
    printed = capsys.readouterr().out
    assert "continuing trial 1 after epoch 1" in printed
    assert "each trial trains 2 times with different seeds, side by side (2 slots" in printed
    single = run_study(**fields, output_dir=str(tmp_path / "one"))

    assert len(result.trials) == 2
    for r in result.trials:
        assert r.status.value == "ok" and r.width == 2 and len(r.history) == 2
        assert len(r.executions) == 2 and r.executions[0] != r.executions[1]  # two seeds
        assert r.target == pytest.approx(np.mean(r.executions), rel=1e-6)
        assert r.history[r.best_epoch - 1]["val_loss"] == r.target
    # Execution 0 is the trial as one execution runs it, with the same seed. (Trial 1 resumed
    # in a new session, whose batches come in another order than an uninterrupted one's.)
    r, alone = result.trials[0], single.trials[0]
    assert r.executions[0] == pytest.approx(alone.history[r.best_epoch - 1]["val_loss"], rel=1e-4)
    assert result.trials[1].resumed_from_epoch == 1
    assert not single.trials[0].executions
    assert Config(executions_per_trial=2).pack_width == 2
    # Another count of executions is another study.
    with pytest.raises(ConfigError, match="executions_per_trial"):
        run_study(**fields, executions_per_trial=3, output_dir=out)


def test_pbt_refuses_several_executions():
    with pytest.raises(ConfigError, match="executions_per_trial") as e:
        Config(scheduler="pbt", parallel_trials=4, epochs=4, executions_per_trial=2).validate()
    assert e.value.flag == "executions_per_trial"


class _Epoch2Of(FailsMidEpoch):
    """Raises inside trial ``number``'s second epoch."""

    def __init__(self, number):
        super().__init__(number)
        self.epochs = 0

    def on_trial_start(self, trial):
        super().on_trial_start(trial)
        self.epochs = 0

    def on_epoch(self, trial, metrics):
        self.epochs += 1

    def on_progress(self, step, steps, loss, steps_per_second):
        if self.epochs == 1:
            super().on_progress(step, steps, loss, steps_per_second)
