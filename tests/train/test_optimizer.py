"""The compiled optimizer is honoured: its class and config train every tower, run for real.

A compiled model's trials must train exactly as Keras's ``fit`` with the same optimizer over the
same batches (one replica, ``shuffle_buffer=1``, a train split of whole batches), and a tuned
optimizer hyperparameter must not cost a program per value.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import optuna
import pytest
import tensorflow as tf

from tpu_bo import run_study
from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.device.accelerator import get_strategy
from tpu_bo.errors import ConfigError
from tpu_bo.results import load_records
from tpu_bo.study.trials import record
from tpu_bo.train.program import RUNTIME_READS, OptimizerValue, runtime_reads
from tpu_bo.train.trainer import Trainer

RNG = np.random.default_rng(0)
X = RNG.normal(size=(320, 8)).astype("float32")
Y = RNG.integers(0, 3, 320).astype("int32")
TRAIN, BATCH, EPOCHS = 256, 32, 2


class ClippedAdam(keras.optimizers.Adam):
    """A user's optimizer: its own update step, which tpu_bo cannot vouch reads a variable."""

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(tf.clip_by_value(gradient, -1.0, 1.0), variable, learning_rate)


COMPILED = {  # Adam's learning-rate schedule is kept when the study does not tune the rate
    "adam": lambda: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, 10)),
    "adamw": lambda: keras.optimizers.AdamW(2e-3, beta_1=0.8),
    "sgd": lambda: keras.optimizers.SGD(5e-2, momentum=0.9, nesterov=True),
    "mine": lambda: ClippedAdam(1e-3),
}


