"""The compile-once trainer: one traced program per structure, reused by every trial.

Contract (DESIGN.md 1-3):

* A *program* is a model, its optimizer and two ``tf.function``s (train, eval), built inside the
  strategy's scope for one combination of structural hyperparameter values. Programs live in a
  small LRU cache (``max_programs``).
* A trial never re-traces. It re-initialises the weights in place with a fresh draw seeded by
  the trial's seed, restores the optimizer's freshly built state, and assigns its runtime
  hyperparameters (learning rate, label smoothing, dropout rates...) to variables.
* The train program runs ``steps_per_execution`` steps per host call: a ``tf.function`` loops
  ``strategy.run(step, (next(iterator),))`` over ``tf.range(n)`` on the study's persistent
  distributed iterator. The same code runs under TPUStrategy, MirroredStrategy and the
  default strategy.
* ``Trainer.traces`` counts every trace of a train or eval program; a study records it.

A trial whose loss becomes NaN/Inf, or that runs out of memory, ends as ``failed`` with the
reason; other errors are bugs or configuration mistakes and propagate.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo import models
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.input_pipeline import Datasets, EvalData
from tpu_bo.layers import RuntimeValue, RuntimeValueError
from tpu_bo.space import TRAINER_PARAMS, SearchSpace

log = logging.getLogger("tpu_bo")

ProgressFn = Callable[[int, int, int, float, float], None]


@dataclasses.dataclass
class TrialResult:
    """What one trial produced.

    Attributes:
      status: ``ok``, ``failed`` (NaN/Inf loss, out of memory) or ``pruned`` (stopped early
        by the ``on_epoch`` hook).
      history: One dict per finished epoch: ``epoch``, ``loss``, ``val_loss``,
        ``val_accuracy``, ``steps_per_second``.
      error: For a failed trial, one sentence saying why.
      steps: Training steps run (including those before a resume).
      seconds: Wall time of the trial, including any trace and compile, and the time spent
        before a resume.
      train_seconds: Time inside train-program calls (this session).
      eval_seconds: Time inside eval-program calls (this session).
      resumed_from_epoch: The epoch a resumed trial continued after, else ``None``.
    """

    status: str
    history: list[dict[str, float]]
    error: str | None = None
    steps: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    resumed_from_epoch: int | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics of the epoch with the best validation accuracy."""
        return best_epoch(self.history, "val_accuracy", maximize=True)


@dataclasses.dataclass
class TrialState:
    """A trial caught at the end of an epoch, enough to continue it in another process.

    Attributes:
      epoch: Epochs finished.
      history: Their metrics.
      model: Values of ``model.variables`` (weights and dropout RNG state).
      optimizer: Values of ``optimizer.variables`` (step count and slots).
      steps: Training steps run so far.
      seconds: Wall time spent so far.
    """

    epoch: int
    history: list[dict[str, float]]
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    steps: int
    seconds: float


EpochFn = Callable[[int, list[dict[str, float]], float], bool]


class _Program:
    """One compiled structure: model, optimizer, hyperparameter variables and tf.functions."""

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.model: Any = None
        self.optimizer: Any = None
        self.hp_values: dict[str, Any] = {}
        self.runtime_vars: dict[str, tf.Variable] = {}
        self.optimizer_snapshot: list[np.ndarray] = []
        self.train_fn: Any = None
        self.eval_fn: Any = None


