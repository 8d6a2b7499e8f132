"""The end of a session in a study shared through a database (``tpu_bo.session.ending``): repeats
planned from every worker's trials, a dead worker's repeat taken over, one summary of all."""

from __future__ import annotations

import json

import optuna

from tpu_bo import run_study
from tpu_bo.study.shared.rdb import RELEASED


def test_a_shared_studys_end_takes_over_a_dead_workers_repeat_and_plans_no_more(tmp_path):
    url, out = f"sqlite:///{tmp_path}/study.db", tmp_path / "out"
    flags = dict(
        dataset="digits",
        accelerator="cpu",
        epochs=1,
        init_points=2,
        n_iter=1,
        repeat_best=2,
        parallel_trials=1,  # one repeat: as many candidates as a pack's trials
        output_dir=str(out),
        storage=url,
        study_name="repeats",
    )
    first = run_study(**flags)
    (repeat,) = [t for t in first.trials if t.repeat_of is not None]
    # Another worker asked a second repeat of the same candidate, then died (its trial let go).
    study = optuna.load_study(study_name="repeats", storage=url)
    study.enqueue_trial(dict(repeat.params), user_attrs={"repeat_of": repeat.repeat_of})
    orphan = study.ask()
    for key, value in {"seed": 7, "source": "repeat", "worker": RELEASED}.items():
        orphan.set_user_attr(key, value)

    second = run_study(**{**flags, "repeat_best": 3})  # wants 2 repeats: 1 done, 1 orphaned
    repeats = [t for t in second.trials if t.repeat_of is not None]
    assert sorted(t.number for t in repeats) == [repeat.number, orphan.number]
    assert len(second.trials) == 5 and all(t.status.value == "ok" for t in second.trials)
    taken = study.trials[orphan.number].user_attrs["takeovers"]
    assert taken[0]["from"] == RELEASED and taken[0]["epoch"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == 5
    assert len(summary["selection"]["repeats"][0]["trials"]) == 3  # the candidate, 3 runs
