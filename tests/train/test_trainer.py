"""The compile-once trainer, run for real on small data.

Most tests use the offline digits set with ``shuffle_buffer=1`` and a train split that is a
whole number of batches, so every trial sees the very same batches in the same order: then two
trials with the same seed and hyperparameters must produce the same numbers, wherever they run.
"""

from __future__ import annotations

import numpy as np
import pytest

from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.device.accelerator import get_strategy
from tpu_bo.errors import ConfigError
from tpu_bo.train.trainer import Trainer

BASE = {
    "dataset": "digits",
    "train_split": "train[:1280]",
    "eval_split": "train[1280:]",
    "batch_size": 128,
    "shuffle_buffer": 1,
    "epochs": 2,
}
P = {"dropout_2": 0.3, "learning_rate": 2e-3}


def make_trainer(replicas: int = 1, **fields) -> Trainer:
    config = Config(**{**BASE, **fields}).validate()
    strategy = get_strategy("cpu", cpu_replicas=replicas)
    return Trainer(config, strategy, load_datasets(config, strategy))


def history(result):
    return np.array([[h["loss"], h["val_loss"], h["val_accuracy"]] for h in result.history])


def test_runtime_trials_share_one_traced_program():
    trainer = make_trainer()
    first = trainer.run_trial(P, seed=1)
    assert first.status == "ok" and trainer.traces == 2  # one train + one eval program
    for i, params in enumerate(
        [{"dropout_2": 0.1, "learning_rate": 1e-4}, {"dropout_2": 0.5, "learning_rate": 1e-2}]
    ):
        assert trainer.run_trial(params, seed=2 + i).status == "ok"
    assert trainer.traces == 2 and trainer.num_programs == 1
    assert first.steps == 20 and len(first.history) == 2
    assert first.metrics["val_accuracy"] == max(h["val_accuracy"] for h in first.history)


def test_a_trial_is_reproducible_after_any_other_trial():
    """Weights, optimizer state, runtime values and dropout draws are all reset per trial."""
    alone = make_trainer().run_trial(P, seed=7)
    trainer = make_trainer()
    trainer.run_trial({"dropout_2": 0.5, "learning_rate": 1e-2}, seed=8)
    after = trainer.run_trial(P, seed=7)
    np.testing.assert_allclose(history(after), history(alone), rtol=1e-5)
    other_seed = trainer.run_trial(P, seed=9)
    assert not np.allclose(history(other_seed), history(alone), rtol=1e-5)


def test_learning_rate_is_live_in_the_compiled_program():
    trainer = make_trainer(epochs=3)
    frozen = trainer.run_trial({"dropout_2": 0.3, "learning_rate": 0.0}, seed=1)
    learned = trainer.run_trial({"dropout_2": 0.3, "learning_rate": 3e-3}, seed=1)
    assert frozen.history[0]["val_loss"] == pytest.approx(frozen.history[-1]["val_loss"], rel=1e-6)
    assert frozen.metrics["val_accuracy"] < 0.3 < 0.85 < learned.metrics["val_accuracy"]
    assert trainer.traces == 2


def test_structural_values_select_cached_programs():
    space = ["dense_units:choice:16,32", "learning_rate:log:1e-4:1e-2"]
    trainer = make_trainer(space=space, epochs=1)
    for units, traces in [(16, 2), (32, 4), (16, 4), (32, 4)]:
        trainer.run_trial({"dense_units": units, "learning_rate": 1e-3}, seed=1)
        assert trainer.traces == traces
    small = make_trainer(space=space, epochs=1, max_programs=1)
    for units in (16, 32, 16):
        small.run_trial({"dense_units": units, "learning_rate": 1e-3}, seed=1)
    assert small.traces == 6 and small.num_programs == 1  # evicted, so traced again


