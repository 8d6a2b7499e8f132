"""Any supervised Keras task on the user's own data (tests/user_data.py), run for real.

Regression on arrays, a two-input model from a dataset function, TFRecords read through a
dataset function with --features/--label/--preprocess, augmentation on MNIST, and the errors
of each. The scores a study reports are checked against Keras's own ``evaluate`` of the saved
best weights, so the padding of the eval split and the sum over replicas are exact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tests import user_data
from tests.conftest import run_cli
from tests.train.test_pack import assert_same_weights, run_pack_keeping_weights
from tests.train.test_trainer import make_trainer
from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.device.accelerator import get_strategy
from tpu_bo.errors import ConfigError
from tpu_bo.results import load_best_model

RUNTIME = ["dropout:float:0:0.3", "learning_rate:log:1e-3:3e-2"]
SHORT = {"epochs": 2, "init_points": 2, "n_iter": 1, "accelerator": "cpu", "space": RUNTIME}


def best_epoch_metrics(result):
    record = next(r for r in result.trials if r.number == result.best_trial)
    return record.history[record.best_epoch - 1]


@pytest.mark.parametrize("width,replicas", [(1, 1), (2, 2)])
def test_regression_on_arrays_minimises_val_mae_exactly(tmp_path, width, replicas):
    x, y = user_data.diabetes_arrays()
    result = run_study(
        data=(x[:300], y[:300]),
        validation_data=(x[300:380], y[300:380]),  # 80 examples: the last batch is padded
        test_data=(x[380:], y[380:]),
        model="tests.user_data:regressor",
        objective="val_mae",
        batch_size=32,
        parallel_trials=width,
        cpu_replicas=replicas,
        output_dir=str(tmp_path),
        **SHORT,
    )
    assert result.counts == {"ok": 3}
    targets = [r.target for r in result.trials]
    assert result.best_target == min(targets)  # minimised: MAE is an error
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["objective"].startswith("val_mae (min")
    best = best_epoch_metrics(result)
    assert set(best) >= {"loss", "val_loss", "val_mae"} and "val_accuracy" not in best
    assert set(result.test_metrics) == {"split", "examples", "loss", "mae"}
    # Keras's own evaluation of the saved best weights gives the same numbers.
    model = load_best_model(str(tmp_path), builder=user_data.regressor)
    loss, mae = model.evaluate(x[300:380], y[300:380], batch_size=80, verbose=0)
    assert best["val_mae"] == pytest.approx(mae, abs=1e-5)
    assert best["val_loss"] == pytest.approx(loss, abs=1e-5)
    loss, mae = model.evaluate(x[380:], y[380:], batch_size=62, verbose=0)
    assert result.test_metrics["mae"] == pytest.approx(mae, abs=1e-5)


@pytest.mark.parametrize("width", [1, 2])
def test_a_two_input_model_from_a_dataset_function_maximises_val_auc(tmp_path, width):
    result = run_study(
        dataset="tests.user_data:tabular",
        train_split="train",
        eval_split="validation",
        test_split="",
        model="tests.user_data:two_inputs",
        objective="val_auc",
        batch_size=64,
        parallel_trials=width,
        cpu_replicas=2,
        output_dir=str(tmp_path),
        **SHORT,
    )
    assert result.counts == {"ok": 3}
    assert result.best_target == max(r.target for r in result.trials)
    assert result.best_target > 0.8  # the label is learnable from both inputs
    x, y = user_data.tabular_arrays()
    held_out = {k: v[768:] for k, v in x.items()}
    model = load_best_model(str(tmp_path), builder=user_data.two_inputs)
    _loss, auc = model.evaluate(held_out, y[768:], batch_size=256, verbose=0)
    assert best_epoch_metrics(result)["val_auc"] == pytest.approx(auc, abs=1e-4)


def test_tfrecords_with_features_label_and_preprocess_from_the_cli(tmp_path):
    path = tmp_path / "tabular.tfrecord"
    user_data.write_tfrecords(str(path))
    out = tmp_path / "study"
    run = run_cli(
        "--dataset=tests.user_data:tfrecords",
        "--features=numeric,category",
        "--label=label",
        "--preprocess=tests.user_data:standardize",
        "--train_split=train[:75%]",
        "--eval_split=train[75%:]",
        "--test_split=",
        "--model=tests.user_data:two_inputs",
        "--objective=val_auc",
        "--param=learning_rate:log:1e-3:3e-2",
        "--epochs=2",
        "--init_points=2",
        "--n_iter=1",
        "--batch_size=64",
        "--parallel_trials=2",
        "--accelerator=cpu",
        f"--output_dir={out}",
        env={"TPU_BO_TFRECORDS": str(path)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "train=768 (12 steps of 64 per epoch), eval=256" in run.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 3} and summary["objective"].startswith("val_auc (max")


def test_a_compiled_model_in_a_pack_matches_its_trials_trained_alone():
    fields = {
        "dataset": "tests.user_data:diabetes",
        "train_split": "train[:320]",
        "eval_split": "train[320:]",
        "test_split": "",
        "batch_size": 32,
        "model": "tests.user_data:regressor",
        "space": RUNTIME,
        "optimizer": "adam",
        "objective": "val_mae",
    }
    points = [{"dropout": 0.0, "learning_rate": 1e-2}, {"dropout": 0.3, "learning_rate": 3e-3}]
    for replicas in (1, 2):
        trainer = make_trainer(replicas, parallel_trials=2, **fields)
        packed, weights = run_pack_keeping_weights(trainer, points, [1, 2])
        assert trainer.traces == 2
        for k, (point, seed) in enumerate(zip(points, [1, 2], strict=True)):
            (alone,), (alone_weights,) = run_pack_keeping_weights(
                make_trainer(replicas, **fields), [point], [seed]
            )
            assert_same_weights(weights[k], alone_weights)
            assert packed[k].history[-1]["val_mae"] == pytest.approx(
                alone.history[-1]["val_mae"], rel=1e-5
            )


def _stream(config, batches):
    data = load_datasets(config, get_strategy("cpu"))
    return [next(data.train_iterator)[0].numpy() for _ in range(batches)], data


def test_augmentation_runs_on_every_epoch_after_the_cache(mnist_dir, tmp_path):
    base = Config(
        dataset="mnist",
        data_dir=mnist_dir,
        train_split="train[:512]",
        eval_split="test[:256]",
        test_split="",
        batch_size=128,
        shuffle_buffer=1,  # the same order every epoch: only augmentation can change a batch
    )
    (first, *_, again), data = _stream(base, 5)
    np.testing.assert_array_equal(first, again)  # batch 0 of epochs 1 and 2
    flipped = Config(**{**base.__dict__, "augment": "tests.user_data:flip"})
    (first, *_, again), data = _stream(flipped, 5)
    assert data.input_shape == (28, 28, 1) and first.dtype == np.float32 and first.max() <= 1.0
    assert not np.array_equal(first, again)
    # The same examples, flipped or not: the cache holds them unflipped.
    assert np.allclose(np.sort(first.sum(axis=(1, 2, 3))), np.sort(again.sum(axis=(1, 2, 3))))
    result = run_study(flipped, epochs=1, init_points=2, n_iter=1, parallel_trials=2,
                       accelerator="cpu", output_dir=str(tmp_path))  # fmt: skip
    assert result.counts == {"ok": 3} and result.best_target > 0.3


def study_error(**fields):
    fields = {"epochs": 1, "init_points": 1, "n_iter": 1, "accelerator": "cpu", **fields}
    with pytest.raises(ConfigError) as error:
        run_study(**fields)
    return error.value


@pytest.mark.parametrize(
    "fields,flag,words",
    [
        (
            {"dataset": "tests.user_data:tabular", "features": "numeric,nope"},
            "features",
            "'nope' is not a key of the examples; they have numeric, category",
        ),
        (
            {"dataset": "tests.user_data:diabetes", "model": "tests.custom_models:tiny"},
            "label",
            "the default loss needs integer class labels",
        ),
        (
            {"dataset": "tests.user_data:not_datasets"},
            "dataset",
            "returned list, not a tf.data.Dataset",
        ),
        (
            {"objective": "val_auc"},
            "objective",
            "reports loss, val_loss, val_accuracy, not val_auc",
        ),
        ({"dataset": "tests.user_data:ragged"}, "dataset", "which is not static"),
        (
            {
                "dataset": "tests.user_data:diabetes",
                "model": "tests.metric_models:unknown_direction",
                "objective": "val_foo",
            },
            "objective_mode",
            "pass --objective_mode=max",
        ),
        ({"augment": "tests.user_data:standardize"}, "augment", "failed on an example"),
    ],
)
def test_bad_user_input_is_one_sentence_naming_the_flag(tmp_path, fields, flag, words):
    error = study_error(output_dir=str(tmp_path), **fields)
    assert error.flag == flag and words in error.message, error
    assert "\n" not in str(error)
    assert not (tmp_path / "trials.journal").exists()


def test_a_tfds_feature_that_does_not_exist_names_features(mnist_dir, tmp_path):
    error = study_error(dataset="mnist", data_dir=mnist_dir, features="pixels", label="label",
                        output_dir=str(tmp_path))  # fmt: skip
    assert error.flag == "features" and "'pixels' is not a feature of mnist" in error.message


def test_a_compiled_loss_that_does_not_fit_the_labels_names_label(tmp_path):
    error = study_error(
        dataset="tests.user_data:tabular",
        eval_split="validation",
        model="tests.custom_models:three_way_softmax",
        output_dir=str(tmp_path),
    )
    assert error.flag == "label" and "do not fit model" in error.message


def test_the_cli_says_a_missing_objective_direction_in_one_line():
    run = run_cli(
        "--dataset=tests.user_data:diabetes",
        "--model=tests.metric_models:unknown_direction",
        "--objective=val_foo",
        "--epochs=1",
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: --objective_mode: cannot tell")


def test_a_dict_of_features_keeps_its_types_and_static_shapes():
    config = Config(dataset="tests.user_data:tabular", eval_split="validation", batch_size=64)
    data = load_datasets(config, get_strategy("cpu"))
    features, label = data.element_spec
    assert data.input_shape == {"numeric": (4,), "category": ()}
    assert features["category"].dtype == tf.int32 and label.dtype == tf.float32
    assert data.num_classes is None and data.eval.num_examples == 256
