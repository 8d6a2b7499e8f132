"""Whole studies through the Python API: storage, resume, failures, refill, best and test score.

Several tests read one shared study (``shared``) instead of each running their own.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.records import Status
from tpu_bo.report.observers import Observer
from tpu_bo.results import load_records

# One trial per pack, as most tests count traces and order trials by it (auto measures K).
SMALL = {"dataset": "digits", "epochs": 2, "init_points": 2, "n_iter": 2, "batch_size": 64,
         "parallel_trials": 1}  # fmt: skip


class Recorder(Observer):
    """Every hook call, in order."""

    def __init__(self):
        self.calls = []

    def on_study_start(self, study):
        self.calls.append(("study_start",))

    def on_trial_start(self, trial):
        self.calls.append(("trial_start", trial.number))

    def on_epoch(self, trial, metrics):
        self.calls.append(("epoch", trial.number, metrics["epoch"]))

    def on_trial_end(self, record, *, new_best):
        self.calls.append(("trial_end", record.number))

    def on_study_end(self, summary):
        self.calls.append(("study_end", summary.trials))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A 4-trial, 3-epoch digits study, run once: (output_dir, result, recorder, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("shared")
    recorder = Recorder()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        result = run_study(
            Config(**{**SMALL, "epochs": 3}, output_dir=str(out)), observers=[recorder]
        )
    return out, result, recorder, text.getvalue()


def test_a_study_records_every_trial_and_compiles_once(shared):
    out, result, _, stdout = shared
    records = load_records(str(out))
    assert [r.number for r in records] == [0, 1, 2, 3]
    assert [r.source for r in records] == ["random", "random", "guided", "guided"]
    for r in records:
        assert r.status is Status.OK and 0 < r.target <= 1 and r.seconds > 0
        assert set(r.params) == {"dropout_2", "learning_rate"}
        assert 0.1 <= r.params["dropout_2"] <= 0.5 and 1e-4 <= r.params["learning_rate"] <= 1e-2
        assert len(r.history) == 3 and r.target == max(h["val_accuracy"] for h in r.history)
    assert [r.traces for r in records] == [2, 2, 2, 2] and result.traces == 2
    best = max(records, key=lambda r: (r.target, -r.number))
    summary = json.loads((out / "summary.json").read_text())
    selection = summary["selection"]  # --select_best=observed, the default
    assert selection["best_observed"] == {"trial": best.number, "target": best.target}
    chosen = next(r for r in records if r.number == selection["selected_trial"])
    assert chosen is best and 0 <= selection["best_posterior"]["trial"] <= 3
    assert "selected by observed: trial" in stdout and "best posterior mean: trial" in stdout
    assert (result.best_trial, result.best_target, result.best_params) == (
        chosen.number,
        chosen.target,
        chosen.params,
    )
    assert result.trials == records and result.utilization == 1.0
    assert summary["best_trial"] == chosen.number and summary["counts"] == {"ok": 4}
    assert summary["test"]["examples"] == 297 and 0 < summary["test"]["accuracy"] <= 1
    assert "| trial |" in stdout and f"{best.target:.4f}*" in stdout
    assert "slot utilization: 1.000" in stdout


def test_observers_see_every_trial_epoch_and_the_end(shared):
    _, _, recorder, _ = shared
    calls = recorder.calls
    assert calls[0] == ("study_start",) and calls[-1] == ("study_end", 4)
    for n in range(4):
        mine = [c for c in calls if len(c) > 1 and c[1] == n]
        assert mine == [("trial_start", n), *[("epoch", n, e) for e in (1, 2, 3)], ("trial_end", n)]


def test_best_weights_reload_into_a_fresh_model_and_reproduce_the_score(shared):
    import numpy as np

    from tpu_bo import load_best_model
    from tpu_bo.data.sources import digits_arrays

    out, result, _, _ = shared
    best = next(r for r in load_records(str(out)) if r.number == result.best_trial)
    model = load_best_model(str(out))
    images, labels = digits_arrays()["train"]  # eval split: train[90%:] = examples 1350..1499
    x = images[1350:] / 255.0
    logits = model.predict(x.astype(np.float32), verbose=0)
    accuracy = float((logits.argmax(-1) == labels[1350:]).mean())
    assert accuracy == pytest.approx(best.target, abs=1e-6)
    info = json.loads((out / "best" / "trial.json").read_text())
    assert info["trial"] == result.best_trial and info["best_epoch"] == best.best_epoch


def test_summary_plot_and_tensorboard_hparams_for_every_trial(shared):
    import tensorflow as tf

    from tpu_bo.report.plots import summary_figure

    out, result, _, _ = shared
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [r.to_dict() for r in result.trials]
    space = Config(**SMALL).resolved_space()
    fig = summary_figure(records, space, objective="val_accuracy", maximize=True)
    scales = {ax.get_xlabel(): ax.get_xscale() for ax in fig.axes if ax.get_visible()}
    assert scales["learning_rate (log)"] == "log" and scales["dropout_2 (float)"] == "linear"

    def plugins_and_tags(directory):
        plugins, tags = set(), set()
        for path in tf.io.gfile.glob(f"{directory}/events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    plugins.add(value.metadata.plugin_data.plugin_name)
                    tags.add(value.tag)
        return plugins, tags

    assert "hparams" in plugins_and_tags(out / "tensorboard")[0]
    for r in result.trials:
        plugins, tags = plugins_and_tags(out / "tensorboard" / f"trial_{r.number:04d}")
        assert "hparams" in plugins and {"val_accuracy", "val_loss", "loss"} <= tags


def test_optuna_dashboard_serves_every_trial_with_its_epochs(shared):
    """``optuna-dashboard <output_dir>/trials.journal``, through its WSGI app."""
    import io
    import wsgiref.util

    from optuna_dashboard import wsgi

    out, result, _, _ = shared
    app = wsgi(str(out / "trials.journal"))

    def get(path):
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
        wsgiref.util.setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
        assert status[0].startswith("200"), status
        return json.loads(body)

    (study,) = get("/api/studies")["study_summaries"]
    assert study["study_name"] == out.name
    detail = get(f"/api/studies/{study['study_id']}")
    assert len(detail["trials"]) == 4
    for trial, record in zip(detail["trials"], result.trials, strict=True):
        assert trial["state"] == "Complete" and trial["values"] == [record.target]
        steps = {v["step"]: v["value"] for v in trial["intermediate_values"]}
        assert steps == {h["epoch"]: h["val_accuracy"] for h in record.history}


def test_rerunning_resumes_without_repeating_trials(shared, tmp_path):
    out, first, _, _ = shared
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    config = Config(**{**SMALL, "epochs": 3}, output_dir=str(copy))
    result = run_study(config, n_iter=3)  # a bigger budget continues the same study
    assert [r.number for r in result.trials] == [0, 1, 2, 3, 4]
    assert result.trials[:4] == first.trials
    again = run_study(config, n_iter=3)  # budget spent: nothing runs
    assert again.trials == result.trials and again.best_trial == result.best_trial
    assert again.traces == 0


def test_a_start_that_failed_before_any_trial_does_not_lock_the_dir(tmp_path):
    with pytest.raises(ConfigError, match="never reads hyperparameter 'dropuot_2'"):
        run_study(Config(**SMALL, output_dir=str(tmp_path), space=["dropuot_2:float:0:0.5"]))
    result = run_study(Config(**{**SMALL, "n_iter": 1, "init_points": 1}, output_dir=str(tmp_path)))
    assert len(result.trials) == 2


def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path):
    config = Config(
        **{**SMALL, "init_points": 4, "n_iter": 2, "epochs": 1},
        optimizer="sgd",
        space=["learning_rate:log:1e-3:1e9"],
        seed=1,
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    statuses = [r.status.value for r in result.trials]
    assert len(statuses) == 6 and "failed" in statuses and "ok" in statuses
    for r in result.trials:
        if r.status is Status.FAILED:
            assert r.target is None and "loss became" in r.error
    assert result.counts == {s: statuses.count(s) for s in set(statuses)}
    assert result.best_target == max(r.target for r in result.trials if r.status is Status.OK)


def test_pruned_slots_refill_at_once_and_keep_the_program(tmp_path):
    """K=4 with the median pruner on 40 short trials: pruned slots take the next trial at the
    next epoch boundary, so no slot-epoch is idle but in the drain at the end (at most K-1
    slots for the last trial's epochs), and nothing retraces."""
    config = Config(
        **{**SMALL, "init_points": 40, "n_iter": 1, "epochs": 3, "parallel_trials": 4},
        sampler="random",
        prune="median",
        prune_after=4,
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    records = result.trials
    assert len(records) == 41 and result.traces == 2
    pruned = [r for r in records if r.status is Status.PRUNED]
    assert pruned and all(len(r.history) < 3 for r in pruned)
    useful = sum(len(r.history) for r in records)
    idle = round(useful / result.utilization) - useful  # slot-epochs computed for no trial
    assert idle <= (4 - 1) * 3 < len(pruned), (idle, useful)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["utilization_this_session"] == round(result.utilization, 4)


@pytest.mark.parametrize("sampler", ["tpe", "gp", "random"])
def test_every_sampler_runs_a_study(tmp_path, sampler):
    result = run_study(
        Config(
            **{**SMALL, "epochs": 1, "init_points": 1}, sampler=sampler, output_dir=str(tmp_path)
        )
    )
    assert [r.status for r in result.trials] == [Status.OK] * 3
    assert result.trials[-1].source == ("random" if sampler == "random" else "guided")


def test_a_loss_objective_is_minimised(tmp_path):
    result = run_study(
        Config(**{**SMALL, "n_iter": 1}, objective="val_loss", output_dir=str(tmp_path))
    )
    for r in result.trials:
        assert r.target == min(h["val_loss"] for h in r.history)
    assert result.best_target == min(r.target for r in result.trials)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["objective"].startswith("val_loss (min")


def test_a_structural_space_from_a_json_file_compiles_once_per_structure(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(
        json.dumps(
            {
                "learning_rate": {"kind": "log", "low": 1e-4, "high": 1e-2},
                "dense_units": ["choice", [16, 32]],
            }
        )
    )
    config = Config(
        **{**SMALL, "init_points": 4, "epochs": 1, "parallel_trials": 2},
        space_file=str(path),
        output_dir=str(tmp_path / "s"),
    )
    result = run_study(config)
    assert set(result.best_params) == {"learning_rate", "dense_units"}
    structures = {r.params["dense_units"] for r in result.trials}
    assert structures <= {16, 32} and len(result.trials) == 6
    assert result.traces == 2 * len(structures)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        ("{not json", "is not valid JSON"),
        ('{"lr": {"kind": "log", "low": 0.1, "high": 0.01}}', "low=0.1 >= high=0.01"),
        ('{"lr": {"kind": "log", "low": 0, "high": 0.01}}', "needs bounds > 0"),
        ('{"units": {"kind": "choice", "choices": []}}', "has no values"),
        ('{"lr": {"kind": "normal", "low": 0, "high": 1}}', "unknown kind 'normal'"),
        ("[1, 2]", "needs a 'name'"),
        ('"learning_rate"', "must hold a JSON object or list"),
    ],
)
def test_bad_space_files_name_the_flag(tmp_path, content, needle):
    path = tmp_path / "space.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Config(space_file=str(path)).validate()
    assert info.value.flag == "space_file" and needle in info.value.message


def test_domain_reduction_runs_and_refuses_discrete_params(tmp_path):
    result = run_study(
        Config(
            **{**SMALL, "n_iter": 3, "epochs": 1}, domain_reduction=True, output_dir=str(tmp_path)
        )
    )
    assert len(result.trials) == 5
    with pytest.raises(ConfigError) as info:
        Config(domain_reduction=True, space=["dense_units:choice:16,32"]).validate()
    assert info.value.flag == "domain_reduction"


def test_diverging_points_fail_and_guided_suggestions_mostly_avoid_them(tmp_path):
    """A runtime gain of 10**g overflows float32 for g > 38.5: 36% of [0, 60] diverges.

    Packed in twos, so a diverging slot fails alone and is refilled while its peer goes on.
    """
    config = Config(
        **{**SMALL, "init_points": 6, "n_iter": 8, "epochs": 2, "parallel_trials": 2},
        model="tests.custom_models:diverging",
        space=["gain:float:0:60"],
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    records = result.trials
    assert len(records) == 14 and result.counts["failed"] >= 1 and result.traces == 2
    for r in records:  # float32 overflows above 10**38.53; the logits, sums of 32 units, sooner
        if r.params["gain"] > 38.54:
            assert r.status is Status.FAILED and r.target is None
            assert r.error.startswith("loss became nan")
        elif r.params["gain"] < 37.0:
            assert r.status is Status.OK
    guided = [r for r in records if r.source == "guided"]
    # Blind sampling would fail 36% of the time, i.e. about 3 of these 8.
    assert sum(r.status is Status.FAILED for r in guided) <= 2
    assert result.best_params["gain"] < 38.5


def test_a_study_lives_on_a_non_local_filesystem():
    """ram:// stands in for gs://: every file goes through tf.io.gfile, resume included."""
    import tensorflow as tf

    from tpu_bo import load_best_model

    out = "ram://tpu_bo_test_study"
    run_study(Config(**{**SMALL, "n_iter": 1, "epochs": 1}, output_dir=out))
    result = run_study(Config(**{**SMALL, "n_iter": 2, "epochs": 1}, output_dir=out))
    assert [r.number for r in result.trials] == [0, 1, 2, 3]
    names = set(tf.io.gfile.listdir(out))
    expected = {"trials.journal", "summary.json", "summary.png", "config.json", "best/"}
    assert expected | {"tensorboard/"} <= names | {n + "/" for n in names}
    assert load_best_model(out).count_params() > 0


def test_a_packed_study_runs_exactly_its_budget_in_one_program(tmp_path):
    """7 trials in 3 slots: one traced program, distinct points, the width recorded."""
    config = Config(**{**SMALL, "n_iter": 5, "parallel_trials": 3}, output_dir=str(tmp_path))
    result = run_study(config)
    records = result.trials
    assert [r.number for r in records] == list(range(7))
    assert [r.source for r in records] == ["random"] * 2 + ["guided"] * 5
    assert all(r.status is Status.OK and r.traces == 2 and r.width == 3 for r in records)
    assert len({tuple(sorted(r.params.items())) for r in records}) == 7
    assert result.traces == 2 and result.counts == {"ok": 7}


def test_n_iter_0_runs_only_the_random_trials_and_a_rerun_finds_the_budget_spent(tmp_path):
    """--n_iter=0 is a random search of --init_points trials; the end (test score, selection,
    summary) runs as usual, and rerunning the finished study runs nothing."""
    config = Config(
        **{**SMALL, "epochs": 1, "init_points": 3, "n_iter": 0},
        select_best="posterior",
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    assert [(r.number, r.source, r.status) for r in result.trials] == [
        (n, "random", Status.OK) for n in range(3)
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["budget"] == 3 and summary["selection"]["selected_trial"] == result.best_trial
    assert 0 < summary["test"]["accuracy"] <= 1
    # An uncompiled model's study names the optimizer that trains it, as studies written before
    # --optimizer defaulted to the compiled one did, so those resume.
    import optuna

    from tpu_bo.study import identity
    from tpu_bo.study.journal import GFileJournal

    journal = GFileJournal(str(tmp_path / "trials.journal"), writer=False)
    (study,) = optuna.get_all_study_summaries(optuna.storages.JournalStorage(journal))
    stored = study.user_attrs[identity.ATTR]
    assert stored["optimizer"] == "rmsprop" and result.trials[0].optimizer == "RMSprop"
    again = run_study(config)
    assert again.trials == result.trials and again.traces == 0


def test_n_iter_0_with_pbt_is_exactly_one_population(tmp_path):
    result = run_study(
        dataset="digits",
        model="tests.custom_models:tiny",
        space=["dropout:float:0:0.5", "learning_rate:log:1e-4:1e-1"],
        optimizer="adam",
        batch_size=64,
        epochs=3,
        init_points=4,
        n_iter=0,
        parallel_trials=4,
        scheduler="pbt",
        pbt_interval=1,
        output_dir=str(tmp_path),
    )
    records = result.trials
    assert [r.number for r in records] == [0, 1, 2, 3]
    assert all(r.source == "random" and r.width == 4 and len(r.history) == 3 for r in records)
    exploits = [e for r in records for e in r.schedule[1:]]
    assert {e["after_epoch"] for e in exploits} == {1, 2}  # the four trained as one population
    assert {e["from"] for e in exploits} <= {0, 1, 2, 3}