class Trainer:
    """Runs trials on shared datasets, compiling once per structure.

    Args:
      config: The study's configuration (epochs, optimizer, steps_per_execution,
        mixed_precision, jit_compile, max_programs, fixed).
      strategy: The distribution strategy the datasets were distributed with.
      datasets: The study's datasets, from :func:`tpu_bo.input_pipeline.load_datasets`.
      space: The search space; defaults to ``config.resolved_space()``.
      builder: The model builder; defaults to ``models.get_builder(config.model)``.
    """

    def __init__(
        self,
        config: Config,
        strategy: tf.distribute.Strategy,
        datasets: Datasets,
        *,
        space: SearchSpace | None = None,
        builder: models.Builder | None = None,
    ) -> None:
        self.config = config
        self.strategy = strategy
        self.datasets = datasets
        self.space = space or config.resolved_space()
        self.builder = builder or models.get_builder(config.model)
        self.traces = 0
        self._programs: collections.OrderedDict[tuple[Any, ...], _Program] = (
            collections.OrderedDict()
        )
        # bfloat16 is the TPU's native type and needs no loss scaling.
        keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if config.mixed_precision else "float32"
        )

    @property
    def num_programs(self) -> int:
        """Programs currently cached."""
        return len(self._programs)

    def run_trial(
        self,
        params: Mapping[str, Any],
        *,
        seed: int,
        on_progress: ProgressFn | None = None,
        on_epoch: EpochFn | None = None,
        resume: TrialState | None = None,
    ) -> TrialResult:
        """Trains and evaluates one trial for ``config.epochs`` epochs.

        Args:
          params: A value for every parameter of the search space.
          seed: Seeds the trial's initial weights and dropout draws.
          on_progress: Called after every host call as
            ``on_progress(epoch, step_in_epoch, steps_per_epoch, mean_loss, steps_per_second)``.
          on_epoch: Called after every epoch's evaluation as
            ``on_epoch(epoch, history, seconds_so_far)``; returning True stops the trial as
            ``pruned``. The program still holds the epoch's weights during the call, so it
            may :meth:`capture` them.
          resume: Continue this state instead of starting from fresh weights.

        Returns:
          The trial's :class:`TrialResult`.
        """
        start = time.perf_counter() - (resume.seconds if resume else 0.0)
        history: list[dict[str, float]] = list(resume.history) if resume else []
        steps_done = resume.steps if resume else 0
        first_epoch = resume.epoch + 1 if resume else 1
        train_seconds = eval_seconds = 0.0
        spe = self.datasets.steps_per_epoch
        per_call = self.config.steps_per_execution

        def result(status: str, error: str | None = None) -> TrialResult:
            return TrialResult(
                status=status,
                history=history,
                error=error,
                steps=steps_done,
                seconds=time.perf_counter() - start,
                train_seconds=train_seconds,
                eval_seconds=eval_seconds,
                resumed_from_epoch=resume.epoch if resume else None,
            )

        try:
            program = self._program(params)
            if resume is None:
                self._reset(program, params, seed)
            else:
                self._restore(program, params, resume)
            for epoch in range(first_epoch, self.config.epochs + 1):
                loss_sum, done, epoch_start = 0.0, 0, time.perf_counter()
                while done < spe:
                    n = min(per_call, spe - done)
                    call_start = time.perf_counter()
                    loss = float(program.train_fn(self.datasets.train_iterator, tf.constant(n)))
                    train_seconds += time.perf_counter() - call_start
                    done += n
                    steps_done += n
                    if not math.isfinite(loss):
                        return result("failed", f"loss became {loss} in epoch {epoch}, step {done}")
                    loss_sum += loss
                    if on_progress is not None:
                        rate = done / max(time.perf_counter() - epoch_start, 1e-9)
                        on_progress(epoch, done, spe, loss_sum / done, rate)
                epoch_seconds = time.perf_counter() - epoch_start
                call_start = time.perf_counter()
                val = self.evaluate(program, self.datasets.eval)
                eval_seconds += time.perf_counter() - call_start
                history.append(
                    {
                        "epoch": epoch,
                        "loss": loss_sum / spe,
                        "val_loss": val["loss"],
                        "val_accuracy": val["accuracy"],
                        "steps_per_second": spe / max(epoch_seconds, 1e-9),
                    }
                )
                if not math.isfinite(val["loss"]):
                    return result(
                        "failed", f"validation loss became {val['loss']} in epoch {epoch}"
                    )
                if on_epoch is not None and on_epoch(epoch, history, time.perf_counter() - start):
                    return result("pruned")
        except tf.errors.ResourceExhaustedError as e:
            # The program may hold fragmented memory; a later trial of this structure rebuilds.
            self._programs.pop(self.space.structure_key(params), None)
            return result("failed", f"out of memory: {str(e).strip().splitlines()[0][:200]}")
        return result("ok")

    def evaluate(self, program: _Program, data: EvalData) -> dict[str, float]:
        """Scores the program's current weights on every example of ``data`` exactly once.

        Returns:
          ``{"loss": mean loss, "accuracy": accuracy, "examples": examples counted}``.
        """
        loss, correct, count = program.eval_fn(data.iterator, tf.constant(data.steps)).numpy()
        if round(float(count)) != data.num_examples:
            raise RuntimeError(
                f"evaluation counted {count} examples of {data.split}, expected "
                f"{data.num_examples}; the padded eval pipeline is broken."
            )
        return {
            "loss": float(loss / count),
            "accuracy": float(correct / count),
            "examples": float(count),
        }

    def model(self, params: Mapping[str, Any]) -> Any:
        """The Keras model of the program for ``params``'s structure (weights of the last trial)."""
        return self._program(params).model

    def snapshot(self, params: Mapping[str, Any]) -> list[np.ndarray]:
        """Copies to the host the current weights of the program for ``params``'s structure."""
        return _host_values(self._program(params).model.variables)

    def capture(
        self,
        params: Mapping[str, Any],
        history: list[dict[str, float]],
        steps: int,
        seconds: float,
    ) -> TrialState:
        """The running trial's state at the end of its latest epoch (see ``on_epoch``)."""
        program = self._program(params)
        return TrialState(
            epoch=len(history),
            history=list(history),
            model=self.snapshot(params),
            optimizer=_host_values(program.optimizer.variables),
            steps=steps,
            seconds=seconds,
        )

    def save_weights(self, params: Mapping[str, Any], weights: list[np.ndarray], path: str) -> None:
        """Writes a :meth:`snapshot` as a Keras ``.weights.h5`` file (local or ``gs://``)."""
        program = self._program(params)
        for variable, value in zip(program.model.variables, weights, strict=True):
            variable.assign(value)
        save_model_weights(program.model, path)

    def evaluate_saved(
        self, params: Mapping[str, Any], path: str, data: EvalData
    ) -> dict[str, float]:
        """Loads saved ``.weights.h5`` into the program for ``params`` and evaluates on ``data``."""
        program = self._program(params)
        load_model_weights(program.model, path)
        return self.evaluate(program, data)

    # Programs.

    def _program(self, params: Mapping[str, Any]) -> _Program:
        key = self.space.structure_key(params)
        program = self._programs.get(key)
        if program is not None:
            self._programs.move_to_end(key)
            return program
        while len(self._programs) >= self.config.max_programs:
            old_key, _ = self._programs.popitem(last=False)
            log.info("program cache full: dropped the program for %s", dict(old_key))
        program = self._build(key, params)
        self._programs[key] = program
        return program

    def _build(self, key: tuple[Any, ...], params: Mapping[str, Any]) -> _Program:
        program = _Program(key)
        runtime = set(self.space.runtime_names())
        with self.strategy.scope():
            for name in sorted(runtime | {"learning_rate", "label_smoothing"}):
                program.runtime_vars[name] = tf.Variable(
                    0.0, trainable=False, dtype=tf.float32, name=f"hp_{name}"
                )
            values = dict(self.config.fixed)
            for name, value in params.items():
                values[name] = (
                    RuntimeValue(name, program.runtime_vars[name]) if name in runtime else value
                )
            program.hp_values = values
            program.model = self._call_builder(values)
            program.optimizer = _make_optimizer(
                values.get("optimizer", self.config.optimizer), program.runtime_vars
            )
            program.optimizer.build(program.model.trainable_variables)
        program.optimizer_snapshot = _host_values(program.optimizer.variables)
        program.train_fn, program.eval_fn = self._functions(program)
        log.info("built the program for structure %s", dict(key) or "(runtime-only space)")
        return program

    def _call_builder(self, values: Mapping[str, Any]) -> Any:
        hp = models.HParams(values)
        name = self.config.model_name
        try:
            model = self.builder(hp, tuple(self.datasets.input_shape), self.datasets.num_classes)
        except RuntimeValueError as e:
            raise ConfigError("param", str(e)) from None
        if not isinstance(model, keras.Model):
            raise ConfigError(
                "model", f"builder {name} returned {type(model).__name__}, not a keras.Model."
            )
        if not model.built:
            model.build((None, *self.datasets.input_shape))
        if not model.trainable_variables:
            raise ConfigError("model", f"model {name} has no trainable variables.")
        unused = [n for n in values if n not in hp.requested and n not in TRAINER_PARAMS]
        if unused:
            flag = "fixed" if unused[0] in self.config.fixed else "param"
            asked = ", ".join(sorted(hp.requested)) or "none"
            raise ConfigError(
                flag,
                f"model {name} never reads hyperparameter {unused[0]!r} (it reads: {asked}); "
                "check the spelling.",
            )
        return model

    def _functions(self, program: _Program) -> tuple[Any, Any]:
        strategy, model, optimizer = self.strategy, program.model, program.optimizer
        replicas = strategy.num_replicas_in_sync
        global_batch = self.datasets.global_batch
        probabilities = models.outputs_probabilities(model)
        smoothing = program.runtime_vars["label_smoothing"]

        def per_example_loss(logits: tf.Tensor, labels: tf.Tensor, smooth: bool) -> tf.Tensor:
            outputs = tf.cast(logits, tf.float32)
            if probabilities:
                log_probs = tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))
            else:
                log_probs = tf.nn.log_softmax(outputs)
            nll = -tf.gather(log_probs, labels, axis=1, batch_dims=1)
            if not smooth:
                return nll
            return (1.0 - smoothing) * nll - smoothing * tf.reduce_mean(log_probs, axis=-1)

        def loss_and_grads(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                # Scaled by the global batch so that summing over replicas gives the mean.
                loss = tf.reduce_sum(per_example_loss(logits, y, True)) / global_batch
                if model.losses:
                    loss += tf.add_n(model.losses) / replicas
            return loss, tape.gradient(loss, model.trainable_variables)

        def eval_step_body(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, ...]:
            logits = model(x, training=False)
            loss = per_example_loss(logits, y, False)
            hit = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y), tf.float32)
            return tf.reduce_sum(loss * w), tf.reduce_sum(hit * w), tf.reduce_sum(w)

        if self.config.jit_compile:
            # XLA on the computation; the optimizer update (an all-reduce under Mirrored)
            # stays outside. A TPU compiles the whole program with XLA regardless.
            loss_and_grads = tf.function(loss_and_grads, jit_compile=True)
            eval_step_body = tf.function(eval_step_body, jit_compile=True)

        # Sums live in per-replica, sum-on-read variables (as Keras metrics do), so a loop of
        # steps never sends a per-step value back to the host.
        with strategy.scope():
            train_sum = _sum_variable([], "train_loss_sum")
            eval_sums = _sum_variable([3], "eval_sums")

        def train_step(batch: tuple[tf.Tensor, tf.Tensor]) -> None:
            loss, grads = loss_and_grads(*batch)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            train_sum.assign_add(loss)

        def eval_step(batch: tuple[tf.Tensor, ...]) -> None:
            eval_sums.assign_add(tf.stack(eval_step_body(*batch)))

        @tf.function
        def train_fn(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
            self.traces += 1  # runs only while tracing
            train_sum.assign(tf.zeros([]))
            for _ in tf.range(steps):
                strategy.run(train_step, (next(iterator),))
            return train_sum.read_value()

        @tf.function
        def eval_fn(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
            self.traces += 1  # runs only while tracing
            eval_sums.assign(tf.zeros([3]))
            for _ in tf.range(steps):
                strategy.run(eval_step, (next(iterator),))
            return eval_sums.read_value()

        return train_fn, eval_fn

    # Per-trial state.

    def _reset(self, program: _Program, params: Mapping[str, Any], seed: int) -> None:
        # A fresh, seeded draw of every initial weight (and dropout RNG state), made by
        # building the same structure again on the host and copying its values in place.
        keras.utils.set_random_seed(seed)
        fresh = self.builder(
            models.HParams(program.hp_values),
            tuple(self.datasets.input_shape),
            self.datasets.num_classes,
        )
        if not fresh.built:
            fresh.build((None, *self.datasets.input_shape))
        targets, sources = program.model.variables, fresh.variables
        if [tuple(v.shape) for v in targets] != [tuple(v.shape) for v in sources]:
            raise ConfigError(
                "model",
                f"builder {self.config.model_name} built different variables on a second call "
                "with the same hyperparameters; it must be deterministic in structure.",
            )
        for target, source in zip(targets, sources, strict=True):
            target.assign(source.value)
        del fresh
        for variable, value in zip(
            program.optimizer.variables, program.optimizer_snapshot, strict=True
        ):
            variable.assign(value)
        self._assign_runtime(program, params)

    def _restore(self, program: _Program, params: Mapping[str, Any], state: TrialState) -> None:
        model_vars, opt_vars = program.model.variables, program.optimizer.variables
        if [tuple(v.shape) for v in model_vars] != [np.shape(a) for a in state.model] or len(
            opt_vars
        ) != len(state.optimizer):
            raise ValueError("the saved trial state does not fit this model")
        for variable, value in zip(model_vars, state.model, strict=True):
            variable.assign(value)
        for variable, value in zip(opt_vars, state.optimizer, strict=True):
            variable.assign(value)
        self._assign_runtime(program, params)

    def _assign_runtime(self, program: _Program, params: Mapping[str, Any]) -> None:
        values = {**self.config.fixed, **params}
        for name, variable in program.runtime_vars.items():
            if name in values:
                variable.assign(float(values[name]))
            elif name == "learning_rate":
                variable.assign(_DEFAULT_LR[values.get("optimizer", self.config.optimizer)])
            else:
                variable.assign(0.0)


def _host_values(variables: list[Any]) -> list[np.ndarray]:
    # Through the backing tf.Variable: keras' own .numpy() goes via a deprecated __array__.
    return [np.array(v.value.numpy()) for v in variables]


def _sum_variable(shape: list[int], name: str) -> tf.Variable:
    return tf.Variable(
        tf.zeros(shape),
        trainable=False,
        name=name,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
    )


_DEFAULT_LR = {"rmsprop": 1e-3, "adam": 1e-3, "adamw": 1e-3, "sgd": 1e-2}


def _make_optimizer(name: str, runtime_vars: Mapping[str, tf.Variable]) -> Any:
    # The learning rate is a callable reading our variable, so one program serves every rate.
    lr_variable = runtime_vars["learning_rate"]

    def learning_rate() -> tf.Tensor:
        return lr_variable.read_value()

    kinds = {
        "rmsprop": keras.optimizers.RMSprop,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
    }
    return kinds[name](learning_rate=learning_rate)


def best_epoch(history: list[dict[str, float]], metric: str, *, maximize: bool) -> dict[str, float]:
    """The metrics of the epoch where ``metric`` was best, with ``best_epoch`` added."""
    if not history:
        return {}
    pick = max if maximize else min
    best = pick(history, key=lambda h: h[metric])
    return {**best, "best_epoch": best["epoch"]}


def save_model_weights(model: Any, path: str) -> None:
    """``model.save_weights`` to any ``tf.io.gfile`` path (Keras writes only local files)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        model.save_weights(local)
        tf.io.gfile.makedirs(os.path.dirname(path) or ".")
        tf.io.gfile.copy(local, path, overwrite=True)


def load_model_weights(model: Any, path: str) -> None:
    """``model.load_weights`` from any ``tf.io.gfile`` path (Keras reads only local files)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        tf.io.gfile.copy(path, local)
        model.load_weights(local)
