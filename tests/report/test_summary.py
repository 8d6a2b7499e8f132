"""The study's header lines, summary.json and its closing lines, from stand-in objects."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tpu_bo.config import Config
from tpu_bo.records import Status, TrialRecord, best
from tpu_bo.report.summary import dashboard_target, header_lines, summarize

SPACE = {"learning_rate": ("log", 1e-4, 1e-2), "units": ("choice", [16, 32])}


def study(tmp_path, records=(), **fields):
    config = Config(space=SPACE, output_dir=str(tmp_path), init_points=2, n_iter=3, **fields)
    return SimpleNamespace(
        config=config,
        space=config.resolved_space(),
        dir=SimpleNamespace(output_dir=str(tmp_path), path=lambda name: f"{tmp_path}/{name}"),
        records=lambda: list(records),
    )


DATA = SimpleNamespace(
    num_train=1350,
    steps_per_epoch=10,
    global_batch=128,
    eval=SimpleNamespace(num_examples=150, steps=2),
)


def record(number, status, target, lr=1e-3, steps=20, **fields):
    return TrialRecord(
        number=number,
        status=status,
        params={"learning_rate": lr, "units": 16},
        target=target,
        steps=steps,
        **fields,
    )


def test_header_lines_say_what_is_searched_on_which_data_and_where(tmp_path):
    s = study(tmp_path)
    assert header_lines(s.config, DATA, s) == [
        f"study: digits / mnist_cnn, 5 trials (2 random + 3 guided by bayes_opt), 5 epoch(s) "
        f"each, objective val_accuracy (max) -> {tmp_path}",
        "  learning_rate: log [0.0001, 0.01] runtime",
        "  units: choice {16, 32} structural",
        "data: digits train=1350 (10 steps of 128 per epoch), eval=150 (2 steps)",
    ]


def test_header_lines_of_a_pruned_resumed_minimizing_study(tmp_path):
    s = study(
        tmp_path,
        records=[record(0, Status.OK, 0.5)],
        prune="median",
        min_epochs=2,
        objective="val_loss",
        sampler="tpe",
    )
    lines = header_lines(s.config, DATA, s)
    assert "guided by tpe" in lines[0] and "objective val_loss (min)" in lines[0]
    assert lines[-2:] == [
        "pruning: median after epoch 2",
        "resuming: 1 trial(s) already in the study",
    ]


def test_summarize_counts_trials_and_names_the_best(tmp_path):
    s = study(tmp_path)
    records = [
        record(0, Status.OK, 0.8, best_epoch=2, history=({"epoch": 1}, {"epoch": 2})),
        record(1, Status.FAILED, None, steps=3, error="nan"),
        record(2, Status.PRUNED, 0.9, steps=7),
        record(3, Status.OK, 0.6),
    ]
    top = best(records, maximize=True)
    test = {"split": "test", "examples": 297, "accuracy": 0.81234}
    split = {"train": 8.0, "eval": 3.0, "suggest_wait": 0.0, "other": 1.346, "wall": 12.346}
    summary, lines = summarize(s.config, s, records, top, test, split, 0.87654)
    assert summary.to_dict() == {
        "best_trial": 0,
        "best_target": 0.8,
        "objective": "val_accuracy (max, best epoch)",
        "best_params": {"learning_rate": 1e-3, "units": 16},
        "best_epoch": 2,
        "test": test,
        "counts": {"ok": 2, "failed": 1, "pruned": 1},
        "trials": 4,
        "budget": 5,
        "training_steps": 50,
        "best_at_edge": [],
        "utilization_this_session": 0.8765,
        "seconds_this_session": 12.346,
        "time_this_session": split,
        "guided_on_bound": {"guided": 0, "on_bound": 0, "fraction": None, "by_param": {}},
        "selection": {},  # the session adds how it chose
    }
    assert lines == [
        "",
        "trials: 4 (1 failed, 2 ok, 1 pruned); 12.3 s this session",
        "time: train 8.0 s (65%), eval 3.0 s (24%), other 1.3 s (11%) of 12.3 s",
        "slot utilization: 0.877 (useful / computed slot-epochs)",
        "best: trial 0 val_accuracy 0.8000 learning_rate=0.001 units=16",
        "test (test, 297 examples): accuracy 0.8123",
        f"study: {tmp_path} (optuna-dashboard {tmp_path}/trials.journal)",
    ]


def test_guided_trials_on_a_bound_are_counted(tmp_path):
    s = study(tmp_path)
    records = [
        record(0, Status.OK, 0.7, lr=1e-4, source="random"),  # not guided: not counted
        record(1, Status.OK, 0.7, lr=1e-2, source="guided"),  # on the upper bound
        record(2, Status.FAILED, None, lr=1.02e-4, source="guided"),  # within 1% (log scale)
        record(3, Status.OK, 0.8, lr=1e-3, source="guided"),
        record(4, Status.OK, 0.8, lr=1e-3, source="guided"),
    ]
    summary, lines = summarize(s.config, s, records, records[3], None, {"wall": 1.0}, None)
    assert summary.guided_on_bound == {
        "guided": 4, "on_bound": 2, "fraction": 0.5, "by_param": {"learning_rate": 2}
    }  # fmt: skip
    assert "guided trials on a bound: 2 of 4 (a parameter within 1% of its " in ("\n".join(lines))


def test_a_best_at_the_edge_of_the_space_is_warned_about(tmp_path):
    s = study(tmp_path)
    top = record(0, Status.OK, 0.7, lr=1e-2)
    summary, lines = summarize(s.config, s, [top], top, None, {"wall": 1.0}, None)
    assert summary.best_at_edge == ["learning_rate"] and summary.test is None
    assert summary.utilization_this_session is None
    assert not any(line.startswith(("slot utilization", "test (")) for line in lines)
    assert lines[-2] == (
        "warning: the best point lies at the edge of the space for learning_rate; "
        "consider widening those bounds."
    )


def test_without_a_best_trial(tmp_path):
    s = study(tmp_path)
    records = [record(0, Status.FAILED, None)]
    summary, lines = summarize(s.config, s, records, None, None, {"wall": 0.0}, None)
    assert summary.best_trial is None and summary.best_params == {}
    assert summary.best_target is None and summary.best_epoch is None
    assert summary.best_at_edge == []
    assert "best: no trial succeeded." in lines


@pytest.mark.parametrize("storage", ["", "sqlite:///studies.db"])
def test_the_dashboard_reads_the_storage_or_the_journal(tmp_path, storage):
    s = study(tmp_path, storage=storage)
    assert dashboard_target(s) == (storage or f"{tmp_path}/trials.journal")


def test_the_dashboard_line_hides_the_databases_password(tmp_path):
    s = study(tmp_path, storage="postgresql://me:secret@db.example:5432/studies")
    assert dashboard_target(s) == "postgresql://me:***@db.example:5432/studies"
