"""bench/schedulers.py: the figures of a run's records and the compute a tpu_bo study is
charged, on synthetic records and a simulated pack (no study is run)."""

from __future__ import annotations

import types

import pytest

from bench import schedulers
from bench.scheduler_peers import BudgetSpent, Curve, epoch_callback
from bench.schedulers import (
    PackMeter,
    best_at,
    censored_median,
    median_curve,
    run_figures,
    summarise,
    time_to_target,
    truncate,
    with_best,
)

# (compute, wall seconds, val accuracy), in the order the epochs happened.
EVENTS = [(4, 10.0, 0.90), (4, 10.0, 0.95), (8, 20.0, 0.93), (8, 20.0, 0.97), (12, 31.0, 0.99)]


def test_records_carry_the_best_so_far_and_are_truncated_at_the_budget():
    records = with_best(EVENTS)
    assert [r[3] for r in records] == [0.90, 0.95, 0.95, 0.97, 0.99]
    assert truncate(records, 8) == records[:4]
    assert best_at(records, 3) is None and best_at(records, 4) == 0.95
    assert best_at(records, 8) == 0.97 and best_at(records, 100) == 0.99


def test_time_to_target_is_the_first_epoch_at_or_above_it():
    records = with_best(EVENTS)
    assert time_to_target(records, 0.95) == (4, 10.0)
    assert time_to_target(records, 0.97) == (8, 20.0)
    assert time_to_target(records, 0.995) == (None, None)


def test_the_figures_ignore_what_came_after_the_budget():
    figures = run_figures(with_best(EVENTS), budget=8, target=0.98)
    assert figures == {
        "best_at_budget": 0.97,
        "compute_to_target": None,  # reached at 12 tower-epochs only: over the budget
        "wall_to_target": None,
        "wall_seconds": 20.0,
    }
    assert run_figures(with_best(EVENTS), budget=12, target=0.98)["compute_to_target"] == 12


def test_a_miss_counts_as_infinite_in_the_median_and_none_as_the_worst_in_a_curve():
    assert censored_median([4, None, 8]) == 8
    assert censored_median([4, None, None]) is None
    assert censored_median([4, 6]) == 5 and censored_median([]) is None
    assert median_curve([[None, 0.5, 0.9], [None, None, 0.7], [0.2, 0.6, 0.8]]) == [
        None,
        0.5,
        0.8,
    ]


def test_summarise_takes_medians_over_seeds():
    runs = [
        {**run_figures(with_best(EVENTS), 8, target), "utilization": u, "wall_seconds": w}
        for target, u, w in [(0.95, 1.0, 30.0), (0.97, 0.5, 20.0), (0.999, 0.75, 10.0)]
    ]
    summary = summarise(runs)
    assert summary["best_at_budget"] == 0.97
    assert summary["compute_to_target"] == 8  # 4, 8 and a miss
    assert summary["reached_target"] == 2
    assert summary["utilization"] == 0.75 and summary["wall_seconds"] == 20.0


class FakeStudy:
    remaining = 0


def trial(number):
    return types.SimpleNamespace(number=number)


def pack_epoch(meter, numbers, accuracy=0.9):
    """One epoch of a pack whose trials ``numbers`` are running: two host calls, then one
    ``on_epoch`` per trial."""
    meter.on_progress(2, 3, 0.1, 1.0)
    meter.on_progress(3, 3, 0.1, 1.0)
    for n in numbers:
        meter.on_epoch(trial(n), {"val_accuracy": accuracy})


def test_the_meter_charges_every_slot_of_a_pack_epoch_idle_ones_included():
    curve = Curve()
    meter = PackMeter(curve, width=4, epochs=2, budget=100)
    meter.on_study_start(FakeStudy())
    for n in (0, 1, 2):  # three trials in a pack of four: one slot idles
        meter.on_trial_start(trial(n))
    pack_epoch(meter, [0, 1, 2])
    assert [e[0] for e in curve.events] == [4, 4, 4]
    meter.on_trial_end(trial(0), new_best=False)
    pack_epoch(meter, [1, 2])
    assert meter.computed == 8 and meter.useful == 5 and meter.trials == 3
    assert [e[0] for e in curve.events] == [4, 4, 4, 8, 8]


