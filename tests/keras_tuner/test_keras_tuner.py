"""KerasTuner's code, with only its import changed, on tpu_bo's engine (tpu_bo.keras_tuner).

The model-building function is KerasTuner's getting-started example
(https://keras.io/keras_tuner/getting_started/) with its loss for integer labels; the data are
scikit-learn's digits. One search per tuner is shared by the tests (module fixtures): 1 or 2
epochs, 3 or 4 trials. ``keras_tuner`` itself (1.4.8) is imported only to compare semantics.
"""

from __future__ import annotations

import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from sklearn.datasets import load_digits

import tpu_bo.keras_tuner as keras_tuner
from bench.keras_tuner_compat import build_model  # KerasTuner's getting-started model
from tpu_bo.errors import ConfigError
from tpu_bo.keras_tuner.space import Space, discover
from tpu_bo.keras_tuner.tuners import _FunctionModel, hyperband_trials


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x = (x[order] / 16).astype("float32").reshape(-1, 8, 8)
    y = y[order].astype("int32")
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def tuners(digits, tmp_path_factory):
    """One search per tuner: arrays (RandomSearch), validation_split (BayesianOptimization),
    batched tf.data.Datasets (Hyperband)."""
    x_train, y_train, x_val, y_val = digits
    directory = str(tmp_path_factory.mktemp("kt"))
    out = {}
    tuner = keras_tuner.RandomSearch(
        hypermodel=build_model,
        objective="val_accuracy",
        max_trials=3,
        overwrite=True,
        directory=directory,
        project_name="random",
    )
    tuner.search(x_train, y_train, epochs=1, validation_data=(x_val, y_val))
    out["RandomSearch"] = (tuner, (x_val, y_val))
    tuner = keras_tuner.BayesianOptimization(
        build_model,
        objective=keras_tuner.Objective("val_accuracy", direction="max"),
        max_trials=3,
        num_initial_points=2,
        seed=1,
        directory=directory,
        project_name="bayes",
    )
    tuner.search(x_train, y_train, epochs=1, validation_split=0.2)
    at = int(np.floor(len(y_train) * 0.8))
    out["BayesianOptimization"] = (tuner, (x_train[at:], y_train[at:]))
    tuner = keras_tuner.Hyperband(
        build_model, objective="val_accuracy", max_epochs=2, factor=2, directory=directory,
        project_name="hyperband",
    )  # fmt: skip
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(32)
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(32)
    tuner.search(train, epochs=5, validation_data=val)
    out["Hyperband"] = (tuner, (x_val, y_val))
    return out


KINDS = ["RandomSearch", "BayesianOptimization", "Hyperband"]


def test_the_builder_alone_builds_at_the_defaults():
    model = build_model(keras_tuner.HyperParameters())
    model.build((None, 8, 8))
    assert model.layers[1].units == 32 and len(model.layers) == 3  # no dropout by default
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_search_summary_and_best_models(tuners, kind, capsys):
    tuner, (x_val, y_val) = tuners[kind]
    trials = list(tuner.oracle.trials.values())
    expected = {"RandomSearch": 3, "BayesianOptimization": 3, "Hyperband": hyperband_trials(2, 2)}
    assert len(trials) == expected[kind] == len(tuner.result.trials)
    assert {t.record.optimizer for t in trials} == {"Adam"}  # the compiled optimizer trained
    if kind == "BayesianOptimization":
        assert [t.record.source for t in trials][-1] == "guided"
    if kind == "Hyperband":
        assert {len(t.record.history) for t in trials} <= {1, 2}  # max_epochs, not search's 5

    best = tuner.oracle.get_best_trials(len(trials))
    scores = [t.score for t in best if t.status == "COMPLETED"]  # then the pruned, as KerasTuner
    assert scores == sorted(scores, reverse=True) and best[0].status == "COMPLETED"
    models = tuner.get_best_models(num_models=2)
    assert len(models) == 2 and all(isinstance(m.optimizer, keras.optimizers.Adam) for m in models)
    for model, trial in zip(models, best[:2], strict=True):
        loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
        assert accuracy == pytest.approx(trial.score, abs=1e-6)  # its trial's weights
        assert model.layers[1].units == trial.hyperparameters.get("units")

    best_hps = tuner.get_best_hyperparameters(5)
    assert [hp.values for hp in best_hps] == [t.hyperparameters.values for t in best]
    values = best_hps[0].values
    assert set(values) == {"units", "activation", "dropout", "lr"}
    assert values["lr"] == pytest.approx(best[0].record.params["learning_rate"])
    model = build_model(best_hps[0])
    assert [type(layer).__name__ for layer in model.layers].count("Dropout") == values["dropout"]

    capsys.readouterr()
    tuner.results_summary()
    out = capsys.readouterr().out
    head = out.splitlines()[:4]
    assert head == [
        "Results summary",
        f"Results in {tuner.project_dir}",
        "Showing 10 best trials",
        'Objective(name="val_accuracy", direction="max")',
    ]
    width = len(str(tuner.oracle.max_trials))  # KerasTuner's padding (Hyperband's: "None")
    first = f"Trial {best[0].trial_id} summary\nHyperparameters:\nunits: {values['units']}\n"
    assert first in out and re.fullmatch(rf"\d{{{width}}}", best[0].trial_id)
    assert f"Score: {best[0].score}" in out
    assert out.count(" summary\nHyperparameters:") == len(trials)


