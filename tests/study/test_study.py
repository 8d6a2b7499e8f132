"""The ask/tell engine on its own: no training, a made-up objective, real Optuna storage."""

from __future__ import annotations

import logging

import optuna
import pytest

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.records import Outcome, Status, best
from tpu_bo.results import load_records
from tpu_bo.search.space import SearchSpace
from tpu_bo.study import trials
from tpu_bo.study.study import Study

SPACE = SearchSpace.from_value({"learning_rate": ("log", 1e-4, 1e-1), "units": ("choice", [8, 16])})


def Result(status, history, error=None, steps=10, resumed_from_epoch=None):  # noqa: N802
    """A trial's outcome as a pack reports it (1 s)."""
    return Outcome(status, history, error, steps, 1.0, resumed_from_epoch)


def config(tmp_path, **fields):
    base = dict(space=SPACE, init_points=2, n_iter=4, epochs=3, output_dir=str(tmp_path))
    return Config(**{**base, **fields}).validate()


def history(*accuracies):
    return [
        {"epoch": i + 1, "loss": 1.0, "val_loss": 1.0 - a, "val_accuracy": a}
        for i, a in enumerate(accuracies)
    ]


def test_ask_report_tell_and_records(tmp_path):
    study = Study(config(tmp_path)).open()
    try:
        a = study.ask()
        assert (
            a.number == 0 and a.source == "random" and set(a.params) == {"learning_rate", "units"}
        )
        assert study.remaining == 5
        assert not study.report(a, history(0.5)[0])
        record = study.tell(a, Result("ok", history(0.5, 0.7, 0.6)))
        assert record.status is Status.OK and record.target == 0.7 and record.best_epoch == 2
        assert record.metrics["val_accuracy"] == 0.7 and record.seed == a.seed
        b = study.ask({"units": 16})
        assert b.params["units"] == 16 and b.seed != a.seed
        failed = study.tell(b, Result("failed", history(0.1), error="loss became nan"))
        assert failed.status is Status.FAILED and failed.target is None
        assert failed.error == "loss became nan"
        c = study.ask()
        assert c.source == "guided"
    finally:
        study.close()
    records = load_records(str(tmp_path))
    assert [r.status for r in records] == [Status.OK, Status.FAILED, Status.RUNNING]
    assert best(records, maximize=True).number == 0
    assert records[0] == trials.record(
        optuna.load_study(study_name=tmp_path.name, storage=_journal(tmp_path)).trials[0]
    )


def _journal(tmp_path):
    from tpu_bo.study.journal import GFileJournal
    from tpu_bo.study.output_dir import JOURNAL

    return optuna.storages.JournalStorage(GFileJournal(str(tmp_path / JOURNAL), writer=False))


def test_a_killed_session_leaves_its_trial_resumable_with_its_checkpoint(tmp_path):
    import numpy as np

    from tpu_bo.records import Checkpoint

    study = Study(config(tmp_path)).open()
    trial = study.ask()
    study.report(trial, history(0.4)[0])
    state = Checkpoint(1, history(0.4), [np.ones(3)], [np.zeros(2)], steps=5, seconds=2.0)
    study.checkpoint(trial, state)
    study.close()  # as if killed: the trial was never told

    again = Study(config(tmp_path)).open()
    try:
        (resumed,) = again.resumable()
        assert (resumed.number, resumed.params, resumed.seed) == (0, trial.params, trial.seed)
        assert resumed.resume.epoch == 1 and resumed.resume.steps == 5
        np.testing.assert_array_equal(resumed.resume.model[0], np.ones(3))
        np.testing.assert_array_equal(resumed.resume.optimizer[0], np.zeros(2))
        again.report(resumed, history(0.4)[0])  # already reported: not twice
        again.tell(resumed, Result("ok", history(0.4, 0.5, 0.6), resumed_from_epoch=1))
        assert not again.dir.exists("inflight/trial_0000.npz")
        assert again.remaining == 5
    finally:
        again.close()


def test_opening_a_study_announces_nothing_unless_optuna_was_set_to_debug(tmp_path):
    announced: list[str] = []
    catch = logging.Handler()
    catch.emit = lambda record: announced.append(record.getMessage())
    before = optuna.logging.get_verbosity()
    logging.getLogger("optuna").addHandler(catch)
    try:
        optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's default
        Study(config(tmp_path / "a")).open().close()
        assert not [m for m in announced if "A new study created" in m]
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # as it was
        optuna.logging.set_verbosity(optuna.logging.DEBUG)  # a user's own choice stays
        Study(config(tmp_path / "b")).open().close()
        assert [m for m in announced if "A new study created" in m]
    finally:
        logging.getLogger("optuna").removeHandler(catch)
        optuna.logging.set_verbosity(before)


def test_a_different_study_in_the_same_directory_is_refused(tmp_path):
    study = Study(config(tmp_path)).open()
    study.tell(study.ask(), Result("ok", history(0.5)))
    study.close()
    with pytest.raises(ConfigError, match="different study") as e:
        Study(config(tmp_path, epochs=4)).open()
    assert e.value.flag == "output_dir"
    Study(config(tmp_path, n_iter=9)).open().close()  # the budget may change


