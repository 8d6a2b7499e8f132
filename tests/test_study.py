"""Whole studies through the Python API: journal, resume, failures, best and test score."""

from __future__ import annotations

import json

import pytest

from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError

SMALL = {"dataset": "digits", "epochs": 2, "init_points": 2, "n_iter": 2, "batch_size": 64}


def read_journal(output_dir):
    with open(f"{output_dir}/trials.jsonl") as f:
        return [json.loads(line) for line in f]


def test_a_study_journals_every_trial_and_compiles_once(tmp_path, capsys):
    result = run_study(Config(**SMALL, output_dir=str(tmp_path)))
    records = read_journal(tmp_path)
    assert [r["trial"] for r in records] == [1, 2, 3, 4]
    assert [r["source"] for r in records] == ["random", "random", "guided", "guided"]
    for r in records:
        assert {"trial", "params", "target", "status", "seconds", "traces"} <= set(r)
        assert r["status"] == "ok" and 0 < r["target"] <= 1 and r["seconds"] > 0
        assert set(r["params"]) == {"dropout_2", "learning_rate"}
        assert 0.1 <= r["params"]["dropout_2"] <= 0.5
        assert 1e-4 <= r["params"]["learning_rate"] <= 1e-2
        assert len(r["history"]) == 2
    assert [r["traces"] for r in records] == [2, 2, 2, 2]
    assert result.traces == 2
    best = max(records, key=lambda r: r["target"])
    assert (result.best_trial, result.best_target, result.best_params) == (
        best["trial"],
        best["target"],
        best["params"],
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_trial"] == best["trial"] and summary["counts"] == {"ok": 4}
    assert summary["test"]["examples"] == 297 and 0 < summary["test"]["accuracy"] <= 1
    out = capsys.readouterr().out
    assert "| trial |" in out.replace("|  trial", "| trial") and "best: trial" in out
    assert f"{best['target']:.4f}*" in out


def test_rerunning_resumes_without_repeating_trials(tmp_path):
    config = Config(**{**SMALL, "n_iter": 1}, output_dir=str(tmp_path))
    run_study(config)
    first = read_journal(tmp_path)
    result = run_study(config, n_iter=3)  # a bigger budget continues the same study
    records = read_journal(tmp_path)
    assert [r["trial"] for r in records] == [1, 2, 3, 4, 5]
    assert records[:3] == first
    assert len(result.trials) == 5
    again = run_study(config, n_iter=3)  # budget spent: nothing runs
    assert read_journal(tmp_path) == records and again.best_trial == result.best_trial


def test_a_different_study_in_the_same_dir_is_refused(tmp_path):
    run_study(Config(**{**SMALL, "n_iter": 1, "init_points": 1}, output_dir=str(tmp_path)))
    with pytest.raises(ConfigError) as info:
        run_study(Config(**SMALL, output_dir=str(tmp_path), space=["learning_rate:log:1e-5:1e-2"]))
    assert info.value.flag == "output_dir" and "holds a different study" in info.value.message
    assert len(read_journal(tmp_path)) == 2


def test_failed_trials_are_journaled_and_the_study_goes_on(tmp_path):
    config = Config(
        **{**SMALL, "init_points": 4, "n_iter": 2, "epochs": 1},
        optimizer="sgd",
        space=["learning_rate:log:1e-3:1e9"],
        seed=1,
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    records = read_journal(tmp_path)
    statuses = [r["status"] for r in records]
    assert len(records) == 6 and "failed" in statuses and "ok" in statuses
    for r in records:
        if r["status"] == "failed":
            assert r["target"] is None and "loss became" in r["error"]
    assert result.counts == {s: statuses.count(s) for s in set(statuses)}
    assert result.best_target == max(r["target"] for r in records if r["status"] == "ok")


def test_structural_space_compiles_once_per_structure(tmp_path):
    config = Config(
        **{**SMALL, "init_points": 4, "n_iter": 2, "epochs": 1},
        output_dir=str(tmp_path),
        space=["dense_units:choice:16,32", "learning_rate:log:1e-4:1e-2"],
    )
    run_study(config)
    records = read_journal(tmp_path)
    structures = {r["params"]["dense_units"] for r in records}
    assert structures <= {16, 32}
    assert records[-1]["traces"] == 2 * len(structures)


def test_a_start_that_failed_before_any_trial_does_not_lock_the_dir(tmp_path):
    with pytest.raises(ConfigError, match="never reads hyperparameter 'dropuot_2'"):
        run_study(Config(**SMALL, output_dir=str(tmp_path), space=["dropuot_2:float:0:0.5"]))
    result = run_study(Config(**{**SMALL, "n_iter": 1, "init_points": 1}, output_dir=str(tmp_path)))
    assert len(result.trials) == 2
