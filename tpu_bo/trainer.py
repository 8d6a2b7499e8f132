"""The compile-once trainer: one traced program per structure, reused by every trial.

Contract (docs/DESIGN.md contracts 1-3 and 5):

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
* A program may hold K *towers* (docs/DESIGN.md contract 4, ``parallel_trials``): K copies of
  the model of one structure, each with its own weights, optimizer and runtime variables, fed
  the same batch. The towers' losses are summed, so each receives exactly its own gradients;
  :meth:`Trainer.run_pack` trains up to K trials at once and ``run_trial`` is a pack of one.
  Towers are separate Keras models, the form measured in bench/RESULTS.md; they are built in
  ``_build`` and run in ``_functions``, the two places a fused form would change.

A trial whose loss becomes NaN/Inf, or that runs out of memory, ends as ``failed`` with the
reason (in a pack, a NaN tower is frozen alone; out of memory fails the pack); other errors are
bugs or configuration mistakes and propagate.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo import models
from tpu_bo.accelerator import accelerator_kind, bfloat16_warning
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
PackEpochFn = Callable[[int, int, list[dict[str, float]], float], bool]
CheckpointFn = Callable[[int, dict[int, "TrialState"]], None]
FinishFn = Callable[[int, "TrialResult"], None]


class _Tower:
    """One trial's slot in a program: its own model, optimizer and hyperparameter variables."""

    def __init__(self) -> None:
        self.model: Any = None
        self.optimizer: Any = None
        self.hp_values: dict[str, Any] = {}
        self.runtime_vars: dict[str, tf.Variable] = {}
        self.optimizer_snapshot: list[np.ndarray] = []


class _Program:
    """One compiled (structure, width): ``width`` towers and the tf.functions that run them."""

    def __init__(self, key: tuple[Any, ...], width: int) -> None:
        self.key = key
        self.width = width
        self.towers: list[_Tower] = []
        self.train_fn: Any = None
        self.eval_fn: Any = None


class _Slot:
    """A trial running in tower ``k`` of a pack (bookkeeping of :meth:`Trainer.run_pack`)."""

    def __init__(self, k: int, resume: TrialState | None, start: float) -> None:
        self.k = k
        self.resume = resume
        self.start = start - (resume.seconds if resume else 0.0)
        self.history: list[dict[str, float]] = list(resume.history) if resume else []
        self.steps = resume.steps if resume else 0
        self.loss_sum = 0.0

    def result(
        self, status: str, error: str | None, train_seconds: float, eval_seconds: float
    ) -> TrialResult:
        return TrialResult(
            status=status,
            history=self.history,
            error=error,
            steps=self.steps,
            seconds=time.perf_counter() - self.start,
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            resumed_from_epoch=self.resume.epoch if self.resume else None,
        )


