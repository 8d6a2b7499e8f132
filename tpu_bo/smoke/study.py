"""The smoke checks of what a real study does beyond one trial, on the accelerator.

Each runs the study's own code on small data (the digits of :data:`CHECK_DATA`), reusing
the programs of :class:`tpu_bo.smoke.device.Runs` where it can, since on a TPU every new
program is a compile:

* ``compiled head``: a model compiled with its own loss and a lazily built metric (Keras's
  ``F1Score`` makes its variables at its first update) scores in the program what Keras's
  ``evaluate`` scores with the same weights.
* ``checkpoint resume``: a trial stopped after epoch 1, its state written to and read from an
  in-flight checkpoint file (``OutputDir.save_checkpoint``), and resumed ends where the
  uninterrupted trial ends.
* ``two structures``: a study space with a structural value: two programs, each traced once
  (train and eval), however many trials each runs.
* ``final model``: ``--final_epochs``' retrain (:func:`tpu_bo.session.final.train_final`),
  exported; the reloaded ``model.keras`` and ``saved_model`` score what the retrain scored.
* ``host fallback``: a model whose initializer cannot be traced gets its fresh weights on the
  host, with one warning, and a trial run after another still gives its history.
* ``round trips``: the host round-trips of one epoch boundary of a pack of two (evaluation,
  one refill, the in-flight checkpoints), counted by :class:`tpu_bo.train.program.HostTrips`.

Out of memory is not checked: a probe needs a size that fills the chip's memory, and after an
allocation or compile failure a remote or pod TPU may not recover (TensorFlow's own TPU tests
skip that recovery for a non-local TPU: "Recovery fails for non-local TPU"), so the probe
could leave the user's TPU unusable. tests/train/test_trainer.py covers the out-of-memory path
on the CPU.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.data.sources import digits_arrays
from tpu_bo.records import Status, TrialRecord
from tpu_bo.report.console import Reporter
from tpu_bo.session.final import train_final
from tpu_bo.study.output_dir import FINAL_MODEL, FINAL_SAVED_MODEL, OutputDir
from tpu_bo.train.program import host_values
from tpu_bo.train.trainer import Trainer

STRUCTURES = ["dense_units:choice:16,32", "dropout_2:float:0:0.5", "learning_rate:log:1e-4:1e-2"]


def compiled_model(hp: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A small classifier of one-hot labels, compiled with its own loss and metrics."""
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),  # one-hot labels: no num_classes
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="categorical_crossentropy",
        metrics=["categorical_accuracy", keras.metrics.F1Score(average="macro", name="f1")],
    )
    return model


def eager_initializer_model(hp: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """A small classifier whose first kernel's initializer runs only eagerly (NumPy)."""

    def eager_only(shape: Any, dtype: Any = None) -> np.ndarray:
        scale = float(tf.fill([], 0.05).numpy())  # .numpy() fails while tracing
        # NumPy's global generator, which keras.utils.set_random_seed seeds (the host reset).
        return np.random.normal(0, scale, shape).astype("float32")

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", kernel_initializer=eager_only),
            keras.layers.Dense(num_classes),
        ]
    )


