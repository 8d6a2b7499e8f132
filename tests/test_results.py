"""Reading a study's directory: its trials, its summary and its best model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.records import Outcome, Status
from tpu_bo.results import load_best_model, load_final_model, load_records, load_summary
from tpu_bo.search.space import SearchSpace
from tpu_bo.study.output_dir import BEST_TRIAL, BEST_WEIGHTS, FINAL_MODEL, SUMMARY
from tpu_bo.study.study import Study
from tpu_bo.train import models

SPACE = SearchSpace.from_value({"learning_rate": ("log", 1e-4, 1e-1)})


def Result(status, history, error=None, steps=10, resumed_from_epoch=None):  # noqa: N802
    """A trial's outcome as a pack reports it (1 s)."""
    return Outcome(status, history, error, steps, 1.0, resumed_from_epoch)


def history(*accuracies):
    return [
        {"epoch": i + 1, "loss": 1.0, "val_loss": 1.0 - a, "val_accuracy": a}
        for i, a in enumerate(accuracies)
    ]


def run(output_dir, *results, **fields):
    config = Config(space=SPACE, init_points=2, n_iter=2, output_dir=str(output_dir), **fields)
    study = Study(config.validate()).open()
    try:
        for result in results:
            study.tell(study.ask(), result)
        study.ask()  # left running
    finally:
        study.close()


def test_load_records_reads_every_trial_by_number(tmp_path):
    run(tmp_path, Result("ok", history(0.5, 0.8), steps=7), Result("failed", [], error="nan"))
    first, failed, running = load_records(str(tmp_path))
    assert (first.number, first.status, first.target, first.steps) == (0, Status.OK, 0.8, 7)
    assert first.best_epoch == 2 and first.params == {
        "learning_rate": first.params["learning_rate"]
    }
    assert (failed.status, failed.error, failed.target) == (Status.FAILED, "nan", None)
    assert (running.number, running.status) == (2, Status.RUNNING)


def test_load_records_names_output_dir_when_there_is_no_study(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_records(str(tmp_path / "nothing"))
    assert e.value.flag == "output_dir" and "trials.journal is missing" in e.value.message
    assert str(tmp_path / "nothing") in e.value.message


def test_load_records_picks_the_study_by_name(tmp_path):
    run(tmp_path, Result("ok", history(0.5)))
    named = load_records(str(tmp_path), study_name=tmp_path.name)
    assert [r.target for r in named] == [0.5, None]
    with pytest.raises(ConfigError, match="holds no study 'other'") as e:
        load_records(str(tmp_path), study_name="other")
    assert e.value.flag == "output_dir"


def test_load_summary_is_none_until_a_session_has_ended(tmp_path):
    assert load_summary(str(tmp_path)) is None
    (tmp_path / SUMMARY).write_text(json.dumps({"best_trial": 3}))
    assert load_summary(str(tmp_path)) == {"best_trial": 3}


def test_load_best_model_without_a_best_trial_names_output_dir(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_best_model(str(tmp_path))
    assert e.value.flag == "output_dir"
    assert str(tmp_path) in e.value.message and BEST_TRIAL in e.value.message


def test_load_best_model_builds_the_model_and_loads_the_saved_weights(tmp_path):
    info = {
        "model": "tests.custom_models:tiny",
        "fixed": {"width": 4},
        "params": {"dropout": 0.1},
        "input_shape": [3],
        "num_classes": 2,
    }
    builder = models.get_builder(info["model"])
    saved = models.build_model(builder, {"width": 4, "dropout": 0.1}, (3,), 2)
    for w in saved.weights:
        w.assign(np.random.default_rng(0).normal(size=w.shape).astype("float32"))
    models.save_model_weights(saved, str(tmp_path / BEST_WEIGHTS))
    (tmp_path / BEST_TRIAL).write_text(json.dumps(info))
    model = load_best_model(str(tmp_path))
    assert isinstance(model, keras.Model) and model.layers[1].units == 4  # the fixed width
    for a, b in zip(model.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    calls = []

    def notebook_builder(hp, input_shape, num_classes):  # not importable by name
        calls.append((dict(hp), input_shape, num_classes))
        return builder(hp, input_shape, num_classes)

    load_best_model(str(tmp_path), builder=notebook_builder)
    assert calls == [({"width": 4, "dropout": 0.1}, (3,), 2)]


def test_load_final_model_without_a_final_model_names_output_dir(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_final_model(str(tmp_path))
    assert e.value.flag == "output_dir" and FINAL_MODEL in e.value.message
    assert str(tmp_path) in e.value.message and "--final_epochs" in e.value.message


def test_load_final_model_reads_final_model_keras(tmp_path):
    saved = models.build_model(models.get_builder("tests.custom_models:tiny"), {}, (3,), 2)
    (tmp_path / "final").mkdir()
    saved.save(str(tmp_path / FINAL_MODEL))
    model = load_final_model(str(tmp_path))
    for a, b in zip(model.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