class Trainer:
    """Runs trials on shared datasets, compiling once per structure and pack width.

    A program holds ``width`` towers of one structure (docs/DESIGN.md contract 4). Every tower
    reads the same batch from the study's one pipeline; the towers' losses are summed, so each
    tower's weights receive exactly their own gradients, and each tower has its own seeded
    weights, optimizer and runtime-hyperparameter variables. ``width=1`` is the sequential case.

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
        self._running: _Program | None = None
        # bfloat16 is the TPU's native type and needs no loss scaling, so no scale shared by
        # the towers of a pack can couple them.
        keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if config.mixed_precision else "float32"
        )
        if config.mixed_precision:
            warning = bfloat16_warning(strategy)
            if warning:
                log.warning("%s", warning)
        # A TPU compiles the whole program with XLA; nesting jit_compile=True inside a TPU
        # program is unsupported (Keras, too, turns jit_compile off under a strategy).
        self.jit_compile = config.jit_compile and accelerator_kind(strategy) != "tpu"
        if config.jit_compile and not self.jit_compile:
            log.info("--jit_compile is ignored on a TPU: XLA compiles every TPU program anyway")

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
        width: int = 1,
    ) -> TrialResult:
        """Trains and evaluates one trial for ``config.epochs`` epochs.

        Args:
          params: A value for every parameter of the search space.
          seed: Seeds the trial's initial weights and dropout draws.
          on_progress: Called after every host call as
            ``on_progress(epoch, step_in_epoch, steps_per_epoch, mean_loss, steps_per_second)``.
          on_epoch: Called after every epoch's evaluation as
            ``on_epoch(epoch, history, seconds_so_far)``; returning True stops the trial as
            ``pruned``.
          resume: Continue this state instead of starting from fresh weights.
          width: The program width to run in (tower 0 of it; the rest stay idle).

        Returns:
          The trial's :class:`TrialResult`.
        """
        epoch_fn = None
        if on_epoch is not None:

            def epoch_fn(k: int, epoch: int, history: list[dict[str, float]], sec: float) -> bool:
                return on_epoch(epoch, history, sec)

        return self.run_pack(
            [params],
            seeds=[seed],
            resume=[resume],
            on_progress=on_progress,
            on_epoch=epoch_fn,
            width=width,
        )[0]

    def run_pack(
        self,
        params: Sequence[Mapping[str, Any]],
        *,
        seeds: Sequence[int],
        resume: Sequence[TrialState | None] | None = None,
        on_progress: ProgressFn | None = None,
        on_epoch: PackEpochFn | None = None,
        on_checkpoint: CheckpointFn | None = None,
        on_finish: FinishFn | None = None,
        width: int | None = None,
    ) -> list[TrialResult]:
        """Trains up to ``width`` trials of one structure side by side in one program.

        A tower whose loss becomes NaN/Inf, or that ``on_epoch`` prunes, is frozen (its
        learning rate set to 0) and finished on its own; the others train on unaffected, since
        each tower's gradients depend only on its own loss. Towers beyond ``len(params)`` are
        idle (frozen from the start), so a short last pack reuses the same program.

        Args:
          params: One point per trial; all must have the same structural values.
          seeds: One seed per trial.
          resume: Per trial, a state to continue instead of fresh weights (all resumed
            trials of a pack stand at the same epoch).
          on_progress: As for :meth:`run_trial`; the loss is the mean over running towers.
          on_epoch: ``on_epoch(k, epoch, history, seconds)`` after each epoch's evaluation
            of running tower ``k``; True prunes it. :meth:`tower_weights` reads its weights.
          on_checkpoint: ``on_checkpoint(epoch, {k: TrialState})`` after each epoch but the
            last, with the state of every tower still running.
          on_finish: ``on_finish(k, result)`` as soon as trial ``k`` ends, whatever the status.
          width: The program's tower count; ``config.parallel_trials`` by default.

        Returns:
          One :class:`TrialResult` per trial, in order.
        """
        width = width or self.config.parallel_trials
        if not 1 <= len(params) <= width or len(seeds) != len(params):
            raise ValueError(f"a pack takes 1 to {width} trials with one seed each")
        keys = {self.space.structure_key(p) for p in params}
        if len(keys) != 1:
            raise ValueError("the trials of a pack must share their structural values")
        resume = list(resume or [None] * len(params))
        started = {s.epoch for s in resume if s is not None}
        if len(started) > 1 or (started and None in resume):
            raise ValueError("the resumed trials of a pack must stand at the same epoch")
        first_epoch = started.pop() + 1 if started else 1
        now = time.perf_counter()
        slots = [_Slot(k, resume[k], now) for k in range(len(params))]
        running = {s.k: s for s in slots}
        results: dict[int, TrialResult] = {}
        times = {"train": 0.0, "eval": 0.0}
        spe = self.datasets.steps_per_epoch
        per_call = self.config.steps_per_execution

        program: _Program | None = None

        def finish(slot: _Slot, status: str, error: str | None = None) -> None:
            if program is not None:  # freeze the tower: the others train on
                program.towers[slot.k].runtime_vars["learning_rate"].assign(0.0)
            running.pop(slot.k)
            results[slot.k] = slot.result(status, error, times["train"], times["eval"])
            if on_finish is not None:
                on_finish(slot.k, results[slot.k])

        try:
            program = self._program(params[0], width)
            self._running = program
            for k, tower in enumerate(program.towers):
                if k >= len(params):
                    self._assign_runtime(tower, params[0])
                    tower.runtime_vars["learning_rate"].assign(0.0)  # idle
                elif resume[k] is None:
                    self._reset(tower, params[k], seeds[k])
                else:
                    self._restore(tower, params[k], resume[k])
            for epoch in range(first_epoch, self.config.epochs + 1):
                done, epoch_start = 0, time.perf_counter()
                for slot in running.values():
                    slot.loss_sum = 0.0
                while done < spe and running:
                    n = min(per_call, spe - done)
                    call_start = time.perf_counter()
                    losses = program.train_fn(self.datasets.train_iterator, tf.constant(n))
                    losses = losses.numpy().astype(float)
                    times["train"] += time.perf_counter() - call_start
                    done += n
                    for slot in list(running.values()):
                        slot.steps += n
                        if not math.isfinite(losses[slot.k]):
                            finish(
                                slot,
                                "failed",
                                f"loss became {losses[slot.k]} in epoch {epoch}, step {done}",
                            )
                        else:
                            slot.loss_sum += losses[slot.k]
                    if on_progress is not None and running:
                        rate = done / max(time.perf_counter() - epoch_start, 1e-9)
                        mean = sum(s.loss_sum for s in running.values()) / len(running)
                        on_progress(epoch, done, spe, mean / done, rate)
                if not running:
                    break
                epoch_seconds = time.perf_counter() - epoch_start
                call_start = time.perf_counter()
                vals = self._evaluate_all(program, self.datasets.eval)
                times["eval"] += time.perf_counter() - call_start
                for slot in list(running.values()):
                    val = vals[slot.k]
                    slot.history.append(
                        {
                            "epoch": epoch,
                            "loss": slot.loss_sum / spe,
                            "val_loss": val["loss"],
                            "val_accuracy": val["accuracy"],
                            "steps_per_second": spe / max(epoch_seconds, 1e-9),
                        }
                    )
                    if not math.isfinite(val["loss"]):
                        finish(
                            slot, "failed", f"validation loss became {val['loss']} in epoch {epoch}"
                        )
                    elif on_epoch is not None and on_epoch(
                        slot.k, epoch, slot.history, time.perf_counter() - slot.start
                    ):
                        finish(slot, "pruned")
                if running and epoch < self.config.epochs and on_checkpoint is not None:
                    on_checkpoint(epoch, {k: self._capture(program, s) for k, s in running.items()})
            for slot in list(running.values()):
                finish(slot, "ok")
        except tf.errors.ResourceExhaustedError as e:
            # The program may hold fragmented memory; a later pack of this structure rebuilds.
            self._programs.pop((self.space.structure_key(params[0]), width), None)
            program = None  # dropped: nothing to freeze
            reason = f"out of memory: {str(e).strip().splitlines()[0][:200]}"
            if width > 1:
                reason += f" (a pack of {width}; a smaller --parallel_trials may fit)"
            for slot in list(running.values()):
                finish(slot, "failed", reason)
        finally:
            self._running = None
        return [results[k] for k in range(len(params))]

    def tower_weights(self, k: int) -> list[np.ndarray]:
        """Host copies of tower ``k``'s current weights, during :meth:`run_pack`'s callbacks."""
        if self._running is None:
            raise RuntimeError("tower_weights is only available while a pack runs")
        return _host_values(self._running.towers[k].model.variables)

    def _evaluate_all(self, program: _Program, data: EvalData) -> list[dict[str, float]]:
        """Scores every tower on every example of ``data`` exactly once.

        Returns:
          Per tower ``{"loss": mean loss, "accuracy": accuracy, "examples": examples}``.
        """
        sums = program.eval_fn(data.iterator, tf.constant(data.steps)).numpy()
        scores = []
        for loss, correct, count in sums:
            if round(float(count)) != data.num_examples:
                raise RuntimeError(
                    f"evaluation counted {count} examples of {data.split}, expected "
                    f"{data.num_examples}; the padded eval pipeline is broken."
                )
            scores.append(
                {
                    "loss": float(loss / count),
                    "accuracy": float(correct / count),
                    "examples": float(count),
                }
            )
        return scores

    def model(self, params: Mapping[str, Any]) -> Any:
        """A Keras model of ``params``'s structure (tower 0 of a cached program)."""
        return self._any_program(params).towers[0].model

    def save_weights(self, params: Mapping[str, Any], weights: list[np.ndarray], path: str) -> None:
        """Writes a weight list (as :meth:`tower_weights` gives) as a Keras ``.weights.h5``.

        Through a fresh host model of ``params``'s structure, so no tower of a running pack is
        touched.
        """
        model = self._host_model({**self.config.fixed, **params})
        for variable, value in zip(model.variables, weights, strict=True):
            variable.assign(value)
        save_model_weights(model, path)

    def evaluate_weights(
        self, params: Mapping[str, Any], weights: list[np.ndarray], data: EvalData
    ) -> dict[str, float]:
        """Evaluates a weight list (as :meth:`tower_weights` gives) in tower 0 of a program."""
        program = self._any_program(params)
        for variable, value in zip(program.towers[0].model.variables, weights, strict=True):
            variable.assign(value)
        return self._evaluate_all(program, data)[0]

    def evaluate_saved(
        self, params: Mapping[str, Any], path: str, data: EvalData
    ) -> dict[str, float]:
        """Loads saved ``.weights.h5`` into tower 0 of a program for ``params`` and evaluates."""
        program = self._any_program(params)
        load_model_weights(program.towers[0].model, path)
        return self._evaluate_all(program, data)[0]

    # Programs.

    def _any_program(self, params: Mapping[str, Any]) -> _Program:
        """A cached program of ``params``'s structure, of any width (else a new one of 1)."""
        structure = self.space.structure_key(params)
        for (key, _width), program in reversed(self._programs.items()):
            if key == structure:
                return program
        return self._program(params, 1)

    def _program(self, params: Mapping[str, Any], width: int) -> _Program:
        key = (self.space.structure_key(params), width)
        program = self._programs.get(key)
        if program is not None:
            self._programs.move_to_end(key)
            return program
        while len(self._programs) >= self.config.max_programs:
            (old_key, _width), _ = self._programs.popitem(last=False)
            log.info("program cache full: dropped the program for %s", dict(old_key))
        program = self._build(key[0], width, params)
        self._programs[key] = program
        return program

    def _build(self, key: tuple[Any, ...], width: int, params: Mapping[str, Any]) -> _Program:
        program = _Program(key, width)
        runtime = set(self.space.runtime_names())
        with self.strategy.scope():
            for _ in range(width):
                tower = _Tower()
                for name in sorted(runtime | {"learning_rate", "label_smoothing"}):
                    tower.runtime_vars[name] = tf.Variable(
                        0.0, trainable=False, dtype=tf.float32, name=f"hp_{name}"
                    )
                values = dict(self.config.fixed)
                for name, value in params.items():
                    values[name] = (
                        RuntimeValue(name, tower.runtime_vars[name]) if name in runtime else value
                    )
                tower.hp_values = values
                tower.model = self._call_builder(values)
                tower.optimizer = _make_optimizer(
                    values.get("optimizer", self.config.optimizer), tower.runtime_vars
                )
                tower.optimizer.build(tower.model.trainable_variables)
                program.towers.append(tower)
        for tower in program.towers:
            tower.optimizer_snapshot = _host_values(tower.optimizer.variables)
        program.train_fn, program.eval_fn = self._functions(program)
        what = dict(key) or "(runtime-only space)"
        log.info("built the program for structure %s%s", what, f", {width} towers" * (width > 1))
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
        strategy, towers, width = self.strategy, program.towers, program.width
        replicas = strategy.num_replicas_in_sync
        global_batch = self.datasets.global_batch
        probabilities = [models.outputs_probabilities(t.model) for t in towers]
        smoothing = [t.runtime_vars["label_smoothing"] for t in towers]
        variables = [t.model.trainable_variables for t in towers]

        def per_example_loss(
            k: int, logits: tf.Tensor, labels: tf.Tensor, smooth: bool
        ) -> tf.Tensor:
            outputs = tf.cast(logits, tf.float32)
            if probabilities[k]:
                log_probs = tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))
            else:
                log_probs = tf.nn.log_softmax(outputs)
            nll = -tf.gather(log_probs, labels, axis=1, batch_dims=1)
            if not smooth:
                return nll
            return (1.0 - smoothing[k]) * nll - smoothing[k] * tf.reduce_mean(log_probs, axis=-1)

        def loss_and_grads(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, list[list[tf.Tensor]]]:
            with tf.GradientTape() as tape:
                losses = []
                for k, tower in enumerate(towers):
                    logits = tower.model(x, training=True)
                    # Scaled by the global batch so that summing over replicas gives the mean.
                    loss = tf.reduce_sum(per_example_loss(k, logits, y, True)) / global_batch
                    if tower.model.losses:
                        loss += tf.add_n(tower.model.losses) / replicas
                    losses.append(loss)
                # Each tower's variables appear only in its own loss, so the gradient of the
                # sum with respect to them is exactly that tower's gradient.
                total = tf.add_n(losses)
            grads = tape.gradient(total, variables)
            return tf.stack(losses), grads

        def eval_step_body(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
            rows = []
            for k, tower in enumerate(towers):
                logits = tower.model(x, training=False)
                loss = per_example_loss(k, logits, y, False)
                predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
                hit = tf.cast(tf.equal(predicted, y), tf.float32)
                rows.append(
                    tf.stack([tf.reduce_sum(loss * w), tf.reduce_sum(hit * w), tf.reduce_sum(w)])
                )
            return tf.stack(rows)

        if self.jit_compile:
            # XLA on the computation; the optimizer update (an all-reduce under Mirrored)
            # stays outside. A TPU compiles the whole program with XLA regardless.
            loss_and_grads = tf.function(loss_and_grads, jit_compile=True)
            eval_step_body = tf.function(eval_step_body, jit_compile=True)

        # Sums live in per-replica, sum-on-read variables (as Keras metrics do), so a loop of
        # steps never sends a per-step value back to the host.
        with strategy.scope():
            train_sum = _sum_variable([width], "train_loss_sum")
            eval_sums = _sum_variable([width, 3], "eval_sums")

        def train_step(batch: tuple[tf.Tensor, tf.Tensor]) -> None:
            losses, grads = loss_and_grads(*batch)
            for tower, tower_grads, tower_vars in zip(towers, grads, variables, strict=True):
                tower.optimizer.apply_gradients(zip(tower_grads, tower_vars, strict=True))
            train_sum.assign_add(losses)

        def eval_step(batch: tuple[tf.Tensor, ...]) -> None:
            eval_sums.assign_add(eval_step_body(*batch))

        @tf.function
        def train_fn(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
            self.traces += 1  # runs only while tracing
            train_sum.assign(tf.zeros([width]))
            for _ in tf.range(steps):
                strategy.run(train_step, (next(iterator),))
            return train_sum.read_value()

        @tf.function
        def eval_fn(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
            self.traces += 1  # runs only while tracing
            eval_sums.assign(tf.zeros([width, 3]))
            for _ in tf.range(steps):
                strategy.run(eval_step, (next(iterator),))
            return eval_sums.read_value()

        return train_fn, eval_fn

    # Per-trial state.

    def _host_model(self, values: Mapping[str, Any]) -> Any:
        """A fresh model of ``values``' structure, outside every program and strategy."""
        return models.build_model(
            self.builder, values, tuple(self.datasets.input_shape), self.datasets.num_classes
        )

    def _reset(self, tower: _Tower, params: Mapping[str, Any], seed: int) -> None:
        # A fresh, seeded draw of every initial weight (and dropout RNG state), made by
        # building the same structure again on the host and copying its values in place.
        keras.utils.set_random_seed(seed)
        fresh = self._host_model(tower.hp_values)
        targets, sources = tower.model.variables, fresh.variables
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
            tower.optimizer.variables, tower.optimizer_snapshot, strict=True
        ):
            variable.assign(value)
        self._assign_runtime(tower, params)

    def _restore(self, tower: _Tower, params: Mapping[str, Any], state: TrialState) -> None:
        model_vars, opt_vars = tower.model.variables, tower.optimizer.variables
        if [tuple(v.shape) for v in model_vars] != [np.shape(a) for a in state.model] or len(
            opt_vars
        ) != len(state.optimizer):
            raise ValueError("the saved trial state does not fit this model")
        for variable, value in zip(model_vars, state.model, strict=True):
            variable.assign(value)
        for variable, value in zip(opt_vars, state.optimizer, strict=True):
            variable.assign(value)
        self._assign_runtime(tower, params)

    def _capture(self, program: _Program, slot: _Slot) -> TrialState:
        tower = program.towers[slot.k]
        return TrialState(
            epoch=len(slot.history),
            history=list(slot.history),
            model=_host_values(tower.model.variables),
            optimizer=_host_values(tower.optimizer.variables),
            steps=slot.steps,
            seconds=time.perf_counter() - slot.start,
        )

    def _assign_runtime(self, tower: _Tower, params: Mapping[str, Any]) -> None:
        values = {**self.config.fixed, **params}
        for name, variable in tower.runtime_vars.items():
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
