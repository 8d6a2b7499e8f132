"""Choosing the best trial (--select_best), keeping candidates' weights, and repeats."""

from __future__ import annotations

import json
import types

import pytest

from tpu_bo import Config, run_study
from tpu_bo.records import Status, TrialRecord
from tpu_bo.session.selection import Kept, choose, ranked, repeat_candidates, repeat_plan
from tpu_bo.study.output_dir import BEST_TRIAL, BEST_WEIGHTS, OutputDir, kept_name


def _records(*targets, repeat_of=()):
    out = []
    for n, target in enumerate(targets):
        params = {"lr": 10.0 ** -(n % 4 + 1)}  # trials 0 and 4 share their point
        of = dict(repeat_of).get(n)
        out.append(TrialRecord(n, Status.OK, params, target, best_epoch=1, repeat_of=of))
    return out


def _config(**kw):
    base = {"maximize": True, "select_best": "posterior", "repeat_best": 1, "parallel_trials": 1}
    fields = {**base, **kw}
    return types.SimpleNamespace(**fields, trials_per_pack=fields["parallel_trials"])


def test_the_posterior_rule_reranks_the_top_observed_by_their_mean():
    records = _records(0.90, 0.99, 0.95, 0.97, 0.96, 0.94)
    table = {n: (m, 0.01) for n, m in enumerate([0.999, 0.95, 0.96, 0.965, 0.955, 0.97])}
    # Trial 0's mean is best but its score is not among the 5 best.
    assert [r.number for r in ranked(records, table, rule="posterior", maximize=True)] == [
        5,
        3,
        2,
        4,
        1,
    ]
    choice = choose(_config(), records, table, 0.002)
    assert choice.record.number == 5
    assert choice.info["best_observed"] == {"trial": 1, "target": 0.99}
    assert choice.info["best_posterior"] == {
        "trial": 0,
        "mean": 0.999,
        "std": 0.01,
        "noise_std": 0.002,
    }
    assert choose(_config(select_best="observed"), records, table, 0.0).record.number == 1


def test_repeats_are_planned_for_as_many_candidates_as_a_pack_holds():
    records = _records(0.90, 0.99, 0.95, 0.97)
    config = _config(select_best="observed", repeat_best=3, parallel_trials=4)
    assert repeat_candidates(config, records, {}) == [1, 3]
    assert [(r.number, n) for r, n in repeat_plan(config, records, [1, 3])] == [(1, 2), (3, 2)]
    # Trial 4 repeats trial 1 (the plan counts repeat_of, not equal points).
    done = _records(0.90, 0.99, 0.95, 0.97, 0.98, repeat_of={4: 1})
    assert [(r.number, n) for r, n in repeat_plan(config, done, [1, 3])] == [(1, 1), (3, 2)]
    # Repeats still running (another worker's, in a shared study) count too.
    plan = repeat_plan(config, done, [1, 3], running=[3, 1])
    assert [(r.number, n) for r, n in plan] == [(3, 1)]
    assert repeat_candidates(_config(repeat_best=1), records, {}) == []
    assert repeat_candidates(_config(repeat_best=2, parallel_trials=8), records, {}) == [1, 3, 2, 0]


def test_with_repeats_the_best_mean_wins_over_a_lucky_single_run():
    # Trial 1 (0.99) was repeated at 0.95 and 0.95: mean 0.963; trial 3 (0.97) at 0.97, 0.96.
    records = _records(0.90, 0.99, 0.95, 0.97, 0.95, 0.95, 0.97, 0.96)
    records = [
        r
        if r.number < 4
        else r.__class__(
            **{
                **r.__dict__,
                "params": records[(1, 1, 3, 3)[r.number - 4]].params,
                "repeat_of": (1, 1, 3, 3)[r.number - 4],
            }
        )
        for r in records
    ]
    choice = choose(_config(select_best="observed", repeat_best=3), records, {}, 0.0)
    assert choice.record.number in (3, 6)  # the group of trial 3; its best run
    groups = {tuple(g["trials"]): g for g in choice.info["repeats"]}
    assert groups[(3, 6, 7)]["mean"] == pytest.approx(0.9667, abs=1e-4)
    assert groups[(1, 4, 5)]["std"] == pytest.approx(0.0231, abs=1e-4)


