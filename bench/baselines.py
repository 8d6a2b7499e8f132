r"""The baselines of ``bench/overhead.py`` and ``bench/memory.py``: the blog recipe and KerasTuner.

Both train the seed CNN (``tpu_bo.train.models.mnist_cnn``'s layers, built the plain Keras way, for
the workload's input shape) on NumPy arrays loaded once, one fresh model per trial, and return
their raw figures in the form ``bench.overhead.summarise`` reads: ``wall_seconds``, ``traces``,
``time`` (the study's wall time split into ``bench.common.TIME_KEYS``, ``other`` and ``wall``,
measured by a ``bench.common.TimeSplit``) and one dict per trial (``trial``, numbered from 0
like tpu_bo's, ``target``, ``params``, ``seconds``, ``step_seconds``, ``trace_setup_seconds``,
``rss_mib``). The workload is ``args.dataset`` (``digits`` or ``mnist``), ``args.train_split``,
``args.eval_split``, ``args.epochs`` and ``args.batch_size``. See ``bench/overhead.py``'s
docstring for what each method does and how each figure is measured.

The time split (nested sections, each second counted once, in the innermost):

* ``train``: inside ``fit``, its own setup outside the batches included, less its validation
  (``eval``), its checkpoints and the trace estimate of ``StepTimer`` (``trace``).
* ``eval``: inside ``evaluate`` (and ``fit``'s validation), less their trace estimate.
* ``reset``: the per-trial build + compile (the blog's ``clear_session`` too; KerasTuner's
  ``Tuner._try_build``: ``clear_session``, ``gc.collect``, build and compile, and the build the
  tuner makes when it is created, to learn the space).
* ``suggest_wait``: bayes_opt's ``suggest`` (wrapped on the optimizer: ``maximize`` calls it for
  every guided trial; its random points are drawn up front, in ``other``); KerasTuner's
  ``oracle.populate_space`` (which ``create_trial`` calls, random or guided).
* ``setup``: loading the arrays and building the ``tf.data`` pipelines (the blog: per trial).
* ``checkpoint``: KerasTuner's ``model.save_weights`` by its ``SaveBestEpoch`` callback.
* ``journal``: KerasTuner's study files (``oracle._save_trial``, ``oracle.save``,
  ``tuner.save``: trial.json, oracle.json, tuner.json). The blog keeps no checkpoint or journal.
* ``other``: the rest (bayes_opt registering results, KerasTuner's trial bookkeeping...).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from bench.common import TimeSplit, rss_mib

BATCH = 128  # the MNIST workload's batch (bench.memory's too)
BOUNDS = {"dropout_2": (0.1, 0.5), "learning_rate": (1e-4, 1e-2)}


def load_arrays(args: argparse.Namespace, split: str) -> tuple[Any, Any]:
    """A split of ``args.dataset`` as NumPy arrays (uint8 images, int labels), loaded once.

    ``digits`` comes from tpu_bo's own source (``tpu_bo.data.sources.digits_source``: the same
    arrays and split names tpu_bo trains on), ``mnist`` from TFDS, as the blog loads it.
    """
    if args.dataset == "digits":
        from tpu_bo.data.sources import digits_source

        ds, n = digits_source().load(split, "train_split")
        images, labels = ds.batch(max(n, 1)).get_single_element()
        return images.numpy(), labels.numpy()
    import tensorflow_datasets as tfds

    ds = tfds.load(
        args.dataset, split=split, data_dir=args.data_dir, download=False, as_supervised=True
    )
    images, labels = tfds.as_numpy(ds.batch(100_000).get_single_element())
    return images, labels


def make_dataset(images: Any, labels: Any, batch: int, *, shuffle_seed: int | None) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed)
    return (
        ds.batch(batch)
        .map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def build_cnn(
    input_shape: tuple[int, ...],
    dropout_2: float,
    learning_rate: float,
    jit_compile: bool,
    dense_units: int = 128,
) -> Any:
    """The seed CNN for ``input_shape`` images, built and compiled the plain Keras way."""
    import keras

    model = keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
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

    The time an epoch's train batches (or an evaluation's batches) take beyond (number of
    batches x their median batch) is tracing and setup: the first batch traces the step
    function, a smaller last batch may retrace it. It goes to ``split``'s ``trace``, and an
    evaluation's other seconds (``on_test_begin`` to ``on_test_end``) to its ``eval``, out of
    the section that encloses the call (``train`` around ``fit``, ``eval`` around
    ``evaluate``): so ``fit``'s validation counts as ``eval``.
    """

    def __init__(self, split: TimeSplit) -> None:
        self.split = split
        self.setup_seconds = 0.0

    def finish(self, times: list[float], *, test: bool) -> None:
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        excess = max(0.0, sum(gaps) - len(gaps) * statistics.median(gaps)) if gaps else 0.0
        self.setup_seconds += excess
        self.split.add("trace", excess)
        if test and times:
            self.split.add("eval", time.perf_counter() - times[0] - excess)

    def callback(self) -> Any:
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.times: dict[str, list[float]] = {"train": [], "test": []}

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.times["train"] = [time.perf_counter()]

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                self.times["train"].append(time.perf_counter())

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                timer.finish(self.times["train"], test=False)

            def on_test_begin(self, logs: Any = None) -> None:
                self.times["test"] = [time.perf_counter()]

            def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
                self.times["test"].append(time.perf_counter())

            def on_test_end(self, logs: Any = None) -> None:
                timer.finish(self.times["test"], test=True)

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


