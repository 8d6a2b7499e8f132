r"""The baselines of ``bench/overhead.py`` and ``bench/memory.py``: the blog recipe and KerasTuner.

Both train the seed CNN (``tpu_bo.models.mnist_cnn``'s layers, built the plain Keras way) on
NumPy arrays loaded once, one fresh model per trial, and return their raw figures in the form
``bench.overhead.summarise`` reads: ``wall_seconds``, ``traces`` and one dict per trial
(``trial``, numbered from 0 like tpu_bo's, ``target``, ``params``, ``seconds``,
``step_seconds``, ``trace_setup_seconds``, ``rss_mib``). See ``bench/overhead.py``'s docstring
for what each method does and how each figure is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from typing import Any

from bench.common import rss_mib

BATCH = 128
BOUNDS = {"dropout_2": (0.1, 0.5), "learning_rate": (1e-4, 1e-2)}


def load_arrays(data_dir: str, split: str) -> tuple[Any, Any]:
    """A split of MNIST as NumPy arrays (uint8 images, int labels), as the blog loads it."""
    import tensorflow_datasets as tfds

    ds = tfds.load("mnist", split=split, data_dir=data_dir, download=False, as_supervised=True)
    images, labels = tfds.as_numpy(ds.batch(100_000).get_single_element())
    return images, labels


def make_dataset(images: Any, labels: Any, *, shuffle_seed: int | None) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed)
    return (
        ds.batch(BATCH)
        .map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def build_cnn(dropout_2: float, learning_rate: float, jit_compile: bool, dense_units: int = 128):
    """The seed CNN, built and compiled the plain Keras way."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Dropout(0.25),
            keras.layers.Flatten(),
            keras.layers.Dense(dense_units, activation="relu"),
            keras.layers.Dropout(dropout_2),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


class StepTimer:
    """Times every train and eval batch of ``fit``/``evaluate`` (steps_per_execution is 1).

    The time a call spends beyond (number of batches x its median batch) is its tracing and
    setup: the first batch traces the step function, a smaller last batch may retrace it.
    """

    def __init__(self) -> None:
        self.setup_seconds = 0.0

    def callback(self) -> Any:
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.times: dict[str, list[float]] = {}

            def _end(self, kind: str) -> None:
                times = self.times.pop(kind, [])
                gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
                if gaps:
                    timer.setup_seconds += sum(gaps) - len(gaps) * statistics.median(gaps)

            def on_train_begin(self, logs: Any = None) -> None:
                self.times["train"] = [time.perf_counter()]

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                self.times["train"].append(time.perf_counter())

            def on_train_end(self, logs: Any = None) -> None:
                self._end("train")

            def on_test_begin(self, logs: Any = None) -> None:
                self.times["test"] = [time.perf_counter()]

            def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
                self.times["test"].append(time.perf_counter())

            def on_test_end(self, logs: Any = None) -> None:
                self._end("test")

        return Callback()


class TraceCounter:
    """Counts traces of models' train and test steps (their Python body runs only on a trace)."""

    def __init__(self) -> None:
        self.count = 0

    def attach(self, model: Any) -> Any:
        for name in ("train_step", "test_step"):
            step = getattr(model, name)

            def counted(data: Any, _step: Any = step) -> Any:
                self.count += 1
                return _step(data)

            setattr(model, name, counted)
        return model


def run_blog(args: argparse.Namespace, clear_session: bool = False) -> dict[str, Any]:
    """The blog recipe: bayes_opt over build + compile + fit + evaluate of a fresh model."""
    import warnings

    import keras
    from bayes_opt import BayesianOptimization

    traces = TraceCounter()
    trials: list[dict[str, Any]] = []
    started = time.perf_counter()
    x_train, y_train = load_arrays(args.data_dir, args.train_split)
    x_eval, y_eval = load_arrays(args.data_dir, args.eval_split)

    def objective(dropout_2: float, learning_rate: float) -> float:
        trial_start = time.perf_counter()
        if clear_session:
            keras.backend.clear_session()  # drops the previous trials' models and functions
        model = traces.attach(build_cnn(dropout_2, learning_rate, args.jit_compile))
        train = make_dataset(x_train, y_train, shuffle_seed=args.seed + len(trials))
        evaluation = make_dataset(x_eval, y_eval, shuffle_seed=None)
        timer = StepTimer()
        t0 = time.perf_counter()
        model.fit(train, epochs=1, verbose=0, callbacks=[timer.callback()])
        t1 = time.perf_counter()
        _, accuracy = model.evaluate(evaluation, verbose=0, callbacks=[timer.callback()])
        t2 = time.perf_counter()
        trials.append(
            {
                "trial": len(trials),
                "target": float(accuracy),
                "params": {"dropout_2": dropout_2, "learning_rate": learning_rate},
                "seconds": t2 - trial_start,
                "step_seconds": t2 - t0,
                "fit_seconds": t1 - t0,
                "evaluate_seconds": t2 - t1,
                "trace_setup_seconds": timer.setup_seconds,
                "rss_mib": rss_mib(),
            }
        )
        return float(accuracy)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = BayesianOptimization(
            f=objective, pbounds=BOUNDS, random_state=args.seed, verbose=0
        )
        optimizer.maximize(init_points=args.init_points, n_iter=args.trials - args.init_points)
    return {"wall_seconds": time.perf_counter() - started, "trials": trials, "traces": traces.count}


def run_kerastuner(args: argparse.Namespace) -> dict[str, Any]:
    """KerasTuner's BayesianOptimization tuner over the same CNN."""
    import keras_tuner

    traces = TraceCounter()
    trials: list[dict[str, Any]] = []

    class HyperCNN(keras_tuner.HyperModel):
        def build(self, hp: Any) -> Any:
            self.trial_start = time.perf_counter()
            return traces.attach(
                build_cnn(
                    hp.Float("dropout_2", 0.1, 0.5),
                    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
                    args.jit_compile,
                )
            )

        def fit(self, hp: Any, model: Any, *a: Any, **kw: Any) -> Any:
            timer = StepTimer()
            kw["callbacks"] = [*kw.get("callbacks", []), timer.callback()]
            t0 = time.perf_counter()
            history = model.fit(*a, **kw)
            t1 = time.perf_counter()
            trials.append(
                {
                    "trial": len(trials),
                    "target": float(history.history["val_accuracy"][-1]),
                    "params": dict(hp.values),
                    "seconds": t1 - self.trial_start,
                    "step_seconds": t1 - t0,
                    "trace_setup_seconds": timer.setup_seconds,
                    "rss_mib": rss_mib(),
                }
            )
            return history

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        x_train, y_train = load_arrays(args.data_dir, args.train_split)
        x_eval, y_eval = load_arrays(args.data_dir, args.eval_split)
        tuner = keras_tuner.BayesianOptimization(
            HyperCNN(),
            objective="val_accuracy",
            max_trials=args.trials,
            num_initial_points=args.init_points,
            seed=args.seed,
            directory=tmp,
            project_name="overhead",
            overwrite=True,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            tuner.search(
                make_dataset(x_train, y_train, shuffle_seed=args.seed),
                validation_data=make_dataset(x_eval, y_eval, shuffle_seed=None),
                epochs=1,
                verbose=0,
            )
        wall = time.perf_counter() - started
    return {"wall_seconds": wall, "trials": trials, "traces": traces.count}