def test_the_meter_stops_a_study_at_the_budget_unless_it_ends_there_by_itself():
    meter = PackMeter(Curve(), width=2, epochs=4, budget=4)
    meter.on_study_start(FakeStudy())
    meter.on_trial_start(trial(0))
    meter.on_trial_start(trial(1))
    pack_epoch(meter, [0, 1])
    meter.on_progress(3, 3, 0.1, 1.0)  # a new pack epoch starts over
    meter.on_epoch(trial(0), {"val_accuracy": 0.9})
    with pytest.raises(BudgetSpent):  # the pack epoch's last epoch: the budget is spent
        meter.on_epoch(trial(1), {"val_accuracy": 0.9})
    with pytest.raises(BudgetSpent):  # and no trial may start after it
        meter.on_trial_start(trial(2))

    ending = PackMeter(Curve(), width=2, epochs=2, budget=4)
    ending.on_study_start(FakeStudy())
    for n in (0, 1):
        ending.on_trial_start(trial(n))
    pack_epoch(ending, [0, 1])
    pack_epoch(ending, [0, 1])  # both trials at their last epoch, none left to ask: no stop
    assert ending.computed == 4


def test_the_peers_callback_counts_epochs_reports_them_and_stops_at_the_budget():
    reported = []
    optuna_trial = types.SimpleNamespace(
        report=lambda value, step: reported.append((step, value)),
        should_prune=lambda: len(reported) >= 2,
    )
    curve = Curve()
    callback = epoch_callback(curve, budget=3, trial=optuna_trial)
    callback.set_model(types.SimpleNamespace(stop_training=False))
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    assert not callback.pruned and not callback.model.stop_training
    callback.on_epoch_end(1, {"val_accuracy": 0.6})
    assert callback.pruned and callback.model.stop_training
    with pytest.raises(BudgetSpent):
        callback.on_epoch_end(2, {"val_accuracy": 0.7})
    assert [e[0] for e in curve.events] == [1, 2, 3] and reported[:2] == [(1, 0.5), (2, 0.6)]


def test_the_study_fields_give_fifo_and_pbt_the_trials_the_budget_holds():
    args = schedulers.parse_args(["--budget=64"])
    fifo = schedulers.tpu_bo_fields("fifo", 1, args)
    assert fifo["init_points"] + fifo["n_iter"] == 8 and fifo["prune"] == "none"
    assert fifo["parallel_trials"] == 4 and fifo["seed"] == 1 and len(fifo["space"]) == 4
    asha = schedulers.tpu_bo_fields("asha", 0, args)
    assert asha["prune"] == "asha" and asha["init_points"] + asha["n_iter"] > 64
    pbt = schedulers.tpu_bo_fields("pbt", 0, args)
    assert pbt["scheduler"] == "pbt" and pbt["pbt_interval"] == 2 and "prune" not in pbt
    assert pbt["init_points"] + pbt["n_iter"] == 8


def test_quick_mode_and_the_budget_rule():
    args = schedulers.parse_args(["--quick", "--out", "/tmp/x/s.json"])
    assert (args.dataset, args.seeds, args.budget, args.epochs) == ("digits", 1, 8, 2)
    assert args.plot == "/tmp/x/s.png"
    assert schedulers.parse_args([]).plot == "bench/results/schedulers.png"
    assert not schedulers.parse_args(["--quick"]).plot.startswith("bench/results")
    with pytest.raises(SystemExit):
        schedulers.parse_args(["--budget=10"])  # not a multiple of K = 4


def test_a_method_whose_config_field_is_missing_is_unavailable(monkeypatch):
    fields = schedulers.tpu_bo_fields
    monkeypatch.setattr(schedulers, "tpu_bo_fields", lambda *a: {**fields(*a), "no_such_field": 1})
    with pytest.raises(schedulers.Unavailable):
        schedulers.run_tpu_bo("pbt", 0, schedulers.parse_args(["--quick"]))


def test_a_written_run_is_summarised_again_for_another_target_and_by_wall_time():
    from bench.schedulers import best_by_wall, resummarise

    runs = [{"seed": 0, "records": with_best(EVENTS), "utilization": 1.0}]
    methods = {"fifo": {"available": True, "runs": runs}, "pbt": {"available": False}}
    again = resummarise(methods, 12, 0.99)
    assert again["fifo"]["summary"]["compute_to_target"] == 12
    assert again["fifo"]["runs"][0]["wall_to_target"] == 31.0 and again["pbt"] == methods["pbt"]
    assert resummarise(methods, 8, 0.99)["fifo"]["summary"]["reached_target"] == 0
    assert best_by_wall(runs, 20.0) == 0.97 and best_by_wall(runs, 5.0) is None