class Recipe:
    """The common recipe's trials: each builds a fresh model, compiles, fits and evaluates it.

    Calling it with a trial's ``params`` (``dropout_2``, ``learning_rate`` and optionally
    ``dense_units``, default 128) returns the evaluated accuracy and appends the trial's figures
    to ``trials``. The arrays are loaded once, when it is made (``setup``); each trial builds
    its own ``tf.data`` pipelines from them, shuffled with ``args.seed`` + the trial's number.
    ``clear_session`` starts every trial with ``keras.backend.clear_session()``.
    """

    def __init__(
        self, args: argparse.Namespace, split: TimeSplit, traces: TraceCounter, clear_session: bool
    ) -> None:
        self.args, self.split, self.traces, self.clear_session = args, split, traces, clear_session
        self.trials: list[dict[str, Any]] = []
        with split.measure("setup"):
            self.x_train, self.y_train = load_arrays(args, args.train_split)
            self.x_eval, self.y_eval = load_arrays(args, args.eval_split)

    def __call__(self, params: dict[str, Any]) -> float:
        import keras

        args, split, trials = self.args, self.split, self.trials
        trial_start = time.perf_counter()
        with split.measure("reset"):
            if self.clear_session:
                keras.backend.clear_session()  # drops the previous trials' models and functions
            model = build_cnn(
                self.x_train.shape[1:],
                params["dropout_2"],
                params["learning_rate"],
                args.jit_compile,
                params.get("dense_units", 128),
            )
            self.traces.attach(model)
        with split.measure("setup"):
            seed = args.seed + len(trials)
            train = make_dataset(self.x_train, self.y_train, args.batch_size, shuffle_seed=seed)
            evaluation = make_dataset(self.x_eval, self.y_eval, args.batch_size, shuffle_seed=None)
        timer = StepTimer(split)
        t0 = time.perf_counter()
        with split.measure("train"):
            model.fit(train, epochs=args.epochs, verbose=0, callbacks=[timer.callback()])
        t1 = time.perf_counter()
        with split.measure("eval"):
            _, accuracy = model.evaluate(evaluation, verbose=0, callbacks=[timer.callback()])
        t2 = time.perf_counter()
        seconds = t2 - trial_start
        trials.append(record(len(trials), float(accuracy), params, seconds, t2 - t0, timer))
        trials[-1].update(fit_seconds=t1 - t0, evaluate_seconds=t2 - t1)
        return float(accuracy)


def run_blog(
    args: argparse.Namespace, clear_session: bool = False, space: list[str] | None = None
) -> dict[str, Any]:
    """The blog recipe: bayes_opt over build + compile + fit + evaluate of a fresh model.

    ``space``: ``--param`` strings, mapped onto bayes_opt's coordinates by tpu_bo's
    ``SearchSpace`` (a log range as its log10, a choice as a ``CategoricalParameter``); default
    ``BOUNDS``, both linear, as the blog searches them.
    """
    import warnings

    from bayes_opt import BayesianOptimization

    traces, split = TraceCounter(), TimeSplit()
    started = time.perf_counter()
    recipe = Recipe(args, split, traces, clear_session)
    pbounds: dict[str, Any] = dict(BOUNDS)
    decode: Any = dict
    if space is not None:
        from tpu_bo.search.space import SearchSpace

        parsed = SearchSpace.parse(space)
        pbounds, decode = parsed.pbounds(), parsed.from_sampler

    def objective(**point: Any) -> float:
        return recipe(decode(point))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = BayesianOptimization(
            f=objective, pbounds=pbounds, random_state=args.seed, verbose=0
        )
        split.wrap(optimizer, "suggest", "suggest_wait")  # maximize asks self.suggest()
        optimizer.maximize(init_points=args.init_points, n_iter=args.trials - args.init_points)
    return figures(time.perf_counter() - started, recipe.trials, traces, split)