def test_search_space_summary(tuners, capsys):
    tuner, _ = tuners["RandomSearch"]
    capsys.readouterr()
    tuner.search_space_summary()
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        "Search space summary",
        "Default search space size: 4",
        "units (Int)",
        "{'default': None, 'conditions': [], 'min_value': 32, 'max_value': 512, 'step': 32, "
        "'sampling': 'linear'}",
    ]
    assert "dropout (Boolean)" in out and "{'default': False, 'conditions': []}" in out
    # lr feeds Adam's learning rate: tpu_bo's runtime learning_rate, one program for every value.
    assert any(line.strip().startswith("learning_rate: log") and "runtime" in line for line in out)


def test_a_second_search_resumes_and_overwrite_starts_fresh(tuners, digits, capsys):
    x_train, y_train, x_val, y_val = digits
    tuner, _ = tuners["RandomSearch"]
    before = {t.trial_id: t.score for t in tuner.oracle.trials.values()}
    capsys.readouterr()
    again = keras_tuner.RandomSearch(
        build_model, objective="val_accuracy", max_trials=3,
        directory=tuner.directory, project_name=tuner.project_name,
    )  # fmt: skip
    assert f"Reloading Tuner from {tuner.project_dir}" in capsys.readouterr().out
    assert {t.trial_id: t.score for t in again.oracle.trials.values()} == before
    again.search(x_train, y_train, epochs=1, validation_data=(x_val, y_val))
    assert "nothing to run" in capsys.readouterr().out
    assert again.result.traces == 0
    assert {t.trial_id: t.score for t in again.oracle.trials.values()} == before

    fresh = keras_tuner.RandomSearch(
        build_model, objective="val_accuracy", max_trials=3, overwrite=True,
        directory=tuner.directory, project_name=tuner.project_name,
    )  # fmt: skip
    assert fresh.oracle.trials == {} and fresh.remaining_trials == 3


