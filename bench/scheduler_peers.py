r"""The peers of ``bench/schedulers.py``, and what every method there shares.

The peers train the seed CNN (``tpu_bo.train.models.mnist_cnn``'s layers, built the plain Keras way)
one model at a time, on the arrays ``bench.baselines.load_arrays`` loads (the ones tpu_bo
reads), with one-hot labels: Keras 3's ``SparseCategoricalCrossentropy`` has no
``label_smoothing``, so the loss is ``CategoricalCrossentropy(from_logits=True,
label_smoothing=...)``, the same smoothing as tpu_bo's default head. RMSprop, as tpu_bo's
default; ``keras.utils.set_random_seed(seed)`` first; every epoch scored on the eval split.

* ``run_optuna``: ``TPESampler(seed)`` and ``HyperbandPruner(min_resource=1,
  max_resource=epochs, reduction_factor=3)``, asked and told here: a fresh model per trial, one
  ``fit`` whose callback reports every epoch's score and stops the fit when ``should_prune``.
* ``run_kerastuner``: ``keras_tuner.Hyperband(max_epochs=epochs, factor=3)``, as many
  iterations as the budget allows. A trial it continues into the next round starts from the
  weights of its best epoch so far, with fresh optimizer slots: the tuner loads its checkpoint
  into a model whose optimizer is not built yet, and Keras skips the optimizer's variables.

Each is charged one tower-epoch per epoch trained (a continued KerasTuner trial: its new epochs
only) and stopped by ``BudgetSpent`` (a ``BaseException``) at the budget's last epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench.baselines import load_arrays, make_dataset

SPACE = {  # name: (low, high, log scale)
    "learning_rate": (1e-4, 1e-2, True),
    "dropout_1": (0.0, 0.5, False),
    "dropout_2": (0.1, 0.6, False),
    "label_smoothing": (0.0, 0.2, False),
}


class BudgetSpent(BaseException):
    """The compute budget is spent (not an ``Exception``: KerasTuner and tpu_bo's loop catch
    those around a trial and would take it for a failed trial)."""


class Curve:
    """The epochs of one run as (compute, wall seconds since the run's start, accuracy)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.events: list[tuple[float, float, float]] = []

    def add(self, compute: float, accuracy: float) -> None:
        self.events.append((compute, time.perf_counter() - self.start, float(accuracy)))

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def peer_arrays(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Train and eval images with one-hot labels (for the label-smoothed categorical loss)."""
    import numpy as np

    x, y = load_arrays(args, args.train_split)
    x_eval, y_eval = load_arrays(args, args.eval_split)
    eye = np.eye(10, dtype=np.float32)
    return x, eye[y], x_eval, eye[y_eval]


def build_cnn(input_shape: Sequence[int], hp: dict[str, float]) -> Any:
    """``mnist_cnn``'s layers, compiled with the trial's learning rate and label smoothing."""
    import keras

    k = keras.layers
    stack = [keras.Input(tuple(input_shape)), k.Conv2D(32, 3, activation="relu")]
    stack += [k.Conv2D(64, 3, activation="relu"), k.MaxPooling2D(2), k.Dropout(hp["dropout_1"])]
    stack += [k.Flatten(), k.Dense(128, activation="relu"), k.Dropout(hp["dropout_2"]), k.Dense(10)]
    model = keras.Sequential(stack)
    loss = keras.losses.CategoricalCrossentropy(True, label_smoothing=hp["label_smoothing"])
    metric = keras.metrics.CategoricalAccuracy(name="accuracy")
    model.compile(keras.optimizers.RMSprop(hp["learning_rate"]), loss, metrics=[metric])
    return model


def epoch_callback(curve: Curve, budget: int, trial: Any = None) -> Any:
    """A Keras callback: records each epoch as one tower-epoch, reports it to an Optuna
    ``trial`` (stopping the fit when pruned), and raises ``BudgetSpent`` at the budget."""
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.scores: list[float] = []
            self.pruned = False

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            accuracy = float(logs["val_accuracy"])
            curve.add(len(curve.events) + 1, accuracy)
            self.scores.append(accuracy)
            if trial is not None:
                trial.report(accuracy, epoch + 1)
                self.pruned = self.model.stop_training = trial.should_prune()
            if len(curve.events) >= budget:
                raise BudgetSpent

    return EpochEnd()


def run_optuna(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Optuna's TPE + HyperbandPruner, asked and told here, one Keras model per trial."""
    import keras
    import optuna

    curve = Curve()
    keras.utils.set_random_seed(seed)
    x, y, x_eval, y_eval = peer_arrays(args)
    evaluation = make_dataset(x_eval, y_eval, args.batch_size, shuffle_seed=None)
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=args.epochs, reduction_factor=3
    )
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    fit = dict(validation_data=evaluation, epochs=args.epochs, verbose=0)
    with contextlib.suppress(BudgetSpent):
        while True:
            trial = study.ask()
            hp = {n: trial.suggest_float(n, lo, hi, log=log) for n, (lo, hi, log) in SPACE.items()}
            keras.backend.clear_session()
            model = build_cnn(x.shape[1:], hp)
            train = make_dataset(x, y, args.batch_size, shuffle_seed=seed * 10_000 + trial.number)
            callback = epoch_callback(curve, args.budget, trial)
            model.fit(train, callbacks=[callback], **fit)
            if callback.pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, max(callback.scores))  # its best epoch, as tpu_bo scores
    return {
        "events": curve.events,
        "wall_seconds_total": curve.elapsed(),
        "trials": len(study.trials),
    }


def run_kerastuner(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """KerasTuner's Hyperband over the same Keras CNN, stopped at the budget."""
    import keras
    import keras_tuner

    curve = Curve()
    keras.utils.set_random_seed(seed)
    x, y, x_eval, y_eval = peer_arrays(args)
    train = make_dataset(x, y, args.batch_size, shuffle_seed=seed)
    evaluation = make_dataset(x_eval, y_eval, args.batch_size, shuffle_seed=None)
    counter = epoch_callback(curve, args.budget)

    class HyperCNN(keras_tuner.HyperModel):
        def build(self, hp: Any) -> Any:
            scale = {True: "log", False: "linear"}
            values = {
                n: hp.Float(n, lo, hi, sampling=scale[log]) for n, (lo, hi, log) in SPACE.items()
            }
            return build_cnn(x.shape[1:], values)

        def fit(self, hp: Any, model: Any, *a: Any, **kw: Any) -> Any:
            # Added here: the tuner deep-copies the callbacks search() is given.
            return model.fit(*a, **{**kw, "callbacks": [*kw.get("callbacks", []), counter]})

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        tuner = keras_tuner.Hyperband(
            HyperCNN(),
            "val_accuracy",
            max_epochs=args.epochs,
            factor=3,
            seed=seed,
            hyperband_iterations=10_000,  # until the budget stops it
            directory=tmp,
            project_name="schedulers",
        )
        with contextlib.suppress(BudgetSpent):
            tuner.search(train, validation_data=evaluation, verbose=0)
    trials = len(tuner.oracle.trials)
    return {"events": curve.events, "wall_seconds_total": curve.elapsed(), "trials": trials}
