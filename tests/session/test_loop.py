"""The study loop (tpu_bo.session.loop): asks in the background while the chip trains, the time
split, and a clean stop (no hang, lock released, nothing lost) when something fails mid-epoch."""

from __future__ import annotations

import json
import threading
import time

import optuna
import pytest

from tpu_bo import run_study
from tpu_bo.report.observers import Observer
from tpu_bo.study.journal import GFileJournal
from tpu_bo.study.study import Study
from tpu_bo.timing import CATEGORIES

TINY = {
    "dataset": "digits",
    "model": "tests.custom_models:tiny",
    "space": ["dropout:float:0:0.5", "learning_rate:log:1e-4:1e-1"],
    "batch_size": 64,
    "epochs": 1,
    "init_points": 2,
    "parallel_trials": 1,  # auto would measure K first (tests/train/test_width.py)
}


def optuna_trials(output_dir):
    storage = optuna.storages.JournalStorage(
        GFileJournal(str(output_dir / "trials.journal"), writer=False)
    )
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


def test_the_next_trial_is_asked_while_the_current_one_trains_and_time_is_split(
    tmp_path, monkeypatch
):
    asks = []  # (thread name, seconds) of every ask
    real_ask = Study.ask

    def timed_ask(self, structure=None):
        start = time.perf_counter()
        trial = real_ask(self, structure)
        asks.append((threading.current_thread().name, time.perf_counter() - start))
        return trial

    monkeypatch.setattr(Study, "ask", timed_ask)
    # Epochs of a few hundred small steps, so that an epoch outlasts an ask.
    fields = {**TINY, "batch_size": 8, "steps_per_execution": 1}
    result = run_study(**fields, n_iter=4, output_dir=str(tmp_path))
    trials = optuna_trials(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    # One slot, one epoch per trial: trial n is asked in the background while trial n - 1
    # trains, so it starts (is asked) before its predecessor completes; except the first
    # guided trial (2), which waits for both random ones, as in a sequential study.
    for before, after in zip(trials, trials[1:], strict=False):
        if after.number == TINY["init_points"]:
            assert after.datetime_start > before.datetime_complete
        else:
            assert after.datetime_start < before.datetime_complete, (before.number, after.number)
    split = json.loads((tmp_path / "summary.json").read_text())["time_this_session"]
    assert split == result.time and set(split) == {*CATEGORIES, "other", "wall"}
    assert split["wall"] == pytest.approx(result.seconds, abs=1e-3)
    assert sum(v for k, v in split.items() if k != "wall") == pytest.approx(split["wall"], abs=0.01)
    assert split["train"] > 0 and split["eval"] > 0 and split["trace"] > 0 and split["reset"] > 0
    # Trials 1, 3, 4 and 5 were asked in the background; the chip waited for the others only.
    threads = [name for name, _ in asks]
    assert threads == ["MainThread", "tpu_bo-ask", "MainThread"] + ["tpu_bo-ask"] * 3
    in_front = sum(seconds for name, seconds in asks if name == "MainThread")
    behind = sum(seconds for name, seconds in asks if name != "MainThread")
    assert split["suggest_wait"] < in_front + 0.5 * behind


class FailsMidEpoch(Observer):
    """Raises inside the epoch of trial ``number`` (while the next trial is being asked)."""

    def __init__(self, number):
        self.number, self.current = number, None

    def on_trial_start(self, trial):
        self.current = trial.number

    def on_progress(self, step, steps, loss, steps_per_second):
        if self.current == self.number:
            raise RuntimeError("an observer failed mid-epoch")


def test_an_error_mid_epoch_stops_the_asks_releases_the_lock_and_resumes_everything(
    tmp_path, monkeypatch
):
    fields = {**TINY, "n_iter": 3, "output_dir": str(tmp_path)}
    with pytest.raises(RuntimeError, match="an observer failed mid-epoch"):
        run_study(**fields, steps_per_execution=1, observers=[FailsMidEpoch(2)])
    # The study's own threads (asks, writes) are stopped; the collection of earlier studies'
    # garbage that run_study starts (data.pipeline.release_in_background) may still be running.
    running = [t.name for t in threading.enumerate() if t.name.startswith("tpu_bo-")]
    assert not [name for name in running if name != "tpu_bo-release"], running
    states = [t.state.name for t in optuna_trials(tmp_path)]
    assert states[:2] == ["COMPLETE", "COMPLETE"] and set(states[2:]) == {"RUNNING"}

    # An ask that fails in the background thread (trials 2 and 3 resume first, and trial 4 is
    # asked while trial 3 trains) surfaces in the main thread, as itself.
    threads = []

    def failing_ask(self, structure=None):
        threads.append(threading.current_thread().name)
        raise OSError("the storage went away")

    monkeypatch.setattr(Study, "ask", failing_ask)
    with pytest.raises(OSError, match="the storage went away"):
        run_study(**fields)
    assert threads == ["tpu_bo-ask"]
    monkeypatch.undo()

    result = run_study(**fields)  # the lock was released both times: the study resumes
    assert [r.number for r in result.trials] == list(range(5))
    assert result.counts == {"ok": 5}


def test_stalled_counts_as_keras_early_stopping_does():
    from tpu_bo.session.loop import stalled

    assert not stalled([0.5, 0.6, 0.6], 0, 0.0, maximize=True)  # patience 0: never
    assert stalled([0.5, 0.6, 0.6], 1, 0.0, maximize=True)
    assert not stalled([0.5, 0.6, 0.7], 1, 0.0, maximize=True)
    assert stalled([0.5, 0.65, 0.7], 1, 0.1, maximize=True)  # not by more than min_delta
    assert not stalled([0.5, 0.6, 0.55, 0.7], 2, 0.0, maximize=True)
    assert stalled([2.0, 1.0, 1.5, float("nan")], 2, 0.0, maximize=False)


def test_early_stopping_ends_a_trial_as_ok_and_its_slot_takes_the_next(tmp_path, capsys):
    # No epoch beats another by more than 1 in accuracy: every trial ends after 1 + patience.
    result = run_study(**{**TINY, "epochs": 5, "parallel_trials": 2}, n_iter=2, patience=1,
                       min_delta=1.0, output_dir=str(tmp_path))  # fmt: skip
    assert "early stopping: a trial ends after 1 epoch(s) without val_accuracy" in (
        capsys.readouterr().out
    )
    assert len(result.trials) == 4
    for r in result.trials:
        assert r.status.value == "ok" and len(r.history) == 2, r