def test_runtime_hyperparameters_share_one_program(digits, tmp_path):
    """A tuned Dropout rate (a Float with a step) and Adam's learning rate are runtime: three
    trials, one compiled program; dict features; EarlyStopping on the objective is honoured;
    executions_per_trial=2 scores each trial by the mean of two seeds, side by side."""
    x_train, y_train, x_val, y_val = digits

    def build(hp):
        inputs = keras.Input((8, 8), name="pixels")
        h = layers.Dense(64, activation="relu")(layers.Flatten()(inputs))
        h = layers.Dropout(hp.Float("rate", 0.0, 0.5, step=0.1))(h)
        model = keras.Model({"pixels": inputs}, layers.Dense(10)(h))
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-3, 1e-1, sampling="log")),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    tuner = keras_tuner.RandomSearch(
        build, objective="val_loss", max_trials=3, executions_per_trial=2,
        directory=str(tmp_path), project_name="p", tpu_bo={"parallel_trials": 1},
    )  # fmt: skip
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb"))
    tuner.search(
        {"pixels": x_train}, y_train, epochs=3, validation_data=({"pixels": x_val}, y_val),
        callbacks=[stop, board],
    )  # fmt: skip
    # TensorBoard's log_dir holds the study's events: the HParams root and one run per trial.
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "tb" / "trial_0000").glob("events.out.tfevents.*"))
    assert not (tmp_path / "p" / "tensorboard").exists()
    space = tuner._space.search_space()
    assert space["rate"].resolved_role == "runtime" and space["rate"].kind == "choice"
    assert tuner.result.traces == 2  # one train and one eval function for the whole study
    # min_delta 10: no epoch improves the loss by that much, so every trial stops at epoch 2.
    assert {len(t.record.history) for t in tuner.oracle.trials.values()} == {2}
    for t in tuner.oracle.trials.values():  # the mean of two executions, in one pack
        assert len(t.record.executions) == 2 and t.record.width == 2
        assert t.score == pytest.approx(sum(t.record.executions) / 2, rel=1e-6)
    assert space["rate"].choices == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    rates = {t.hyperparameters.get("rate") for t in tuner.oracle.trials.values()}
    assert rates <= set(space["rate"].choices)


def test_an_inactive_conditional_hyperparameter_does_not_split_programs(digits, tmp_path, capsys):
    """units is read only under model_type=wide (conditional_scope): the small trials share one
    program whatever units they drew."""
    x_train, y_train, x_val, y_val = digits

    def build(hp):
        kind = hp.Choice("model_type", ["small", "wide"])
        with hp.conditional_scope("model_type", ["wide"]):
            units = hp.Int("units", 32, 64, step=32)  # None when small
        assert (units is None) == (kind == "small")
        model = keras.Sequential(
            [layers.Flatten(), layers.Dense(units or 16, activation="relu"), layers.Dense(10)]
        )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
        return model

    tuner = keras_tuner.RandomSearch(
        build, objective="val_accuracy", max_trials=6, seed=0, directory=str(tmp_path),
        project_name="conditional", tpu_bo={"parallel_trials": 1},
    )  # fmt: skip
    space = tuner._space.search_space()
    assert space["units"].active_when == (("model_type", ("wide",)),)
    small = [space.structure_key({"model_type": "small", "units": u}) for u in (32, 64)]
    assert small[0] == small[1] == (("model_type", "small"), ("units", None))
    tuner.search(x_train, y_train, epochs=1, validation_data=(x_val, y_val))
    header = capsys.readouterr().out
    assert "units: choice {32, 64} structural (when model_type in {wide})" in header
    records = [t.record for t in tuner.oracle.trials.values()]
    keys = {space.structure_key(r.params) for r in records}
    drawn = {(r.params["model_type"], r.params["units"]) for r in records}
    assert len(keys) < len(drawn)  # this seed draws small trials with both units
    assert tuner.result.traces == 2 * len(keys)  # a train and an eval function per program
    for t in tuner.oracle.trials.values():  # KerasTuner's values: the active ones only
        assert ("units" in t.hyperparameters.values) == (t.record.params["model_type"] == "wide")


class BatchTuning(keras_tuner.HyperModel):
    """KerasTuner's way to tune the batch: HyperModel.fit passes batch_size=hp.Choice(...)."""

    def build(self, hp):
        model = keras.Sequential([layers.Flatten(), layers.Dense(32, activation="relu"),
                                  layers.Dense(10, activation="softmax")])  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])  # fmt: skip
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=hp.Choice("batch_size", [16, 64]), **kwargs)


def test_hypermodel_fit_tunes_the_batch_size(digits, tmp_path):
    x_train, y_train, x_val, y_val = digits
    tuner = keras_tuner.RandomSearch(
        BatchTuning(), objective="val_accuracy", max_trials=3, seed=2,
        directory=str(tmp_path), project_name="batch",
    )  # fmt: skip
    tuner.search(x_train, y_train, epochs=1, validation_data=(x_val, y_val))
    space = tuner._space.search_space()
    assert space["batch_size"].choices == (16, 64)
    assert space["batch_size"].resolved_role == "structural"
    trials = list(tuner.oracle.trials.values())
    assert {t.hyperparameters.get("batch_size") for t in trials} == {16, 64}
    for t in trials:  # each trial trained at its own batch: 1400 // batch steps per epoch
        batch = t.hyperparameters.get("batch_size")
        assert t.record.params["batch_size"] == batch and t.record.steps == len(y_train) // batch
    model = tuner.get_best_models()[0]
    accuracy = model.evaluate(x_val, y_val, verbose=0)[1]
    assert accuracy == pytest.approx(tuner.oracle.get_best_trials()[0].score, abs=1e-6)