def test_two_replicas_train_like_one():
    """Loss scaling by the global batch: two replicas must follow one replica's trajectory."""
    fields = {
        "fixed": {"dropout_1": 0.0},
        "space": ["dropout_2:float:0:0.5", "learning_rate:log:1e-4:1e-2"],
    }
    params = {"dropout_2": 0.0, "learning_rate": 2e-3}
    one = make_trainer(1, **fields).run_trial(params, seed=3)
    two = make_trainer(2, **fields)
    result = two.run_trial(params, seed=3)
    np.testing.assert_allclose(history(result), history(one), rtol=2e-3, atol=2e-3)
    two.run_trial({"dropout_2": 0.2, "learning_rate": 1e-3}, seed=4)
    assert two.traces == 2


def test_steps_per_execution_does_not_change_the_result():
    a = make_trainer(steps_per_execution=1).run_trial(P, seed=5)
    b = make_trainer(steps_per_execution=4).run_trial(P, seed=5)  # 10 steps = 4 + 4 + 2
    np.testing.assert_allclose(history(a), history(b), rtol=1e-5)


def test_evaluation_matches_the_model_on_every_example():
    trainer = make_trainer()
    result = trainer.run_trial(P, seed=2)
    from tpu_bo.data.sources import digits_arrays

    images, labels = digits_arrays()["train"]
    x = images[1280:] / 255.0
    logits = trainer.model(P).predict(x.astype(np.float32), verbose=0)
    accuracy = (logits.argmax(-1) == labels[1280:]).mean()
    assert result.history[-1]["val_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_xla_on_two_replicas_keeps_static_shapes():
    trainer = make_trainer(2, jit_compile=True, epochs=3)
    for seed in (1, 2):
        result = trainer.run_trial(P, seed=seed)
        assert result.status == "ok" and result.metrics["val_accuracy"] > 0.8
    assert trainer.traces == 2


def test_mixed_precision_trains_in_bfloat16_and_leaves_the_global_policy_alone(tmp_path):
    """The policy is set only while models are built: the caller's global policy survives."""
    import keras

    keras.config.set_dtype_policy("mixed_float16")  # anything but what a trainer sets
    try:
        trainer = make_trainer(mixed_precision=True, epochs=3)
        result = trainer.run_trial(P, seed=1)
        trainer.save_weights(P, trainer.pack(P).weights(0), str(tmp_path / "w.weights.h5"))
        full = make_trainer(epochs=1)
        assert full.run_trial(P, seed=1).status == "ok"
        assert keras.config.dtype_policy().name == "mixed_float16"
    finally:
        keras.config.set_dtype_policy("float32")
    assert result.status == "ok" and result.metrics["val_accuracy"] > 0.8
    model = trainer.model(P)
    assert model.layers[0].compute_dtype == "bfloat16"
    assert model.layers[-1].compute_dtype == "float32"
    assert full.model(P).layers[0].compute_dtype == "float32"


def test_divergent_trial_fails_and_the_study_can_go_on():
    fields = {"optimizer": "sgd", "space": ["learning_rate:log:1e-4:1e9"]}
    trainer = make_trainer(**fields)
    # 1e6 overflows the loss to NaN; a larger step (1e7+) kills every ReLU in the first step
    # instead, leaving a huge but finite loss.
    bad = trainer.run_trial({"learning_rate": 1e6}, seed=1)
    assert bad.status == "failed" and "loss became" in bad.error
    good = trainer.run_trial({"learning_rate": 0.1}, seed=1)
    assert good.status == "ok"
    # No NaN leaks into the next trial: it matches the same trial run in a fresh trainer.
    fresh = make_trainer(**fields).run_trial({"learning_rate": 0.1}, seed=1)
    np.testing.assert_allclose(history(good), history(fresh), rtol=1e-5)


def test_softmax_models_train_too():
    trainer = make_trainer(
        model="tests.custom_models:tiny_softmax", epochs=5, space=["learning_rate:log:1e-4:1e-1"]
    )
    result = trainer.run_trial({"learning_rate": 1e-2}, seed=1)
    assert result.metrics["val_accuracy"] > 0.8


@pytest.mark.parametrize(
    ("fields", "flag", "needle"),
    [
        ({"space": ["dropuot_2:float:0:0.5"]}, "param", "never reads hyperparameter 'dropuot_2'"),
        ({"fixed": {"dense_unit": 64}}, "fixed", "never reads hyperparameter 'dense_unit'"),
        (
            {
                "model": "tests.custom_models:bakes_a_runtime_value",
                "space": ["dropout:float:0:0.5:runtime"],  # without :runtime, it is structural
            },
            "param",
            "'dropout' has the role runtime",
        ),
        ({"model": "tests.custom_models:not_a_model"}, "model", "returned str, not a keras.Model"),
    ],
)
def test_model_mistakes_are_config_errors(fields, flag, needle):
    trainer = make_trainer(**fields)
    params = {p.name: p.low for p in trainer.space.params}
    with pytest.raises(ConfigError) as info:
        trainer.run_trial(params, seed=1)
    assert info.value.flag == flag and needle in info.value.message


def test_out_of_memory_is_a_failed_trial():
    space = ["width:choice:16,4000000000000", "learning_rate:log:1e-4:1e-2"]
    trainer = make_trainer(model="tests.custom_models:tiny", space=space)
    oom = trainer.run_trial({"width": 4_000_000_000_000, "learning_rate": 1e-3}, seed=1)
    assert oom.status == "failed" and oom.error.startswith("out of memory: ")
    assert oom.history == [] and "a pack of" not in oom.error
    assert trainer.run_trial({"width": 16, "learning_rate": 1e-3}, seed=1).status == "ok"
    assert trainer.num_programs == 1


def test_out_of_memory_while_training_fails_the_whole_pack_and_drops_its_program(monkeypatch):
    import tensorflow as tf

    from tpu_bo.train.program import Program

    trainer = make_trainer(model="tests.custom_models:tiny", space=["dropout:float:0:0.5"])
    points = [{"dropout": 0.1}, {"dropout": 0.2}]
    pack = trainer.pack(points[0], width=3)
    for k, point in enumerate(points):
        pack.load(k, point, seed=k)
    assert [r.done for r in pack.run_epoch()] == [False, False]

    def exhausted(self, iterator, steps):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating\nthe details")

    monkeypatch.setattr(Program, "train", exhausted)
    results = pack.run_epoch()
    monkeypatch.undo()
    reason = "out of memory: OOM when allocating (a pack of 3; a smaller --parallel_trials may fit)"
    assert [(r.slot, r.epoch, r.metrics, r.error, r.done) for r in results] == [
        (0, 2, None, reason, True),
        (1, 2, None, reason, True),
    ]
    assert [(pack.result(k).status, len(pack.result(k).history)) for k in (0, 1)] == [
        ("failed", 1),
        ("failed", 1),
    ]
    assert pack.broken and pack.active == [] and trainer.num_programs == 0
    with pytest.raises(RuntimeError, match="out of memory"):
        pack.load(0, points[0], seed=0)
    assert trainer.run_trial(points[0], seed=0, width=3).status == "ok"  # rebuilt
    assert trainer.traces == 4


def _xla_must_compile(trainer) -> bool:
    """Whether the traced train program holds a function marked for XLA (jit_compile=True)."""
    import tensorflow as tf

    program = next(iter(trainer._programs.values()))  # a tpu_bo.train.program.Program
    concrete = program.train_fn.get_concrete_function(
        trainer.datasets.train_iterator, tf.constant(1)
    )
    return "_XlaMustCompile" in str(concrete.graph.as_graph_def())


@pytest.mark.parametrize("kind", ["cpu", "tpu"])
def test_jit_compile_is_never_nested_in_a_tpu_program(monkeypatch, caplog, kind):
    """On a TPU the whole program is XLA-compiled, so --jit_compile is ignored, with a line."""
    import tpu_bo.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "accelerator_kind", lambda strategy: kind)
    with caplog.at_level("INFO", logger="tpu_bo"):
        trainer = make_trainer(jit_compile=True, epochs=1)
    assert trainer.run_trial(P, seed=1).status == "ok"
    assert trainer.jit_compile is (kind == "cpu")
    assert _xla_must_compile(trainer) is (kind == "cpu")
    ignored = [r for r in caplog.records if "--jit_compile is ignored on a TPU" in r.message]
    assert len(ignored) == (kind == "tpu")
