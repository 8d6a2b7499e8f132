"""Built-in models, user builders, and runtime hyperparameters inside a model.

The builders below are the user's: plain Keras noise layers taking tuned rates, and an L2 factor
that Keras reads as a number (so it becomes structural). They run for real on the digits set.
"""

from __future__ import annotations

import contextlib
import io
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.train.test_trainer import make_trainer  # the digits trainer the trainer tests use
from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.results import load_best_model, load_final_model, load_records
from tpu_bo.train import models
from tpu_bo.train.layers import Dropout, RuntimeValue, RuntimeValueError


def _net(hp, input_shape, num_classes, dropout):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.GaussianNoise(hp["noise"]),
            keras.layers.Dense(32, activation="relu"),
            dropout(hp["dropout"]),
            keras.layers.Dense(num_classes),
        ]
    )


def keras_dropout(hp, input_shape, num_classes):
    """Keras's own GaussianNoise and Dropout with tuned ``noise`` and ``dropout``."""
    return _net(hp, input_shape, num_classes, keras.layers.Dropout)


def tpu_bo_dropout(hp, input_shape, num_classes):
    """The same net with tpu_bo's Dropout."""
    return _net(hp, input_shape, num_classes, Dropout)


def keras_l2(hp, input_shape, num_classes):
    """A tuned L2 factor, which Keras reads as a number, and a tuned Keras Dropout."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(
                32, activation="relu", kernel_regularizer=keras.regularizers.L2(hp["l2"])
            ),
            keras.layers.Dropout(hp["dropout"]),
            keras.layers.Dense(num_classes),
        ]
    )


def l2_when_wide(hp, input_shape, num_classes):
    """Reads ``l2`` as a number only when ``width`` is 32 (a structure the first build missed)."""
    regularizer = keras.regularizers.L2(hp["l2"]) if hp["width"] == 32 else None
    noise = keras.layers.GaussianNoise(hp["l2"])
    dense = keras.layers.Dense(hp["width"], activation="relu", kernel_regularizer=regularizer)
    return keras.Sequential(
        [keras.Input(input_shape), keras.layers.Flatten(), noise, dense, keras.layers.Dense(10)]
    )


def test_mnist_cnn_is_the_blog_network():
    model = models.mnist_cnn(models.HParams({"dense_units": 256}), (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert [model.layers[i].filters for i in (0, 1)] == [32, 64]
    assert model.layers[5].units == 256 and model.layers[-1].units == 10
    assert model.layers[3].rate == 0.25 and model.layers[6].rate == 0.5
    assert model.output_shape == (None, 10)
    assert model.count_params() == 320 + 18_496 + 9216 * 256 + 256 + 2570


def test_mlp_depth_and_width():
    model = models.mlp(models.HParams({"num_layers": 3, "hidden_units": 32}), (8, 8, 1), 10)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [32, 32, 32, 10]


def test_hparams_records_what_the_builder_reads():
    hp = models.HParams({"dense_units": 128, "typo_units": 3})
    models.mnist_cnn(hp, (28, 28, 1), 10)
    assert hp.requested == {"dense_units", "dropout_1", "dropout_2"}


def test_get_builder_resolves_names_and_imports():
    assert models.get_builder("mnist_cnn") is models.mnist_cnn
    from tests import custom_models

    assert models.get_builder("tests.custom_models:tiny") is custom_models.tiny


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("resnet9000", "unknown model 'resnet9000'"),
        ("no_such_pkg.mod:build", "cannot import module 'no_such_pkg.mod'"),
        ("tests.custom_models:missing", "has no function 'missing'"),
    ],
)
def test_bad_model_names(name, needle):
    with pytest.raises(ConfigError) as info:
        models.get_builder(name)
    assert info.value.flag == "model" and needle in info.value.message


def test_softmax_output_is_detected():
    from tests import custom_models

    hp = models.HParams({})
    assert models.outputs_probabilities(custom_models.tiny_softmax(hp, (4,), 3))
    assert not models.outputs_probabilities(custom_models.tiny(hp, (4,), 3))


def test_runtime_value_refuses_to_become_a_number():
    value = RuntimeValue("dropout", tf.Variable(0.5))
    for use in (float, int, bool, lambda v: v > 0, lambda v: v * 2):
        with pytest.raises(RuntimeValueError, match="'dropout' is a runtime value"):
            use(value)
    with pytest.raises(RuntimeValueError):  # keras' own Dropout, outside a study's build
        keras.layers.Dropout(value)


def test_dropout_follows_its_variable_without_retracing():
    rate = tf.Variable(0.0)
    layer = Dropout(RuntimeValue("dropout", rate), seed=1)
    traces = []

    @tf.function
    def apply(x):
        traces.append(1)
        return layer(x, training=True)

    x = tf.ones((1000, 100))
    np.testing.assert_array_equal(apply(x).numpy(), x.numpy())
    rate.assign(0.75)
    y = apply(x).numpy()
    assert abs((y == 0).mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[y != 0], 4.0)  # survivors scaled by 1 / (1 - rate)
    assert len(traces) == 1
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())


def test_dropout_accepts_a_plain_rate():
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        Dropout(1.0)
    y = Dropout(0.5, seed=0)(tf.ones((2000,)), training=True).numpy()
    assert abs((y == 0).mean() - 0.5) < 0.05


def scores(outcome):
    return [{k: v for k, v in h.items() if k != "steps_per_second"} for h in outcome.history]


def test_plain_keras_noise_layers_take_tuned_rates_in_one_program_as_tpu_bo_dropout_does():
    space = ["dropout:float:0:0.6", "noise:float:0:0.5"]
    plain = make_trainer(model=f"{__name__}:keras_dropout", space=space)
    ours = make_trainer(model=f"{__name__}:tpu_bo_dropout", space=space)
    points = [{"dropout": 0.0, "noise": 0.2}, {"dropout": 0.3, "noise": 0.0}, {"dropout": 0.55}]
    for seed, point in enumerate(points):
        point = {"noise": 0.1, **point}
        got, want = plain.run_trial(point, seed=seed), ours.run_trial(point, seed=seed)
        assert got.status == want.status == "ok"
        # The same trial, to the bit: weights, draws, rates (the clock aside).
        assert scores(got) == scores(want)
    assert (plain.traces, plain.reset_traces, plain.num_programs) == (2, 1, 1)
    tower = plain.model(points[0])
    assert [type(layer).__name__ for layer in tower.layers] == [
        "Flatten", "GaussianNoise", "Dense", "Dropout", "Dense"
    ]  # fmt: skip
    assert isinstance(tower.layers[3], keras.layers.Dropout)
    assert type(tower.layers[3]) is not keras.layers.Dropout  # its runtime twin
    host = plain.host_model({"dropout": 0.0, "noise": 0.25})  # a trial's saved or final model
    assert [type(layer) for layer in host.layers[1:4:2]] == [
        keras.layers.GaussianNoise,
        keras.layers.Dropout,
    ]
    assert (host.layers[1].stddev, host.layers[3].rate) == (0.25, 0.0)
    assert [v.shape for v in host.variables] == [v.shape for v in tower.variables]


@pytest.fixture(scope="module")
def l2_study(tmp_path_factory):
    """A 3-trial study of ``keras_l2`` ending in a final model, then resumed with the budget
    spent: (output_dir, first result, first stdout, second stdout)."""
    out = tmp_path_factory.mktemp("l2_study")
    config = Config(
        dataset="digits",
        model=f"{__name__}:keras_l2",
        space=["l2:log:1e-5:1e-2", "dropout:float:0:0.5"],
        epochs=1,
        init_points=2,
        n_iter=1,
        batch_size=64,
        final_epochs=1,
        parallel_trials=1,
        output_dir=str(out),
    )
    stdouts = []
    for _ in range(2):
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            result = run_study(config)
        stdouts.append(text.getvalue())
        if len(stdouts) == 1:
            first = result
    return out, first, *stdouts


LINE = (
    "  l2: log [1e-05, 0.01] structural (read as a number while the model was built, by "
    "keras.regularizers.L2): one program per value"
)


def test_a_parameter_keras_reads_as_a_number_becomes_structural_one_program_per_value(l2_study):
    out, result, stdout, again = l2_study
    assert LINE in stdout.splitlines() and "  dropout: float [0, 0.5] runtime" in stdout
    records = load_records(str(out))
    assert [r.status for r in records] == ["ok"] * 3
    assert len({r.params["l2"] for r in records}) == 3
    assert [r.traces for r in records] == [2, 4, 6]  # a program (train + eval) per value
    space = {p["name"]: p["role"] for p in json.loads((out / "config.json").read_text())["space"]}
    assert space == {"l2": "structural", "dropout": "runtime"}
    # A resumed session plans the same at its first build, so its identity is the study's.
    assert LINE in again.splitlines() and "budget is already spent" in again


def test_the_saved_and_exported_models_hold_plain_keras_layers_with_the_trials_numbers(l2_study):
    out, result, _, _ = l2_study
    best = result.best_params
    for model in (load_best_model(str(out)), load_final_model(str(out))):
        dense, dropout = model.layers[1], model.layers[2]
        assert type(dropout) is keras.layers.Dropout
        assert dropout.rate == pytest.approx(best["dropout"]) and type(dropout.rate) is float
        assert type(dense.kernel_regularizer) is keras.regularizers.L2
        assert dense.kernel_regularizer.l2 == pytest.approx(best["l2"])


def test_a_number_read_later_or_against_an_explicit_runtime_role_is_a_config_error():
    trainer = make_trainer(
        model=f"{__name__}:keras_l2", space=["l2:log:1e-5:1e-2:runtime", "dropout:float:0:0.5"]
    )
    with pytest.raises(ConfigError) as info:
        trainer.run_trial({"l2": 1e-3, "dropout": 0.1}, seed=0)
    assert info.value.flag == "param"
    assert "'l2' has the role runtime, but the model reads it as a number" in info.value.message
    assert "(by keras.regularizers.L2); drop ':runtime'" in info.value.message
    trainer = make_trainer(
        model=f"{__name__}:l2_when_wide", space=["width:choice:16,32", "l2:float:0:0.1"], epochs=1
    )
    assert trainer.run_trial({"width": 16, "l2": 0.05}, seed=0).status == "ok"
    assert trainer.space["l2"].resolved_role == "runtime"  # the first build read no number
    with pytest.raises(ConfigError) as info:
        trainer.run_trial({"width": 32, "l2": 0.05}, seed=0)
    assert info.value.flag == "param" and "when built for {'width': 32}" in info.value.message
    assert "--param=l2:...:structural" in info.value.message