# The space, without a study.


def test_the_import_loads_neither_tensorflow_nor_keras_tuner():
    code = (
        "import sys, tpu_bo.keras_tuner as kt; kt.HyperParameters().Int('a', 1, 3); "
        "kt.RandomSearch; print(sorted({'tensorflow', 'keras', 'keras_tuner'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _names(build) -> list[str]:
    declarations, _ = discover(_FunctionModel(build))
    return list(dict.fromkeys(d.name for d in declarations))


def test_discovery_finds_hyperparameters_of_later_builds():
    def build(hp):
        for i in range(hp.Int("layers", 1, 3)):
            hp.Int(f"units_{i}", 8, 64, step=8)
        if hp.Boolean("dropout"):
            hp.Float("rate", 0.1, 0.5)
            if hp.Choice("kind", ["plain", "gaussian"]) == "gaussian":
                hp.Float("stddev", 0.01, 1.0, sampling="log")
        kind = hp.Choice("model_type", ["mlp", "cnn"])
        with hp.conditional_scope("model_type", ["cnn"]):
            filters = hp.Int("filters", 16, 64, step=16)
            assert (filters is None) == (kind != "cnn")  # KerasTuner: inactive is None
        return None

    assert _names(build) == [
        "layers", "units_0", "dropout", "model_type", "filters", "units_1", "units_2", "rate",
        "kind", "stddev",
    ]  # fmt: skip


def test_declarations_become_tpu_bo_parameters():
    def build(hp):
        hp.Int("units", 32, 512, step=32)
        hp.Int("width", 1, 1024, sampling="log")
        hp.Int("depth", 1, 4)
        hp.Float("momentum", 0.5, 0.99, sampling="reverse_log")
        hp.Float("wd", 1e-5, 1e-1, step=10, sampling="log")
        hp.Fixed("seed", 3)
        with hp.name_scope("block"):
            hp.Choice("act", ["relu", "gelu"])
        hp.Choice("optimizer", ["adam", "sgd"])

    declarations, _ = discover(_FunctionModel(build))
    space = Space(declarations).search_space()
    got = {p.name: (p.kind, p.resolved_role) for p in space.params}
    assert got == {
        "units": ("choice", "structural"),
        "width": ("log", "structural"),
        "depth": ("int", "structural"),
        "momentum_reflected": ("log", "structural"),
        "wd": ("choice", "structural"),
        "block_act": ("choice", "structural"),
        "hp_optimizer": ("choice", "structural"),  # a model's own choice, not --optimizer's
    }
    assert space["units"].choices == tuple(range(32, 513, 32))
    assert space["wd"].choices == pytest.approx((1e-5, 1e-4, 1e-3, 1e-2, 1e-1))
    values = Space(declarations).values(
        {"width": 37.4, "momentum_reflected": 0.5, "units": 64, "depth": 2, "wd": 1e-3,
         "block_act": "gelu", "hp_optimizer": "sgd"}
    )  # fmt: skip
    assert values["width"] == 37 and values["momentum"] == pytest.approx(0.99)
    assert values["block/act"] == "gelu" and values["optimizer"] == "sgd" and values["seed"] == 3


def test_hyperparameters_behave_as_keras_tuners():
    kt = pytest.importorskip("keras_tuner")

    def declare(hp):
        out = [
            hp.Int("units", 32, 512, step=32),
            hp.Int("n", 1, 9, default=4),
            hp.Float("lr", 1e-4, 1e-2, sampling="log"),
            hp.Float("rate", 0, 0.5, step=0.1, default=0.2),
            hp.Choice("act", ["relu", "tanh"]),
            hp.Choice("width", [8, 16], default=16),
            hp.Boolean("bn"),
            hp.Fixed("seed", 7),
        ]
        with hp.conditional_scope("act", ["tanh"]):
            out.append(hp.Int("inactive", 1, 3))
        with hp.conditional_scope("act", ["relu"]):
            out.append(hp.Choice("active", ["a", "b"]))
        with hp.name_scope("block"):
            out.append(hp.Boolean("skip", default=True))
        out.append(hp.Int("units", 32, 512, step=32))  # asked again: the same value
        return out

    ours, theirs = keras_tuner.HyperParameters(), kt.HyperParameters()
    assert declare(ours) == declare(theirs)
    assert ours.values == theirs.values
    assert [(type(p).__name__, p.get_config()) for p in ours.space] == [
        (type(p).__name__, p.get_config()) for p in theirs.space
    ]
    for hp in (ours, theirs):
        with pytest.raises(ValueError, match="inactive"):
            hp.get("inactive")
        with pytest.raises(KeyError):
            hp.get("missing")
        assert hp["block/skip"] is True and "inactive" not in hp
    assert str(keras_tuner.Objective("val_loss", "min")) == str(kt.Objective("val_loss", "min"))


def test_hyperband_trials_are_keras_tuners_first_rounds():
    kt = pytest.importorskip("keras_tuner")
    for max_epochs, factor in [(2, 2), (10, 3), (27, 3), (100, 3), (81, 4)]:
        oracle = kt.oracles.HyperbandOracle(
            objective="val_loss", max_epochs=max_epochs, factor=factor
        )
        brackets = oracle._get_num_brackets()
        first_rounds = sum(oracle._get_size(b, 0) for b in range(brackets))
        assert hyperband_trials(max_epochs, factor) == first_rounds


# Bad input: one ConfigError naming the argument.


def _refused(flag: str, make, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        make(*args, **kwargs)
    assert e.value.flag == flag
    assert e.value.message.count(". ") == 0, e.value.message  # one sentence
    return e.value.message


def test_bad_arguments_are_one_sentence_naming_them(digits, tmp_path):
    x_train, y_train, x_val, y_val = digits
    kw = dict(objective="val_accuracy", directory=str(tmp_path), project_name="bad")
    tuner = keras_tuner.RandomSearch

    _refused("executions_per_trial", tuner, build_model, executions_per_trial=0, **kw)
    _refused("distribution_strategy", tuner, build_model, distribution_strategy=object(), **kw)
    _refused("no_such_argument", tuner, build_model, no_such_argument=1, **kw)
    _refused("objective", tuner, build_model, objective=["val_loss", "val_accuracy"])
    _refused("objective", tuner, build_model, objective="val_mystery")
    _refused("objective", tuner, build_model)

    def changes_type(hp):
        if hp.Boolean("wide"):
            hp.Float("units", 1, 2)
        else:
            hp.Int("units", 1, 2)

    assert "'units'" in _refused("hypermodel", tuner, changes_type, **kw)

    def bad_step(hp):
        hp.Int("units", 32, 500, step=32)

    assert "does not divide" in _refused("step", tuner, bad_step, **kw)

    good = tuner(build_model, **kw)
    data = (x_train, y_train)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "x.keras"))
    message = _refused("callbacks", good.search, *data, callbacks=[checkpoint])
    assert "keras.callbacks.ModelCheckpoint" in message
    wrong = keras.callbacks.EarlyStopping(monitor="loss")
    assert "val_accuracy" in _refused("callbacks", good.search, *data, callbacks=[wrong])
    _refused("class_weight", good.search, *data, class_weight={0: 1.0})
    _refused("shuffle", good.search, *data, shuffle=False)
    _refused("batch_size", good.search, tf.data.Dataset.from_tensor_slices(data).batch(8),
             batch_size=8)  # fmt: skip
    _refused("num_models", good.get_best_models)

    class TunesEpochs(keras_tuner.HyperModel):
        def build(self, hp):
            return build_model(hp)

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, **{**kwargs, "epochs": hp.Int("epochs", 1, 3)})

    message = _refused("hypermodel", tuner(TunesEpochs(), **kw).search, *data, epochs=1)
    assert "epochs" in message
