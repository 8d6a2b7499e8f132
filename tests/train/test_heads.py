"""Heads: the default classification loss, and a compiled model's own loss and metrics.

Every Keras metric that fits a task is scored as Keras's ``evaluate`` scores the same weights:
one program per task (``tests.metric_models``: a regression with R2Score and the errors, a
two-output classifier with the F-scores, AUC, IoUs...), two towers over two replicas, shared
by the parametrised comparisons; and the direction of each comes from its metric object.
"""

from __future__ import annotations

import json
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import metric_models
from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.device.accelerator import get_strategy
from tpu_bo.errors import ConfigError
from tpu_bo.train import heads
from tpu_bo.train.program import Tower, host_values
from tpu_bo.train.trainer import Trainer


def test_the_default_loss_is_keras_cross_entropy_with_label_smoothing():
    logits = tf.constant([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    labels = tf.constant([0, 2])
    plain = heads.default_loss(logits, labels, None, probabilities=False)
    expected = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(plain, expected, rtol=1e-6)
    smoothed = heads.default_loss(logits, labels[:, None], tf.constant(0.1), probabilities=False)
    one_hot = tf.one_hot(labels, 3)
    expected = keras.losses.categorical_crossentropy(
        one_hot, logits, from_logits=True, label_smoothing=0.1
    )
    np.testing.assert_allclose(smoothed, expected, rtol=1e-5)
    probs = heads.default_loss(tf.nn.softmax(logits), labels, None, probabilities=True)
    np.testing.assert_allclose(probs, plain, rtol=1e-5)


def compiled_tower(**compile_args):
    tower = Tower(["learning_rate", "label_smoothing"])
    tower.model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    if compile_args:
        tower.model.compile(**compile_args)
    return tower


ZEROS = (tf.zeros((2, 2)), tf.zeros((2,)))


def test_a_compiled_model_keeps_its_loss_and_metrics_and_honours_the_padding_weight():
    tower = compiled_tower(loss="mse", metrics=["mae"])
    heads.attach(tower, ZEROS, name="m", smoothing=False)
    assert tower.compiled and heads.metric_names(tower) == ["mae"]
    y, outputs = tf.constant([1.0, 3.0, 100.0]), tf.zeros((3, 1))
    heads.update_compiled_metrics(tower.model, y, outputs, tf.constant([1.0, 1.0, 0.0]))
    assert float(heads.compiled_metrics(tower)["mae"]) == pytest.approx(2.0)  # not 104 / 3
    heads.reset_compiled_metrics([tower])
    assert float(heads.compiled_metrics(tower)["mae"]) == 0.0
    plain = compiled_tower()
    heads.attach(plain, ZEROS, name="m", smoothing=True)
    assert not plain.compiled and heads.metric_names(plain) == ["accuracy"]


def test_a_compiled_head_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="compiled its model without a loss"):
        heads.attach(compiled_tower(metrics=["mae"]), ZEROS, name="m", smoothing=False)
    with pytest.raises(ConfigError) as error:
        heads.attach(compiled_tower(loss="mse"), ZEROS, name="m", smoothing=True)
    assert error.value.flag == "param" and "label_smoothing" in error.value.message


def test_labels_that_do_not_fit_the_default_head_name_label():
    tower = compiled_tower()
    with pytest.raises(ConfigError) as error:
        heads.check_labels(tower, ZEROS, tf.TensorSpec([], tf.float32), None, name="m",
                           host_model=lambda: None)  # fmt: skip
    assert error.value.flag == "label" and "labels (float32[])" in error.value.message
    assert heads.describe({"a": tf.TensorSpec([3], tf.int32)}) == "{'a': 'int32[3]'}"


def metric_variables(tower):
    return [v for m in tower.model._compile_metrics.metrics for v in m.variables]


class Scored:
    """One task's program of two towers, trained an epoch from two seeds, scored by the program
    and by Keras's ``evaluate`` of each tower's weights on the same validation examples."""

    def __init__(self, model: str, data: dict, strategy: Any = None) -> None:
        config = Config(
            model=f"tests.metric_models:{model}",
            batch_size=32,  # the validation split's last batch is padded
            epochs=1,
            cpu_replicas=2,
            accelerator="cpu",
            space=["learning_rate:log:1e-3:3e-2"],
            **{"train_split": "train", "eval_split": "validation", "test_split": ""},
        ).validate()
        strategy = strategy or get_strategy("cpu", cpu_replicas=2)
        datasets = load_datasets(config, strategy, data=data)
        self.trainer = Trainer(config, strategy, datasets)
        params = {"learning_rate": 1e-2}
        self.program = self.trainer.program(params, 2)
        self.built = [[id(v) for v in metric_variables(t)] for t in self.program.towers]
        for slot, seed in enumerate((1, 2)):
            self.program.start(slot, params, seed)
        self.program.train(datasets.train_iterator, datasets.steps_per_epoch)
        self.ours = self.program.evaluate(datasets.eval)
        x, y = data["validation"]
        model = self.trainer.host_model(params)
        self.keras = []
        for k, tower in enumerate(self.program.towers):
            for variable, value in zip(model.variables, host_values(tower.model.variables),
                                       strict=True):  # fmt: skip
                variable.assign(value)
            if k == 0:  # Keras's first evaluate does not reset a metric object that another
                # model has updated (the builder shares two_heads's module-level ones)
                model.evaluate(x, y, batch_size=len(x), verbose=0)
            scores = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
            self.keras.append({k: float(np.reshape(v, [])) for k, v in scores.items()})


@pytest.fixture(scope="module")
def regression() -> Scored:
    return Scored("regressor", metric_models.regression_data())


@pytest.fixture(scope="module")
def classification() -> Scored:
    return Scored("two_heads", metric_models.digits_data())


REGRESSION = ["loss", *metric_models.REGRESSION, "weighted_mae"]
CLASSIFICATION = ["loss"] + [
    f"{output}_{metric if isinstance(metric, str) else metric.name}"
    for output, metrics in (("digit", metric_models.DIGIT), ("even", metric_models.EVEN))
    for metric in metrics
]


def assert_scored_as_keras(task: Scored, name: str) -> None:
    for ours, theirs in zip(task.ours, task.keras, strict=True):
        assert ours[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-5), name


@pytest.mark.parametrize("name", REGRESSION)
def test_every_regression_metric_is_scored_as_keras_evaluate_scores_it(regression, name):
    assert_scored_as_keras(regression, name)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_every_classification_metric_is_scored_as_keras_evaluate_scores_it(classification, name):
    assert_scored_as_keras(classification, name)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_metric_variables_are_made_once_per_tower_when_the_program_is_built(task, request):
    scored = request.getfixturevalue(task)
    names = REGRESSION if task == "regression" else CLASSIFICATION
    assert set(scored.program.metric_names) == set(names) - {"loss"}
    first, second = scored.built
    assert first and not set(first) & set(second)  # each tower its own state...
    differ = [n for n in names if scored.ours[0][n] != scored.ours[1][n]]
    assert len(differ) > 0.7 * len(names), differ  # ...and its own scores
    # No variable was made while the programs traced: they are the ones made at the build.
    assert [[id(v) for v in metric_variables(t)] for t in scored.program.towers] == scored.built
    # The user's module-level metric objects stay outside every program.
    held = {id(m) for t in scored.program.towers for m in t.model._compile_metrics.metrics}
    assert not held & {id(m) for m in metric_models.DIGIT + metric_models.EVEN}


def test_each_metric_object_says_which_way_it_improves(regression, classification):
    up = {"r2", "r2_score", "cosine_similarity"}
    assert heads.metric_directions(regression.program.towers[0]) == {
        n: n in up for n in REGRESSION if n != "loss"
    }
    down = {"categorical_crossentropy", "kl_divergence", "categorical_hinge", "false_negatives",
            "binary_crossentropy", "hinge"}  # fmt: skip
    directions = heads.metric_directions(classification.program.towers[0])
    assert directions == {n: n.split("_", 1)[1] not in down for n in CLASSIFICATION if n != "loss"}


def regression_study(tmp_path, **fields):
    data = metric_models.regression_data()
    return run_study(
        data=data["train"],
        validation_data=data["validation"],
        batch_size=32,
        epochs=1,
        init_points=2,
        n_iter=1,
        accelerator="cpu",
        space=["learning_rate:log:1e-3:3e-2"],
        output_dir=str(tmp_path),
        **fields,
    )


def test_an_objective_named_by_the_user_is_maximised_as_its_metric_says(tmp_path):
    result = regression_study(tmp_path, model="tests.metric_models:regressor", objective="val_r2")
    assert result.counts == {"ok": 3}
    assert result.best_target == max(r.target for r in result.trials)  # R2Score: up
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["objective"].startswith("val_r2 (max")


def regularized(hp, input_shape, num_classes):
    """A compiled model with a kernel regularizer: its loss reads a variable."""
    import keras

    model = keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3)),
        keras.layers.Dense(num_classes),
    ])  # fmt: skip
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_a_compiled_model_with_a_regularizer_passes_the_label_check_and_trains(tmp_path):
    import numpy as np

    from tpu_bo import run_study

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 4)).astype("float32"), rng.integers(0, 3, 256).astype("int32")
    result = run_study(data=(x, y), model=regularized, space={"learning_rate": ("log", 1e-3, 1e-2)},
                       epochs=1, init_points=2, n_iter=0, batch_size=32,
                       output_dir=str(tmp_path))  # fmt: skip
    assert [t.status.value for t in result.trials] == ["ok", "ok"]