def figures(wall: float, trials: list[Any], traces: TraceCounter, split: TimeSplit) -> dict:
    """A baseline study's raw figures (see the module docstring)."""
    time_split = split.split(wall)
    return {"wall_seconds": wall, "trials": trials, "traces": traces.count, "time": time_split}


def record(
    number: int, target: float, params: dict[str, Any], seconds: float, step: float, timer: Any
) -> dict[str, Any]:
    """One baseline trial's figures, in the form ``bench.overhead.summarise`` reads."""
    return {
        "trial": number,
        "target": target,
        "params": params,
        "seconds": seconds,
        "step_seconds": step,
        "trace_setup_seconds": timer.setup_seconds,
        "rss_mib": rss_mib(),
    }


def hyper_cnn(
    args: argparse.Namespace,
    input_shape: Any,
    traces: Any,
    split: TimeSplit,
    dense_units: Sequence[int] = (),
) -> Any:
    """KerasTuner's hypermodel of the CNN; its ``trials`` list collects the trials' figures.

    ``dense_units``: the widths of an ``hp.Choice("dense_units", ...)``; none: 128, unsearched.
    A trial's ``last_target`` is its last epoch's ``val_accuracy`` (``target``: its best's)."""
    import keras_tuner

    class HyperCNN(keras_tuner.HyperModel):
        def __init__(self) -> None:
            super().__init__()
            self.trials: list[dict[str, Any]] = []
            self.trial_start = 0.0

        def build(self, hp: Any) -> Any:
            self.trial_start = time.perf_counter()
            with split.measure("reset"):
                dropout_2 = hp.Float("dropout_2", 0.1, 0.5)
                rate = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
                units = hp.Choice("dense_units", list(dense_units)) if dense_units else 128
                cnn = build_cnn(input_shape, dropout_2, rate, args.jit_compile, units)
                model = traces.attach(cnn)
            split.wrap(model, "save_weights", "checkpoint")  # KerasTuner's SaveBestEpoch
            return model

        def fit(self, hp: Any, model: Any, *a: Any, **kw: Any) -> Any:
            timer = StepTimer(split)
            kw["callbacks"] = [*kw.get("callbacks", []), timer.callback()]
            t0 = time.perf_counter()
            with split.measure("train"):
                history = model.fit(*a, **kw)
            t1 = time.perf_counter()
            target = max(history.history["val_accuracy"])  # its objective: the best epoch's
            seconds = t1 - self.trial_start
            self.trials.append(
                record(len(self.trials), float(target), dict(hp.values), seconds, t1 - t0, timer)
            )
            self.trials[-1]["last_target"] = float(history.history["val_accuracy"][-1])
            return history

    return HyperCNN()


def instrument(tuner: Any, split: TimeSplit) -> None:
    """Times a KerasTuner tuner's suggestions, per-trial builds and study-state writes."""
    split.wrap(tuner.oracle, "populate_space", "suggest_wait")  # called by create_trial
    split.wrap(tuner, "_try_build", "reset")  # clear_session + gc.collect + build + compile
    # trial.json, oracle.json and tuner.json, rewritten as each trial starts, reports and ends.
    for obj, name in ((tuner.oracle, "_save_trial"), (tuner.oracle, "save"), (tuner, "save")):
        split.wrap(obj, name, "journal")


def run_kerastuner(args: argparse.Namespace, dense_units: Sequence[int] = ()) -> dict[str, Any]:
    """KerasTuner's BayesianOptimization tuner over the same CNN (``dense_units``: see
    ``hyper_cnn``)."""
    import keras_tuner

    traces, split = TraceCounter(), TimeSplit()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with split.measure("setup"):
            x_train, y_train = load_arrays(args, args.train_split)
            x_eval, y_eval = load_arrays(args, args.eval_split)
            train = make_dataset(x_train, y_train, args.batch_size, shuffle_seed=args.seed)
            evaluation = make_dataset(x_eval, y_eval, args.batch_size, shuffle_seed=None)
        hypermodel = hyper_cnn(args, x_train.shape[1:], traces, split, dense_units)
        tuner = keras_tuner.BayesianOptimization(
            hypermodel,
            objective="val_accuracy",
            max_trials=args.trials,
            num_initial_points=args.init_points,
            seed=args.seed,
            directory=tmp,
            project_name="overhead",
            overwrite=True,
        )
        instrument(tuner, split)
        with contextlib.redirect_stdout(io.StringIO()):
            tuner.search(train, validation_data=evaluation, epochs=args.epochs, verbose=0)
        wall = time.perf_counter() - started
    return figures(wall, hypermodel.trials, traces, split)