def build(hp, input_shape, num_classes):
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Dense(num_classes)])
    model.compile(
        optimizer=COMPILED[hp["opt"]](),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


FIELDS = {
    "parallel_trials": 1,
    "model": build,
    "dataset": "python",
    "train_split": f"train[:{TRAIN}]",
    "eval_split": f"train[{TRAIN}:]",
    "test_split": "",
    "batch_size": BATCH,
    "shuffle_buffer": 1,
    "epochs": EPOCHS,
    "space": ["opt:choice:adam,adamw,sgd,mine", "weight_decay:log:1e-3:1e-1"],
}


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    """One trainer over every compiled optimizer (a program each)."""
    config = Config(**FIELDS).validate()
    strategy = get_strategy("cpu")
    return Trainer(config, strategy, load_datasets(config, strategy, data={"train": (X, Y)}))


def train(trainer: Trainer, params: dict) -> tuple[list[np.ndarray], list[np.ndarray], object]:
    """One trial from seed 3: its initial weights, its trained weights and its outcome."""
    pack = trainer.pack(params, 1)
    pack.load(0, params, seed=3)
    start = pack.weights(0)
    while pack.active:
        pack.run_epoch()
    return start, pack.weights(0), pack.result(0)


def fit(optimizer, start: list[np.ndarray]) -> list[np.ndarray]:
    """What Keras's ``fit`` gives from ``start`` over the same batches (eagerly: no trace)."""
    model = build({"opt": "adamw"}, (8,), 3)
    model.compile(optimizer=optimizer, loss=model.loss, run_eagerly=True)
    model.set_weights(start)
    model.fit(X[:TRAIN], Y[:TRAIN], batch_size=BATCH, shuffle=False, epochs=EPOCHS, verbose=0)
    return model.get_weights()


def assert_same(ours: list[np.ndarray], keras_weights: list[np.ndarray]) -> None:
    for a, b in zip(ours, keras_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd"])
def test_a_compiled_optimizer_trains_as_keras_fit_with_its_class_and_config(trainer, opt):
    start, trained, outcome = train(trainer, {"opt": opt, "weight_decay": 0.05})
    compiled = COMPILED[opt]()
    assert outcome.status == "ok" and outcome.optimizer == type(compiled).__name__
    config = {**compiled.get_config(), "weight_decay": 0.05}  # the trial's value
    assert_same(trained, fit(type(compiled).from_config(config), start))


def test_a_tuned_weight_decay_is_one_program_for_every_value(trainer):
    """Two decays on one AdamW program: no retrace, and each trains as its own AdamW."""
    first = train(trainer, {"opt": "adamw", "weight_decay": 1e-3})
    traces, programs = trainer.traces, trainer.num_programs
    start, trained, _ = train(trainer, {"opt": "adamw", "weight_decay": 1e-1})
    assert (trainer.traces, trainer.num_programs) == (traces, programs)
    assert_same(trained, fit(keras.optimizers.AdamW(2e-3, weight_decay=1e-1, beta_1=0.8), start))
    assert not np.allclose(trained[0], first[1][0], atol=1e-5)


def test_an_optimizer_that_cannot_read_a_variable_makes_the_parameter_structural(trainer, caplog):
    """At the first build the plan changes, said in the header's line; at a later structure
    (the shared trainer has built others) it is one sentence naming --param."""
    with pytest.raises(ConfigError, match=r"ClippedAdam does not read weight_decay from a var"):
        trainer.pack({"opt": "mine", "weight_decay": 0.01}, 1)
    space = ["weight_decay:log:1e-3:1e-1", "momentum:float:0:1"]
    config = Config(**{**FIELDS, "space": space}, fixed={"opt": "mine"}).validate()
    first = Trainer(config, trainer.strategy, trainer.datasets)
    with caplog.at_level(logging.INFO, logger="tpu_bo"):
        tower = first.program({"weight_decay": 0.1, "momentum": 0.5}, 1).towers[0]
    assert first.space["weight_decay"].resolved_role == "structural"
    assert first.config.space == first.space  # the study opens with this plan
    assert tower.optimizer.weight_decay == 0.1 and tower.optimizer_class == "ClippedAdam"
    assert first.space["weight_decay"].describe() == (
        "weight_decay: log [0.001, 0.1] structural (read as a number while the model was built, "
        "by the optimizer ClippedAdam): one program per value"
    )
    assert first.space["weight_decay"].describe() in caplog.text
    assert "momentum: ClippedAdam has no such hyperparameter; its trials ignore it" in caplog.text


def test_an_explicit_optimizer_replaces_the_compiled_one_with_one_line(trainer, caplog):
    config = Config(**FIELDS, optimizer="rmsprop").validate()
    explicit = Trainer(config, trainer.strategy, trainer.datasets)
    with caplog.at_level(logging.INFO, logger="tpu_bo"):
        start, trained, outcome = train(explicit, {"opt": "adam", "weight_decay": 0.05})
    lines = [r.getMessage() for r in caplog.records if "replaces" in r.getMessage()]
    assert lines == ["optimizer rmsprop (given explicitly) replaces the Adam model "
                     "tests.train.test_optimizer:build was compiled with"]  # fmt: skip
    assert outcome.optimizer == "RMSprop"
    assert_same(trained, fit(keras.optimizers.RMSprop(1e-3, weight_decay=0.05), start))


def test_the_trial_record_names_the_optimizer_and_a_study_tunes_decay_in_one_program(tmp_path):
    result = run_study(
        Config(
            **{
                **FIELDS,
                "epochs": 1,
                "space": ["weight_decay:log:1e-3:1e-1", "learning_rate:log:1e-3:1e-2"],
            },
            fixed={"opt": "adamw"},
            init_points=3,
            n_iter=0,
            sampler="random",
            output_dir=str(tmp_path),
        ),
        data=(X, Y),
    )
    assert len(result.trials) == 3 and result.traces == 2  # one train and one eval program
    assert [r.optimizer for r in result.trials] == ["AdamW"] * 3
    assert [r.optimizer for r in load_records(str(tmp_path))] == ["AdamW"] * 3
    older = optuna.trial.create_trial(params={}, distributions={}, value=0.5)
    assert record(older).optimizer is None  # a study written before the field: still read


CASES = {  # two trials' values of every hyperparameter the class reads at every step
    "Adam": [
        dict(beta_1=0.8, beta_2=0.99, epsilon=1e-3),
        dict(beta_1=0.5, beta_2=0.9, epsilon=1e-7),
    ],
    "Lion": [dict(beta_1=0.8, beta_2=0.99), dict(beta_1=0.5, beta_2=0.9)],
    "SGD": [dict(momentum=0.9), dict(momentum=0.0)],  # 0: plain SGD, through the momentum slot
    "RMSprop": [dict(momentum=0.9, epsilon=1e-3), dict(momentum=0.0, epsilon=1e-7)],
    "Adagrad": [dict(epsilon=1e-3), dict(epsilon=1e-7)],
}
for _name in ("AdamW", "Adamax", "Nadam", "Lamb"):
    CASES[_name] = CASES["Adam"]
CASES["Adadelta"] = CASES["Adagrad"]
CASES["Ftrl"] = [{}, {}]


def test_every_listed_keras_optimizer_reads_its_hyperparameters_at_every_step():
    """Each class of RUNTIME_READS, its hyperparameters held as OptimizerValues, trained in one
    trace at two trials' values, ends where the class built with the plain numbers ends."""
    assert sorted(CASES) == sorted(RUNTIME_READS)
    classes = [getattr(keras.optimizers, name) for name in CASES]
    for cls, trials in zip(classes, CASES.values(), strict=True):
        assert runtime_reads(cls(1e-2)) == {*trials[0], "weight_decay"}, cls.__name__
    ours, traces = _runtime_steps(classes, list(CASES.values()))
    assert traces == 1
    for cls, trials, weights in zip(classes, CASES.values(), ours, strict=True):
        for k, (values, decay) in enumerate(zip(trials, DECAYS, strict=True)):
            reference = cls(learning_rate=0.1, weight_decay=decay, **values)
            plain = keras.Variable(np.array(START, np.float32))
            for _ in range(3):
                reference.apply_gradients([(plain * 1.0 + GRADIENT, plain)])
            np.testing.assert_allclose(weights[k], plain.numpy(), rtol=1e-5, err_msg=cls.__name__)
    assert runtime_reads(ClippedAdam(1e-3)) == set()


START, GRADIENT, DECAYS = [1.0, -2.0], [0.5, -1.0], (0.1, 0.0)


def _runtime_steps(classes: list, cases: list[list[dict]]) -> tuple[list[list[np.ndarray]], int]:
    """Three steps of every class in one traced function, each class's hyperparameters (and a
    weight decay) read from variables, run at each of two trials' values: the weights after
    each trial, by class, and the function's traces."""
    names = [sorted({*trials[0], "weight_decay"}) for trials in cases]
    weights = [keras.Variable(np.zeros(2, np.float32)) for _ in classes]
    hp = [{n: tf.Variable(0.0) for n in ns} for ns in names]
    optimizers = [cls(learning_rate=0.1) for cls in classes]
    for optimizer, w, variables in zip(optimizers, weights, hp, strict=True):
        for n, variable in variables.items():
            setattr(optimizer, n, OptimizerValue(variable, top=0.9))
        optimizer.build([w])
    fresh = [[v.numpy() for v in o.variables] for o in optimizers]

    @tf.function
    def steps():
        for _ in range(3):
            for optimizer, w in zip(optimizers, weights, strict=True):
                optimizer.apply_gradients([(w * 1.0 + GRADIENT, w)])

    out: list[list[np.ndarray]] = [[] for _ in classes]
    for k, decay in enumerate(DECAYS):
        for i, optimizer in enumerate(optimizers):
            weights[i].assign(START)
            for variable, value in zip(optimizer.variables, fresh[i], strict=True):
                variable.assign(value)  # a new trial: the optimizer as built
            for n, variable in hp[i].items():
                variable.assign({**cases[i][k], "weight_decay": decay}[n])
        steps()
        for i, w in enumerate(weights):
            out[i].append(w.numpy())
    return out, steps.experimental_get_tracing_count()


def test_the_schedule_factor_is_keras_cosine_decay_after_its_warmup():
    from tpu_bo.train.program import schedule_factor

    cosine = keras.optimizers.schedules.CosineDecay(1.0, 20, alpha=0.1)
    for step in (0, 5, 19, 20, 30):
        ours = float(schedule_factor(step, 0.0, 0.1, "cosine", 20))
        assert ours == pytest.approx(float(cosine(step)), abs=1e-6)
    warm = [float(schedule_factor(s, 4.0, 0.0, "constant", 20)) for s in range(6)]
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert float(schedule_factor(20, 4.0, 0.2, "linear", 20)) == pytest.approx(0.2)


class _Scheduled(keras.optimizers.schedules.LearningRateSchedule):
    """tpu_bo's schedule as a Keras schedule, for ``fit``: the same maths at every step."""

    def __init__(self, warmup, floor):
        self.warmup, self.floor = warmup, floor

    def __call__(self, step):
        from tpu_bo.train.program import schedule_factor

        total = EPOCHS * (TRAIN // BATCH)
        return 2e-3 * schedule_factor(step, self.warmup, self.floor, "cosine", total)

    def get_config(self):
        return {"warmup": self.warmup, "floor": self.floor}


def test_a_warmup_and_a_decay_floor_are_tuned_in_one_program_and_train_as_keras_fit():
    fields = {**FIELDS, "space": ["warmup_steps:int:0:8", "decay_floor:float:0:0.5"],
              "fixed": {"opt": "adamw"}, "lr_schedule": "cosine"}  # fmt: skip
    config = Config(**fields).validate()
    assert {p.name: p.resolved_role for p in config.resolved_space().params} == {
        "warmup_steps": "runtime", "decay_floor": "runtime"
    }  # fmt: skip
    strategy = get_strategy("cpu")
    scheduled = Trainer(config, strategy, load_datasets(config, strategy, data={"train": (X, Y)}))
    for warmup, floor in [(6, 0.5), (0, 0.0)]:
        start, trained, outcome = train(scheduled, {"warmup_steps": warmup, "decay_floor": floor})
        assert outcome.status == "ok" and scheduled.traces == 2 and scheduled.num_programs == 1
        adamw = keras.optimizers.AdamW(_Scheduled(float(warmup), floor), beta_1=0.8)
        assert_same(trained, fit(adamw, start))
