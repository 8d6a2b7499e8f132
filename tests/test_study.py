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


def test_best_weights_reload_into_a_fresh_model_and_reproduce_the_score(tmp_path):
    import numpy as np
    from sklearn.datasets import load_digits

    from tpu_bo import load_best_model

    config = Config(**{**SMALL, "epochs": 3}, output_dir=str(tmp_path))
    result = run_study(config)
    best = next(r for r in read_journal(tmp_path) if r["trial"] == result.best_trial)
    model = load_best_model(str(tmp_path))
    digits = load_digits()  # eval split: train[90%:] of the first 1500 = images 1350..1499
    x = np.round(digits.images[1350:1500] * (255 / 16)).astype(np.uint8)[..., None] / 255.0
    logits = model.predict(x.astype(np.float32), verbose=0)
    accuracy = float((logits.argmax(-1) == digits.target[1350:1500]).mean())
    assert accuracy == pytest.approx(best["target"], abs=1e-6)
    info = json.loads((tmp_path / "best" / "trial.json").read_text())
    assert info["trial"] == result.best_trial and info["best_epoch"] == best["best_epoch"]


def test_summary_plot_and_tensorboard_hparams_for_every_trial(tmp_path):
    import tensorflow as tf

    from tpu_bo.plots import summary_figure

    config = Config(**SMALL, output_dir=str(tmp_path))
    run_study(config)
    assert (tmp_path / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = read_journal(tmp_path)
    fig = summary_figure(records, config.resolved_space(), objective="val_accuracy", maximize=True)
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

    root_plugins, _ = plugins_and_tags(tmp_path / "tensorboard")
    assert "hparams" in root_plugins
    for r in records:
        plugins, tags = plugins_and_tags(tmp_path / "tensorboard" / f"trial_{r['trial']:04d}")
        assert "hparams" in plugins
        assert {"val_accuracy", "val_loss", "loss"} <= tags


def test_median_rule_prunes_trials_below_the_median(tmp_path):
    fields = {**SMALL, "init_points": 6, "n_iter": 6, "epochs": 4, "seed": 3}
    run_study(Config(**fields, output_dir=str(tmp_path / "full")))
    run_study(Config(**fields, prune="median", prune_after=3, output_dir=str(tmp_path / "pruned")))
    full, pruned = read_journal(tmp_path / "full"), read_journal(tmp_path / "pruned")
    assert len(full) == len(pruned) == 12
    cut = [r for r in pruned if r["status"] == "pruned"]
    assert cut, "the median rule pruned nothing"
    for r in cut:
        epoch = len(r["history"])
        assert epoch < 4 and r["steps"] == epoch * (1350 // 64)
        assert r["target"] == max(h["val_accuracy"] for h in r["history"])
        finished = [p for p in pruned if p["status"] == "ok" and p["trial"] < r["trial"]]
        assert len(finished) >= 3
        peers = sorted(max(h["val_accuracy"] for h in p["history"][:epoch]) for p in finished)
        import statistics

        assert r["target"] < statistics.median(peers)
    assert sum(r["steps"] for r in pruned) < sum(r["steps"] for r in full)
    summary = json.loads((tmp_path / "pruned" / "summary.json").read_text())
    assert summary["counts"]["pruned"] == len(cut)


def test_a_loss_objective_is_minimised(tmp_path):
    result = run_study(Config(**SMALL, objective="val_loss", output_dir=str(tmp_path)))
    records = read_journal(tmp_path)
    for r in records:
        assert r["target"] == min(h["val_loss"] for h in r["history"])
    assert result.best_target == min(r["target"] for r in records)
    assert json.loads((tmp_path / "summary.json").read_text())["objective"].startswith(
        "val_loss (min"
    )


def test_space_from_a_json_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(
        json.dumps(
            {
                "learning_rate": {"kind": "log", "low": 1e-4, "high": 1e-2},
                "dense_units": ["choice", [16, 32]],
            }
        )
    )
    result = run_study(Config(**SMALL, space_file=str(path), output_dir=str(tmp_path / "s")))
    assert set(result.best_params) == {"learning_rate", "dense_units"}
    assert all(r["params"]["dense_units"] in (16, 32) for r in result.trials)


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
        Config(**{**SMALL, "n_iter": 4}, domain_reduction=True, output_dir=str(tmp_path))
    )
    assert len(result.trials) == 6
    with pytest.raises(ConfigError) as info:
        Config(domain_reduction=True, space=["dense_units:choice:16,32"]).validate()
    assert info.value.flag == "domain_reduction"


def test_diverging_points_fail_and_guided_suggestions_mostly_avoid_them(tmp_path):
    """A runtime gain of 10**g overflows float32 for g > 38.5: 36% of [0, 60] diverges."""
    config = Config(
        **{**SMALL, "init_points": 6, "n_iter": 8, "epochs": 2},
        model="tests.custom_models:diverging",
        space=["gain:float:0:60"],
        output_dir=str(tmp_path),
    )
    result = run_study(config)
    records = read_journal(tmp_path)
    assert len(records) == 14 and result.counts["failed"] >= 2
    for r in records:  # float32 overflows above 10**38.53
        if r["params"]["gain"] > 38.54:
            assert r["status"] == "failed" and r["target"] is None
            assert r["error"].startswith("loss became nan in epoch 1")
        elif r["params"]["gain"] < 38.52:
            assert r["status"] == "ok"
    guided = [r for r in records if r["source"] == "guided"]
    # Blind sampling would fail 36% of the time, i.e. about 3 of these 8.
    assert sum(r["status"] == "failed" for r in guided) <= 2
    assert result.best_params["gain"] < 38.5


def test_a_study_lives_on_a_non_local_filesystem():
    """ram:// stands in for gs://: every file goes through tf.io.gfile, resume included."""
    import tensorflow as tf

    from tpu_bo import load_best_model

    out = "ram://tpu_bo_test_study"
    run_study(Config(**{**SMALL, "n_iter": 1}, output_dir=out))
    result = run_study(Config(**{**SMALL, "n_iter": 2}, output_dir=out))
    assert [r["trial"] for r in result.trials] == [1, 2, 3, 4]
    names = set(tf.io.gfile.listdir(out))
    assert {
        "trials.jsonl",
        "summary.json",
        "summary.png",
        "study.json",
        "config.json",
        "best/",
        "tensorboard/",
    } <= names | {n + "/" for n in names}
    assert load_best_model(out).count_params() > 0


def test_a_packed_study_runs_exactly_its_budget_in_one_program(tmp_path, capsys):
    """7 trials in packs of 3: 3 + 3 + 1, one traced program, distinct points, best saved."""
    from tpu_bo import load_best_model

    config = Config(**{**SMALL, "n_iter": 5, "parallel_trials": 3}, output_dir=str(tmp_path))
    result = run_study(config)
    records = read_journal(tmp_path)
    assert sorted(r["trial"] for r in records) == list(range(1, 8))
    assert [r["pack_size"] for r in records] == [3, 3, 3, 3, 3, 3, 1]
    assert [r["source"] for r in sorted(records, key=lambda r: r["trial"])] == ["random"] * 2 + [
        "guided"
    ] * 5
    assert all(r["status"] == "ok" and r["traces"] == 2 for r in records)
    points = {tuple(sorted(r["params"].items())) for r in records}
    assert len(points) == 7
    assert result.traces == 2 and result.counts == {"ok": 7}
    assert load_best_model(str(tmp_path)) is not None
    out = capsys.readouterr().out
    assert "best: trial" in out


def test_a_packed_study_shares_one_structure_per_pack(tmp_path):
    config = Config(
        **{**SMALL, "init_points": 4, "n_iter": 2, "epochs": 1, "parallel_trials": 2},
        output_dir=str(tmp_path),
        space=["dense_units:choice:16,32", "learning_rate:log:1e-4:1e-2"],
    )
    run_study(config)
    records = sorted(read_journal(tmp_path), key=lambda r: r["trial"])
    for a, b in zip(records[::2], records[1::2], strict=True):
        assert a["params"]["dense_units"] == b["params"]["dense_units"]
    structures = {r["params"]["dense_units"] for r in records}
    assert max(r["traces"] for r in records) == 2 * len(structures)


def test_a_packed_study_journals_a_diverging_tower_as_failed_and_goes_on(tmp_path):
    config = Config(
        **{**SMALL, "init_points": 4, "n_iter": 2, "epochs": 1, "parallel_trials": 2},
        output_dir=str(tmp_path),
        model="tests.custom_models:diverging",
        space=["gain:float:0:60"],
    )
    result = run_study(config)
    records = read_journal(tmp_path)
    assert len(records) == 6
    failed = [r for r in records if r["status"] == "failed"]
    assert failed and all(r["params"]["gain"] > 38 for r in failed)
    assert all(r["params"]["gain"] < 38.6 for r in records if r["status"] == "ok")
    assert result.counts["ok"] >= 1