class StudyChecks:
    """The checks of a real study, sharing :class:`tpu_bo.smoke.device.Runs`' trials."""

    def __init__(self, runs: Any) -> None:
        self.runs = runs
        self.strategy, self.config = runs.strategy, runs.config
        self.points, self.seeds = runs.points, runs.seeds

    def compiled_head(self) -> tuple[bool, str]:
        arrays = digits_arrays()["train"]
        x = arrays[0].astype(np.float32) / 255.0
        y = np.eye(10, dtype=np.float32)[arrays[1]]
        data = {"train": (x[:1280], y[:1280]), "validation": (x[1280:], y[1280:])}
        config = Config(
            model=compiled_model,
            batch_size=128,
            epochs=1,
            mixed_precision=self.config.mixed_precision,
            space=["learning_rate:log:1e-3:3e-2"],
            train_split="train",
            eval_split="validation",
            test_split="",
        ).validate()
        datasets = load_datasets(config, self.strategy, data=data)
        trainer = Trainer(config, self.strategy, datasets)
        params = {"learning_rate": 1e-2}
        program = trainer.program(params, 1)
        program.start(0, params, self.seeds[0])
        program.train(datasets.train_iterator, datasets.steps_per_epoch)
        ours = program.evaluate(datasets.eval)[0]
        model = trainer.host_model(params)
        for variable, value in zip(
            model.variables, host_values(program.towers[0].model.variables), strict=True
        ):
            variable.assign(value)
        x_val, y_val = data["validation"]
        keras_scores = model.evaluate(
            x_val, y_val, batch_size=len(x_val), return_dict=True, verbose=0
        )
        names = ["loss", "categorical_accuracy", "f1"]
        theirs = {n: float(np.reshape(keras_scores[n], [])) for n in names}
        ok = all(self.runs.same_score(ours[n], theirs[n]) for n in names)
        shown = ", ".join(f"{n} {ours[n]:.4f} vs {theirs[n]:.4f}" for n in names)
        return ok, f"program vs Keras evaluate, same weights: {shown}"

    def checkpoint_resume(self) -> tuple[bool, str]:
        config = self.runs.config_with(epochs=2)
        trainer = Trainer(config, self.strategy, self.runs.datasets())
        point, seed = self.points[1], self.seeds[1]
        pack = trainer.pack(point, 1)
        pack.load(0, point, seed=seed)
        while pack.active:
            pack.run_epoch()
        whole, whole_weights = pack.result(0), pack.weights(0)
        pack = trainer.pack(point, 1)
        pack.load(0, point, seed=seed)
        pack.run_epoch()
        files = OutputDir(os.path.join(self.runs.workdir, "resume"))
        name = files.save_checkpoint(0, pack.state(0))
        state = files.load_checkpoint(name)
        pack.stop(0)  # as a kill after the checkpoint would leave it
        resumed_pack = trainer.pack(point, 1)
        resumed_pack.load(0, point, seed=seed + 1, state=state)  # the seed is not used
        while resumed_pack.active:
            resumed_pack.run_epoch()
        resumed = resumed_pack.result(0)
        a, b = _accuracies(whole), _accuracies(resumed)
        ok = (
            resumed.status == whole.status == "ok"
            and resumed.resumed_from_epoch == 1
            and self.runs.close(resumed_pack.weights(0), whole_weights)
            and all(self.runs.same_score(x, y) for x, y in zip(a, b, strict=True))
        )
        return ok, (
            f"stopped after epoch 1, checkpoint file written and read, resumed from epoch "
            f"{resumed.resumed_from_epoch}: val_accuracy {_join(b)} vs {_join(a)} uninterrupted"
        )

    def two_structures(self) -> tuple[bool, str]:
        config = self.runs.config_with(space=STRUCTURES)
        trainer = Trainer(config, self.strategy, self.runs.datasets())
        traces = []
        for units, seed in ((16, 1), (32, 2), (16, 3), (32, 4)):
            point = {"dense_units": units, "dropout_2": 0.2, "learning_rate": 3e-3}
            outcome = trainer.run_trial(point, seed=seed)
            if outcome.status != "ok":
                return False, f"dense_units={units}: {outcome.status} {outcome.error}"
            traces.append(trainer.traces)
        ok = traces == [2, 4, 4, 4] and trainer.num_programs == 2 and trainer.reset_traces == 2
        return ok, (
            f"dense_units 16, 32, 16, 32: {trainer.num_programs} programs, traces after each "
            f"trial {traces} (train + eval), {trainer.reset_traces} reset trace(s)"
        )

    def final_model(self) -> tuple[bool, str]:
        trainer, datasets = self.runs.trainer(), self.runs.datasets()
        point, seed = self.points[1], self.seeds[1]
        solo = self.runs.solo(1)
        config = dataclasses.replace(self.config, final_epochs=self.config.epochs)
        record = TrialRecord(1, Status.OK, dict(point), target=None, seed=seed)
        files = OutputDir(os.path.join(self.runs.workdir, "final_study"))
        result = _retrain(config, trainer, datasets, record, files)
        if result["status"] != "ok":
            return False, f"the final run failed: {result['error']}"
        trained = result["history"][-1]["val_accuracy"]
        images, labels = self.runs.eval_digits()
        # As tpu_bo.results.load_final_model reads it (a local file here).
        model = keras.models.load_model(files.path(FINAL_MODEL))
        keras_accuracy = _accuracy(model.predict(images, batch_size=256, verbose=0), labels)
        loaded = tf.saved_model.load(files.path(FINAL_SAVED_MODEL))  # kept: .serve reads it
        served = loaded.serve(tf.constant(images))
        saved_accuracy = _accuracy(np.asarray(served), labels)
        retrain = solo.history[-1]["val_accuracy"]
        ok = all(
            self.runs.same_score(v, trained) for v in (keras_accuracy, saved_accuracy, retrain)
        )
        return ok, (
            f"retrained from its seed: val_accuracy {trained:.4f} (the trial: {retrain:.4f}); "
            f"reloaded: {keras_accuracy:.4f} model.keras, {saved_accuracy:.4f} saved_model"
        )

    def host_fallback(self) -> tuple[bool, str]:
        config = self.runs.config_with(
            model=eager_initializer_model, space=["learning_rate:log:1e-4:1e-2"]
        )
        trainer = Trainer(config, self.strategy, self.runs.datasets())
        warnings = _Warnings()
        logger = logging.getLogger("tpu_bo")
        logger.addHandler(warnings)
        try:
            first = trainer.run_trial({"learning_rate": 3e-3}, seed=5)
            trainer.run_trial({"learning_rate": 1e-3}, seed=6)
            again = trainer.run_trial({"learning_rate": 3e-3}, seed=5)
        finally:
            logger.removeHandler(warnings)
        said = [m for m in warnings.messages if "drawn on the host" in m]
        a, b = _accuracies(first), _accuracies(again)
        on_host = all(p.reset_fn is None for p in trainer._programs.values())
        ok = (
            len(said) == 1
            and on_host
            and first.status == again.status == "ok"
            and all(self.runs.same_score(x, y) for x, y in zip(a, b, strict=True))
        )
        return ok, (
            f"{len(said)} warning ({said[0] if said else 'none'}); val_accuracy {_join(a)}, "
            f"after another trial {_join(b)}"
        )

    def round_trips(self) -> tuple[None, str]:
        trainer = self.runs.trainer()
        trips, per_call = trainer.trips, trainer.config.steps_per_execution
        train_calls = -(-trainer.datasets.steps_per_epoch // per_call)
        pack = trainer.pack(self.points[0], 2)
        for k in range(2):
            pack.load(k, self.points[k], seed=self.seeds[k])
        c0 = trips.counts()
        pack.run_epoch()  # both trials' last epoch: evaluated, then frozen
        c1 = trips.counts()
        pack.load(0, self.points[1], seed=self.seeds[1])  # a refill
        c2 = trips.counts()
        pack.state(0)  # the in-flight checkpoint of a running trial
        c3 = trips.counts()
        pack.run_epoch()  # starts by keeping the ended trial's weights on the host
        c4 = trips.counts()
        first, second = _minus(c1, c0), _minus(c4, c3)
        evaluation, freezes = first[0] - train_calls + first[1], first[2]
        kept = second[1] - first[1]  # both evaluations read the same metric results
        refill, checkpoint = sum(_minus(c2, c1)), sum(_minus(c3, c2))
        total = evaluation + freezes + kept + refill + checkpoint
        return None, (
            f"{total} host round-trips at an epoch boundary of a pack of 2, besides its "
            f"{train_calls} training call(s) of up to {per_call} steps: evaluation {evaluation}, "
            f"freezing 2 ended trials {freezes}, keeping one's weights {kept}, a refill "
            f"{refill}, a checkpoint of one running trial {checkpoint} (one per variable)"
        )


def _retrain(
    config: Config, trainer: Trainer, datasets: Any, record: TrialRecord, files: OutputDir
) -> dict[str, Any]:
    """:func:`tpu_bo.session.final.train_final`, its lines kept out of the report."""
    reporter = Reporter([], total=1, stream=io.StringIO())
    return train_final(config, trainer, datasets, record, files, reporter)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _minus(a: tuple[int, ...], b: tuple[int, ...]) -> list[int]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _accuracies(outcome: Any) -> list[float]:
    return [h["val_accuracy"] for h in outcome.history]


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def _join(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)