def test_the_median_pruner_stops_a_trial_below_the_median(tmp_path):
    study = Study(config(tmp_path, prune="median", prune_after=2, min_epochs=1)).open()
    try:
        for accuracies in ((0.8, 0.9, 0.9), (0.7, 0.8, 0.85)):
            t = study.ask()
            for h in history(*accuracies):
                study.report(t, h)
            study.tell(t, Result("ok", history(*accuracies)))
        low = study.ask()
        assert study.report(low, history(0.1)[0])
        record = study.tell(low, Result("pruned", history(0.1)))
        assert record.status is Status.PRUNED and record.target == 0.1
        high = study.ask()
        assert not study.report(high, history(0.95)[0])
        last = study.ask()
        for h in history(0.0, 0.0):
            pruned = study.report(last, h)
        assert not study.report(last, history(0.0, 0.0, 0.0)[2])  # never at the last epoch
        assert pruned
    finally:
        study.close()


def test_an_rdb_storage_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = Study(config(tmp_path / "out", storage=url, study_name="mine")).open()
    study.tell(study.ask(), Result("ok", history(0.5)))
    study.close()
    loaded = load_records(str(tmp_path / "out"), storage=url, study_name="mine")
    assert [r.target for r in loaded] == [0.5]
    assert not (tmp_path / "out" / "trials.journal").exists()


def test_the_docs_ask_and_tell_loop(tmp_path):
    """The loop of docs/ask_and_tell.md, with a made-up training step."""
    import tpu_bo

    def my_train_one_epoch(params):
        return 1.0 - abs(params["learning_rate"] - 0.01)

    config = tpu_bo.Config(
        dataset="digits", epochs=3, init_points=3, n_iter=5, output_dir=str(tmp_path)
    ).validate()
    study = tpu_bo.Study(config).open()
    try:
        while study.remaining:
            trial = study.ask()
            history = []
            for epoch in range(1, config.epochs + 1):
                metrics = {"epoch": epoch, "val_accuracy": my_train_one_epoch(trial.params)}
                history.append(metrics)
                if study.report(trial, metrics):
                    break
            status = "ok" if len(history) == config.epochs else "pruned"
            study.tell(trial, tpu_bo.Outcome(status, history))
    finally:
        study.close()
    records = tpu_bo.load_records(str(tmp_path))
    assert len(records) == 8 and all(r.status is Status.OK for r in records)
    assert [r.source for r in records] == ["random"] * 3 + ["guided"] * 5


@pytest.mark.parametrize("prune", ["asha", "hyperband"])
def test_asha_and_hyperband_prune_at_their_rungs(tmp_path, prune):
    study = Study(config(tmp_path, prune=prune, init_points=12, n_iter=1, epochs=9)).open()
    try:
        stopped = []
        for i in range(12):
            trial = study.ask()
            accuracies = [0.9 - 0.05 * i + 0.01 * e for e in range(1, 10)]  # each worse
            for h in history(*accuracies):
                if study.report(trial, h):
                    stopped.append(h["epoch"])
                    study.tell(trial, Result("pruned", history(*accuracies[: h["epoch"]])))
                    break
            else:
                study.tell(trial, Result("ok", history(*accuracies)))
    finally:
        study.close()
    assert stopped and set(stopped) <= {1, 3}  # the rungs: min_epochs * 3**k


def test_a_checkpoint_whose_attribute_was_never_recorded_still_resumes(tmp_path):
    """Killed between writing a trial's state and recording its name; and a stale file of a
    trial told before the kill is deleted."""
    import numpy as np

    from tpu_bo.records import Checkpoint

    study = Study(config(tmp_path)).open()
    told, running = study.ask(), study.ask()
    state = Checkpoint(1, history(0.4), [np.ones(2)], [np.zeros(1)], steps=5, seconds=1.0)
    for trial in (told, running):
        study.dir.save_checkpoint(trial.number, state)
    study.tell(told, Result("ok", history(0.4, 0.5, 0.6)))
    study.close()
    assert study.dir.exists(study.dir.checkpoint_name(told.number))  # the kill's leftover

    again = Study(config(tmp_path)).open()
    try:
        (resumed,) = again.resumable()
        assert resumed.number == running.number and resumed.resume.epoch == 1
        assert again.dir.checkpoints() == [again.dir.checkpoint_name(running.number)]
    finally:
        again.close()


def test_a_trial_killed_while_being_asked_gets_its_parameters_on_resume(tmp_path):
    """Asks run in the background while the chip trains, so a kill may land between creating
    a trial and choosing its parameters: the resumed study finishes the ask under its number."""
    study = Study(config(tmp_path)).open()
    first = study.ask()
    study.tell(first, Result("ok", history(0.4, 0.5, 0.6)))
    half_asked = study.optuna.ask()  # RUNNING, no parameters, no seed: the kill's leftover
    study.close()

    again = Study(config(tmp_path)).open()
    try:
        (resumed,) = again.resumable()
        assert resumed.number == half_asked.number and resumed.resume is None
        assert SPACE.contains(resumed.params) and resumed.params.keys() == set(SPACE.names)
        frozen = again.optuna.trials[resumed.number]
        assert frozen.params == resumed.params and frozen.user_attrs["seed"] == resumed.seed
        again.tell(resumed, Result("ok", history(0.7, 0.8, 0.9)))
        assert [r.number for r in again.records()] == [0, 1] and again.remaining == 4
    finally:
        again.close()
