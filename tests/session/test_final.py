"""After the study: the best configuration retrained from its seed, scored once, exported.

One small digits study with ``final_epochs=2`` (``study``) serves the end-to-end tests; the
failure and train+eval paths of :func:`tpu_bo.session.final.train_final` also run against stand-ins
of the trainer and datasets, which cost nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.data.pipeline import Datasets
from tpu_bo.records import Status, TrialRecord
from tpu_bo.session.final import train_final
from tpu_bo.study.output_dir import OutputDir

SMALL = {"dataset": "digits", "epochs": 1, "init_points": 2, "n_iter": 1, "batch_size": 64}


def run(**fields):
    """``run_study(**SMALL, **fields)`` and what it printed."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        result = run_study(Config(**{**SMALL, **fields}))
    return result, text.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 3-trial digits study ending in 2 final epochs: (output_dir, result, stdout)."""
    out = tmp_path_factory.mktemp("final_study")
    result, stdout = run(final_epochs=2, output_dir=str(out))
    return out, result, stdout


def digits_test_split():
    """The digits ``test`` split as the input pipeline feeds it: (images, labels)."""
    from tpu_bo.data.sources import digits_arrays

    pixels, labels = digits_arrays()["test"]
    return pixels.astype(np.float32) / 255.0, labels


def test_the_best_trial_is_retrained_reported_and_recorded(study):
    out, result, stdout = study
    final = result.final
    assert final["status"] == "ok" and final["error"] is None
    assert final["trial"] == result.best_trial and final["params"] == result.best_params
    assert (final["epochs"], final["trained_on"]) == (2, "train")
    assert [h["epoch"] for h in final["history"]] == [1, 2]
    assert all(0 <= h["val_accuracy"] <= 1 and h["loss"] > 0 for h in final["history"])
    assert final["test"]["split"] == "test" and final["test"]["examples"] == 297
    assert "final: epoch 2/2 loss " in stdout and " val_accuracy " in stdout
    assert f"final: exported {out / 'final' / 'model.keras'} and " in stdout
    assert json.loads((out / "final" / "final.json").read_text()) == final
    assert json.loads((out / "summary.json").read_text())["final"] == final


def test_both_exports_reload_and_score_the_test_split_as_the_final_run_did(study):
    import keras
    import tensorflow as tf

    from tpu_bo.results import load_final_model
    from tpu_bo.train.layers import Dropout

    out, result, _ = study
    images, labels = digits_test_split()
    expected = result.final["test"]
    model = load_final_model(str(out))
    assert isinstance(model, keras.Model)
    rates = [layer.rate for layer in model.layers if isinstance(layer, Dropout)]
    assert rates == [0.25, pytest.approx(result.best_params["dropout_2"])]
    served = tf.saved_model.load(str(out / "final" / "saved_model"))  # kept: it owns the weights
    for logits in (model.predict(images, verbose=0), served.serve(tf.constant(images)).numpy()):
        accuracy = float((logits.argmax(-1) == labels).mean())
        assert accuracy == pytest.approx(expected["accuracy"], abs=1e-5)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        assert float(np.mean(loss)) == pytest.approx(expected["loss"], rel=1e-4)


def test_a_rerun_reuses_the_final_model_without_retraining(study, tmp_path):
    out, first, _ = study
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    stamp = (copy / "final" / "final.json").stat().st_mtime_ns
    result, stdout = run(final_epochs=2, output_dir=str(copy))
    assert "nothing to run" in stdout and "not retraining" in stdout
    assert "final: epoch" not in stdout and result.traces == 0  # nothing ran at all
    assert (copy / "final" / "final.json").stat().st_mtime_ns == stamp
    assert result.final == {**first.final, "paths": result.final["paths"]}
    assert result.final["paths"]["keras"] == str(copy / "final" / "model.keras")


@pytest.mark.skipif(
    not hasattr(Datasets, "train_and_eval"), reason="Datasets.train_and_eval is not built yet"
)
def test_final_on_train_and_val_trains_on_both_splits(study, tmp_path):
    out, first, _ = study
    copy = tmp_path / "both"
    shutil.copytree(out, copy)
    result, stdout = run(final_epochs=2, final_on_train_and_val=True, output_dir=str(copy))
    final = result.final
    assert final["status"] == "ok" and final["trained_on"] == "train+eval"
    assert "final: retraining trial" in stdout and "final: epoch 2/2 loss " in stdout
    assert all(not any(k.startswith("val_") for k in h) for h in final["history"])
    assert final["test"]["examples"] == 297 and (copy / "final" / "model.keras").exists()


def regressor(hp, input_shape, num_classes):
    """A compiled two-input regression model (its own loss and metric)."""
    import keras

    inputs = {name: keras.Input(shape, name=name) for name, shape in input_shape.items()}
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()(list(inputs.values()))
    )
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(loss="mse", metrics=["mae"])
    return model


def test_a_compiled_model_with_dict_features_is_exported_and_reloads(tmp_path):
    import warnings

    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(256, 3)), "b": rng.normal(size=(256, 2))}
    x = {k: v.astype(np.float32) for k, v in x.items()}
    y = (x["a"].sum(1) - x["b"][:, 0]).astype(np.float32)
    test = ({k: v[:50] for k, v in x.items()}, y[:50])
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        result = run_study(
            data=(x, y),
            test_data=test,
            model=regressor,
            objective="val_mae",
            space={"learning_rate": ("log", 1e-3, 1e-2)},
            **{**SMALL, "batch_size": 32},
            final_epochs=1,
            output_dir=str(tmp_path),
        )
    final = result.final
    assert final["status"] == "ok", final["error"]
    assert set(final["history"][0]) >= {"loss", "val_loss", "val_mae"} and "mae" in final["test"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.models.load_model(str(tmp_path / "final" / "model.keras"))
    # The compiled optimizer is saved built, so Keras finds every variable it expects.
    assert not [w for w in caught if "optimizer" in str(w.message)], caught
    served = tf.saved_model.load(str(tmp_path / "final" / "saved_model"))
    for predicted in (model.predict(test[0], verbose=0), served.serve(test[0]).numpy()):
        mse = float(np.mean((predicted[:, 0] - test[1]) ** 2))
        assert mse == pytest.approx(final["test"]["loss"], rel=1e-4)


# The same function against stand-ins: failures and the train+eval path, without TensorFlow.


class FakeTower:
    def __init__(self):
        self.frozen = 0

    def freeze(self):
        self.frozen += 1

    def model_values(self):
        return []


class FakeProgram:
    def __init__(self, losses):
        self.losses, self.towers, self.owner = list(losses), [FakeTower()], "a pack"
        self.evaluated, self.starts = [], []

    def start(self, slot, values, seed):
        assert slot == 0
        self.starts.append((values, seed))

    def train(self, iterator, steps):
        self.trained = getattr(self, "trained", []) + [(iterator, steps)]
        return np.array([self.losses.pop(0)])

    def evaluate(self, data):
        self.evaluated.append(data)
        return [{"loss": 0.5, "accuracy": 0.75, "examples": 10.0}]


class FakeTrainer:
    def __init__(self, program):
        self._the_program = program

    def program(self, params, width):
        assert width == 1
        return self._the_program

    @property
    def resets(self):
        return self._the_program.starts


class FakeData:
    split, num_examples = "test", 10


class FakeDatasets:
    train_iterator, steps_per_epoch, eval, test = "train", 3, "eval", None

    def train_and_eval(self):
        return "train+eval", 4

    def for_batch(self, batch):
        assert batch is None  # these stand-ins search no batch_size
        return self


class Lines:
    def __init__(self):
        self.lines = []

    def line(self, text=""):
        self.lines.append(text)


RECORD = TrialRecord(number=5, status=Status.OK, params={"dropout_2": 0.2}, target=0.9, seed=42)


def final_of(program, tmp_path, *, writer=False, **fields):
    """``train_final`` of RECORD on stand-ins; a non-writer by default (it exports nothing)."""
    config = Config(**{**SMALL, "final_epochs": 2, "steps_per_execution": 2, **fields})
    trainer, lines = FakeTrainer(program), Lines()
    files = OutputDir(str(tmp_path), writer=writer)
    return train_final(config, trainer, FakeDatasets(), RECORD, files, lines), trainer, lines


def test_a_nan_loss_fails_the_final_run_in_one_sentence_recorded_in_final_json(tmp_path):
    program = FakeProgram([0.5, 0.25, float("nan")])
    final, trainer, lines = final_of(program, tmp_path, writer=True)
    assert final["status"] == "failed" and final["paths"] == {} and final["test"] is None
    assert final["error"] == "the final training failed: loss became nan in epoch 2, step 2."
    assert lines.lines[-1] == "final: " + final["error"]
    assert json.loads((tmp_path / "final" / "final.json").read_text()) == final
    assert not (tmp_path / "final" / "model.keras").exists()
    assert trainer.resets == [({"dropout_2": 0.2}, 42)]
    assert program.owner is None and program.towers[0].frozen == 1
    assert [h["epoch"] for h in final["history"]] == [1]
    assert final["history"][0]["loss"] == pytest.approx(0.25)  # (0.5 + 0.25) / 3 steps
    assert final["history"][0]["val_accuracy"] == 0.75
    assert [s for _, s in program.trained] == [2, 1, 2]  # 3 steps an epoch, 2 per call
    # A rerun tries a failed final run again.
    again, trainer, _ = final_of(FakeProgram([0.5] * 4), tmp_path)
    assert again["status"] == "ok" and len(trainer.resets) == 1


def test_train_and_eval_draws_from_both_splits_and_skips_validation(tmp_path, monkeypatch):
    program = FakeProgram([1.0] * 4)
    monkeypatch.setattr(FakeDatasets, "test", FakeData())
    final, _, lines = final_of(program, tmp_path, final_on_train_and_val=True)
    assert final["status"] == "ok" and final["trained_on"] == "train+eval"
    assert program.trained == [("train+eval", 2), ("train+eval", 2)] * 2
    assert program.evaluated == [FakeDatasets.test]  # the test split once, no eval split
    assert set(final["history"][1]) == {"epoch", "loss", "steps_per_second"}
    assert final["history"][1]["loss"] == 0.5  # 2 calls of 2 steps, each summing to 1.0
    assert final["test"] == {"split": "test", "examples": 10, "loss": 0.5, "accuracy": 0.75}
    assert "final: epoch 2/2 loss 0.5000" in lines.lines
    assert lines.lines[-1] == "final: test (test, 10 examples): loss 0.5000 accuracy 0.7500"