def test_kept_weights_follow_the_top_and_install_the_choice(tmp_path):
    files = OutputDir(str(tmp_path))
    saved = []

    def save(params, weights, path):
        saved.append(path)
        (tmp_path / "kept").mkdir(exist_ok=True)
        open(path, "w").write(weights)

    kept = Kept(files, save, maximize=True, enabled=True)
    records = []
    for record in _records(0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        records.append(record)
        assert kept.threshold(records[:-1]) == (-float("inf") if record.number < 5 else 0.5)
        kept.keep(record, f"weights of {record.number}", records)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [
        f"trial_{n}.weights.h5" for n in (1, 2, 3, 4, 5)
    ]
    assert sorted(kept.weights) == [1, 2, 3, 4, 5] and kept.has(1) and not kept.has(0)
    assert not kept.has(0) and not files.exists(kept_name(0))
    files.write_text(BEST_WEIGHTS, "weights of 5")
    files.write_json(BEST_TRIAL, {"trial": 5, "model": "m"})
    choice = choose(_config(), records, {n: (n / 10, 0.1) for n in range(6)}, 0.0)
    choice.record = records[3]
    kept.install(choice, {"model": "m"})
    assert (tmp_path / BEST_WEIGHTS).read_text() == "weights of 3"
    info = json.loads((tmp_path / BEST_TRIAL).read_text())
    assert (
        info["trial"] == 3
        and info["model"] == "m"
        and info["selection"]["selected_by"] == "posterior"
    )
    # A later session knows the kept trials by their files.
    assert Kept(files, save, maximize=True, enabled=True).has(2)


def test_a_study_repeats_its_best_candidate_and_selects_by_the_mean(tmp_path):
    from tpu_bo import load_best_model
    from tpu_bo.results import load_records

    config = Config(
        dataset="digits",
        epochs=1,
        init_points=3,
        n_iter=1,
        batch_size=64,
        parallel_trials=2,
        repeat_best=3,
        select_best="posterior",
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    records = load_records(str(tmp_path))
    repeats = [r for r in records if r.repeat_of is not None]
    assert len(records) == 6 and len(repeats) == 2 and {r.source for r in repeats} == {"repeat"}
    of = next(r for r in records if r.number == repeats[0].repeat_of)
    assert all(r.params == of.params and r.repeat_of == of.number for r in repeats)
    assert len({r.seed for r in [of, *repeats]}) == 3 and all(
        r.status is Status.OK for r in repeats
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    selection = summary["selection"]
    (group,) = selection["repeats"]
    assert group["trials"] == sorted([of.number, *(r.number for r in repeats)]) and group["n"] == 3
    assert selection["selected_trial"] == result.best_trial == summary["best_trial"]
    assert result.best_trial in group["trials"]  # the only repeated candidate, its best run
    assert "posterior_mean" in selection and selection["best_posterior"]["noise_std"] >= 0
    info = json.loads((tmp_path / "best" / "trial.json").read_text())
    assert info["trial"] == result.best_trial and info["selection"]["selected_by"] == "posterior"
    # best/ holds the selected trial's weights, whichever run that is.
    import numpy as np

    from tpu_bo.data.sources import digits_arrays

    images, labels = digits_arrays()["train"]  # eval split: train[90%:] = examples 1350..1499
    x = images[1350:] / 255.0
    logits = load_best_model(str(tmp_path)).predict(x.astype(np.float32), verbose=0)
    accuracy = float((logits.argmax(-1) == labels[1350:]).mean())
    assert accuracy == pytest.approx(result.best_target, abs=1e-6)
    again = run_study(config)  # resumed: the budget and the repeats are spent
    assert len(again.trials) == 6 and again.best_trial == result.best_trial
