"""The compile-once trainer: one traced program per (structure, width), reused by every trial.

Contract (docs/DESIGN.md contracts 1-5 and "Pack object (trainer side)"):

* A *program* (:mod:`tpu_bo.train.program`) holds K towers of one combination of structural
  values and two ``tf.function``s (train, eval), built in the strategy's scope. Programs live
  in a small LRU cache (``max_programs``) keyed by (structure, width); ``Trainer.traces``
  counts every trace of a train or eval function, and a study records it.
* :meth:`Trainer.pack` hands the caller a :class:`tpu_bo.train.pack.Pack` over a program: the
  caller owns the epoch loop, loading a trial into a free slot at any epoch boundary. A trial
  never retraces: one traced call per program (:mod:`tpu_bo.train.reset`) redraws the slot's
  weights on the device from the trial's seed, restores the optimizer's fresh state and assigns
  the runtime hyperparameters (learning rate, label smoothing, dropout rates...).
* The train program runs ``steps_per_execution`` steps per host call; evaluation counts every
  example of a padded split exactly once.
* A trial whose loss becomes NaN/Inf fails alone; out of memory fails every running slot of the
  pack and drops the program. Other errors are bugs or configuration mistakes and propagate.
* Constructing a trainer and running trials leaves the process's Keras dtype policy as it was:
  models are built under :func:`tpu_bo.train.program.precision`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tpu_bo.config import DEFAULT_OPTIMIZER, Config
from tpu_bo.data.pipeline import Datasets, EvalData
from tpu_bo.data.sources import describe
from tpu_bo.device.accelerator import accelerator_kind, bfloat16_warning
from tpu_bo.errors import ConfigError, first_line
from tpu_bo.records import Checkpoint, Outcome
from tpu_bo.search.space import TRAINER_PARAMS, TRAINER_RUNTIME, SearchSpace
from tpu_bo.timing import Clock
from tpu_bo.train import heads, keras_names, models
from tpu_bo.train.layers import RuntimeValue, keras_layers_take_runtime_values, read_as_number
from tpu_bo.train.pack import Pack, PackContext
from tpu_bo.train.program import (
    HostTrips,
    NotReadAtEveryStep,
    Program,
    Tower,
    Traces,
    host_values,
    make_functions,
    make_optimizer,
    out_of_memory,
    precision,
)
from tpu_bo.train.reset import make_reset, plan, recording

log = logging.getLogger("tpu_bo")


class _ReadAsNumber(Exception):
    """The builder's first run read runtime ``param`` as a number: ``space`` is the new plan,
    with ``param`` structural (raised by ``Trainer._call_builder``, taken by ``program``)."""

    def __init__(self, space: SearchSpace, param: str) -> None:
        super().__init__(param)
        self.space, self.param = space, param


class Trainer:
    """Runs trials on shared datasets, compiling once per structure and pack width.

    A program holds ``width`` towers of one structure (docs/DESIGN.md contract 4). Every tower
    reads the same batch from the study's one pipeline; the towers' losses are summed, so each
    tower's weights receive exactly their own gradients, and each tower has its own seeded
    weights, optimizer and runtime-hyperparameter variables. ``width=1`` is the sequential case.

    Args:
      config: The study's configuration (epochs, optimizer, steps_per_execution,
        mixed_precision, jit_compile, max_programs, parallel_trials, fixed).
      strategy: The distribution strategy the datasets were distributed with.
      datasets: The study's datasets, from :func:`tpu_bo.data.pipeline.load_datasets`.
      space: The search space; defaults to ``config.resolved_space()``.
      builder: The model builder; defaults to ``models.get_builder(config.model)``.
      clock: Adds its program builds, calls and resets to this clock (a study's).
    """

    def __init__(
        self,
        config: Config,
        strategy: tf.distribute.Strategy,
        datasets: Datasets,
        *,
        space: SearchSpace | None = None,
        builder: models.Builder | None = None,
        clock: Clock | None = None,
    ) -> None:
        keras_names.check()  # a Keras without the private names fails here, in one sentence
        self.config = config
        self.strategy = strategy
        self.datasets = datasets
        self.space = space or config.resolved_space()
        self.builder = builder or models.get_builder(config.model)
        self.clock = clock or Clock()  # where the time goes (tpu_bo.timing)
        self._host_models: dict[tuple[Any, ...], Any] = {}  # see _saving_model
        self.counts = Traces()  # shared by every program of this trainer
        self.trips = HostTrips()  # host round-trips of its programs (program.HostTrips)
        self._planned = False  # the roles are settled once the builder has run (_call_builder)
        self._said_kept = False  # see _say_kept
        self._programs: collections.OrderedDict[tuple[Any, ...], Program] = (
            collections.OrderedDict()
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

    @property
    def traces(self) -> int:
        """Train and eval functions traced so far."""
        return self.counts.traces

    @property
    def reset_traces(self) -> int:
        """Reset functions traced so far."""
        return self.counts.reset_traces

    @property
    def copy_traces(self) -> int:
        """PBT copy functions traced so far."""
        return self.counts.copy_traces

    def data(self, params: Mapping[str, Any]) -> Datasets:
        """The datasets a trial of ``params`` trains on: at its ``batch_size`` when that is
        searched (one program, and one batched pipeline, per size), else the study's."""
        return self.datasets.for_batch(params.get("batch_size"))

    def pack(self, params: Mapping[str, Any], width: int | None = None) -> Pack:
        """A pack of ``width`` idle slots over the program of ``params``'s structure.

        Reuses the cached program of (structure, width), else builds and caches one; every
        tower starts frozen and nothing else is reset until :meth:`Pack.load`. A program that
        runs out of memory while being built gives a pack whose loaded trials fail at the first
        :meth:`Pack.run_epoch`. The previous pack of the same (structure, width), if any, can no
        longer run.

        Args:
          params: Any point of the structure (only its structural values are read).
          width: Slots; ``config.pack_width`` by default.
        """
        width = width or self.config.pack_width
        if width < 1:
            raise ValueError(f"a pack has at least one slot, not {width}")
        try:
            program, oom = self.program(params, width), None
        except tf.errors.ResourceExhaustedError as e:
            program, oom = None, out_of_memory(e, width)
        # After the build, which may have made a parameter structural (_ReadAsNumber).
        key = self.space.structure_key(params)
        context = PackContext(
            space=self.space,
            fixed=self.config.fixed,
            epochs=self.config.epochs,
            steps_per_execution=self.config.steps_per_execution,
            datasets=self.data(params),
            clock=self.clock,
            forget=self._forget,
        )
        return Pack(program, context, key, width, out_of_memory=oom)

    def run_trial(
        self,
        params: Mapping[str, Any],
        *,
        seed: int,
        state: Checkpoint | None = None,
        width: int = 1,
    ) -> Outcome:
        """Trains and evaluates one trial to ``config.epochs`` in slot 0 of a pack.

        Args:
          params: A value for every parameter of the search space.
          seed: Seeds the trial's initial weights and dropout draws.
          state: Continue this state instead of starting from fresh weights.
          width: The program width to run in (the other slots stay idle).
        """
        pack = self.pack(params, width)
        pack.load(0, params, seed=seed, state=state)
        while pack.active:
            pack.run_epoch()
        return pack.result(0)

    def model(self, params: Mapping[str, Any]) -> Any:
        """A Keras model of ``params``'s structure (tower 0 of a cached program)."""
        return self._any_program(params).towers[0].model

    def save_weights(self, params: Mapping[str, Any], weights: list[np.ndarray], path: str) -> None:
        """Writes a weight list (as :meth:`Pack.weights` gives) as a Keras ``.weights.h5``.

        Through a fresh host model of ``params``'s structure, so no tower of a pack is touched.
        """
        model = self._saving_model(params)
        for variable, value in zip(model.variables, weights, strict=True):
            variable.assign(value)
        models.save_model_weights(model, path)

    def evaluate_weights(
        self, params: Mapping[str, Any], weights: list[np.ndarray], data: EvalData
    ) -> dict[str, float]:
        """Evaluates a weight list (as :meth:`Pack.weights` gives) on every example of ``data``.

        Borrows tower 0 of a program of ``params``'s structure and puts its weights back, so a
        pack using that program is not disturbed.
        """
        program = self._any_program(params)
        tower = program.towers[0]
        kept = host_values(tower.model.variables)
        try:
            for variable, value in zip(tower.model.variables, weights, strict=True):
                variable.assign(value)
            return program.evaluate(data)[0]
        finally:
            for variable, value in zip(tower.model.variables, kept, strict=True):
                variable.assign(value)

    def evaluate_saved(
        self, params: Mapping[str, Any], path: str, data: EvalData
    ) -> dict[str, float]:
        """Evaluates saved ``.weights.h5`` on every example of ``data``, as
        :meth:`evaluate_weights` does."""
        model = self._saving_model(params)
        models.load_model_weights(model, path)
        return self.evaluate_weights(params, host_values(model.variables), data)

    def _saving_model(self, params: Mapping[str, Any]) -> Any:
        """A host model of ``params``'s structure, built once per structure (a new best's
        weights are saved through it without building a model each time)."""
        key = self.space.structure_key(params)
        if key not in self._host_models:
            if len(self._host_models) >= self.config.max_programs:
                self._host_models.pop(next(iter(self._host_models)))
            self._host_models[key] = self.host_model({**self.config.fixed, **params})
        return self._host_models[key]

    # Programs.

    def _any_program(self, params: Mapping[str, Any]) -> Program:
        """A cached program of ``params``'s structure, of any width (else a new one of 1)."""
        structure = self.space.structure_key(params)
        for (key, _width), program in reversed(self._programs.items()):
            if key == structure:
                return program
        return self.program(params, 1)

    def program(self, params: Mapping[str, Any], width: int) -> Program:
        """The cached program of ``params``'s structure and ``width`` towers, else a new one
        (the least recently used is dropped when ``max_programs`` are cached)."""
        key = (self.space.structure_key(params), width)
        program = self._programs.get(key)
        if program is not None:
            self._programs.move_to_end(key)
            return program
        while len(self._programs) >= self.config.max_programs:
            (old_key, _width), _ = self._programs.popitem(last=False)
            log.debug("program cache full: dropped the program for %s", dict(old_key))
        with self.clock.measure("trace"):
            try:
                program = self._build(key[0], width, params)
            except _ReadAsNumber as e:
                program = None
                self.space = e.space
                # The study opens with this config, so the plan is its identity's roles.
                self.config = dataclasses.replace(self.config, space=self.space, space_file="")
                log.info("%s", self.space[e.param].describe())
        if program is None:
            return self.program(params, width)  # the same point, under the new plan
        self._programs[key] = program
        return program

    def settle_width(self, k: int) -> Config:
        """Settles ``--parallel_trials=auto`` to ``k`` trials a pack; returns the config, which
        this trainer keeps too."""
        self.config = dataclasses.replace(self.config, parallel_trials=k)
        return self.config

    def drop_program(self, params: Mapping[str, Any], width: int) -> None:
        """Drops the cached program of ``params``'s structure and ``width`` towers, if any
        (``--parallel_trials=auto`` keeps only the width it chose)."""
        self._programs.pop((self.space.structure_key(params), width), None)

    def _forget(self, program: Program) -> None:
        """Forgets ``program`` (after it ran out of memory); the next pack of it rebuilds."""
        key = (program.key, program.width)
        if self._programs.get(key) is program:
            del self._programs[key]

    def _build(self, key: tuple[Any, ...], width: int, params: Mapping[str, Any]) -> Program:
        runtime = set(self.space.runtime_names())
        towers = []
        with precision(self.config.mixed_precision), self.strategy.scope(), recording() as made:
            for _ in range(width):
                tower = Tower(runtime | TRAINER_RUNTIME, self.trips)
                values = dict(self.config.fixed)
                for name, value in params.items():
                    values[name] = (
                        RuntimeValue(name, tower.runtime_vars[name]) if name in runtime else value
                    )
                tower.hp_values = values
                tower.model = self._call_builder(values)
                # The compiled optimizer's copy, unless one is given explicitly.
                try:
                    notes = make_optimizer(
                        tower,
                        self.space,
                        kind=values.get("optimizer", self.config.optimizer),
                        name=self.config.model_name,
                        schedule_shape=self.config.lr_schedule,
                        total_steps=self.config.epochs * self.data(params).steps_per_epoch,
                    )
                except NotReadAtEveryStep as e:
                    if self._programs or self.traces:  # the plan was settled by the first build
                        raise
                    new_plan = self.space.read_as_number(e.param, e.by)
                    raise _ReadAsNumber(new_plan, e.param) from None
                if not towers:  # once per program
                    for note in notes:
                        log.info("%s", note)
                tower.optimizer.build(tower.model.trainable_variables)
                heads.attach(
                    tower,
                    self.datasets.zeros(2),
                    name=self.config.model_name,
                    smoothing="label_smoothing" in {*self.space.names, *self.config.fixed},
                )
                towers.append(tower)
        heads.check_labels(
            towers[0],
            self.datasets.zeros(2),
            self.datasets.element_spec[1],
            self.datasets.num_classes,
            name=self.config.model_name,
            host_model=lambda: self.host_model(towers[0].hp_values),
        )
        for tower in towers:
            tower.optimizer_snapshot = tower.optimizer_values()
        functions = make_functions(
            towers,
            self.strategy,
            self.data(params).global_batch,
            jit_compile=self.jit_compile,
            on_trace=self.counts.train_or_eval,
        )
        planned = plan(
            [t.model.variables for t in towers], made, self.strategy, self.config.initial_weights
        )
        self._say_kept(planned.kept, len(towers[0].model.variables))
        reset_fn = make_reset(towers, planned, self.strategy, on_trace=self.counts.reset)
        what = dict(key) or "(runtime-only space)"
        log.debug("built the program for structure %s%s", what, f", {width} towers" * (width > 1))
        return Program(
            key,
            towers,
            functions,
            reset_fn,
            strategy=self.strategy,
            traces=self.counts,
            host_model=self.host_model,
            name=self.config.model_name,
        )

    def _say_kept(self, kept: list[str], total: int) -> None:
        """One line, once per study, when the builder's own values are kept (``auto``)."""
        if not kept or self._said_kept:
            return
        self._said_kept = True
        shown = ", ".join(kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
        log.info(
            "model %s: %d of %d variables keep the values the builder gave them (assigned after "
            "creation, e.g. pretrained weights: %s); the rest are drawn from each trial's seed "
            "(--initial_weights=seeded draws every one)",
            self.config.model_name, len(kept), total, shown,
        )  # fmt: skip

    def _call_builder(self, values: Mapping[str, Any]) -> Any:
        """The builder's model of ``values``, built, with Keras's noise layers taking runtime
        values (:func:`tpu_bo.train.layers.keras_layers_take_runtime_values`).

        A runtime value the builder reads as a number (:func:`tpu_bo.train.layers.read_as_number`)
        at its first run makes that parameter structural: :class:`_ReadAsNumber` carries the
        new plan to :meth:`program`, which builds again. Later (another structure), or for a
        parameter given the role runtime, it is a ``ConfigError`` naming ``param``.
        """
        hp = models.HParams(values)
        name = self.config.model_name
        classes = self.datasets.num_classes
        try:
            with keras_layers_take_runtime_values():
                model = self.builder(hp, self.datasets.input_shape, classes)
                if isinstance(model, keras.Model):  # layers made in build() take them too
                    models.ensure_built(model, self.datasets.zeros(1)[0])
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's builder may raise anything
            found = read_as_number(e, values.values())
            if found is not None:
                raise self._read_as_number(values, found[0].name, found[1]) from None
            if classes is not None:
                raise
            label = self.datasets.element_spec[1]
            raise ConfigError(
                "label",
                f"the labels ({describe(label)}) are not class indices, so model {name} gets "
                f"num_classes=None and failed ({type(e).__name__}: {first_line(e)}); the default "
                "loss needs integer class labels: compile your model with its own loss and "
                "metrics for any other task.",
            ) from None
        self._planned = True
        if not isinstance(model, keras.Model):
            raise ConfigError(
                "model", f"builder {name} returned {type(model).__name__}, not a keras.Model."
            )
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

    def _read_as_number(self, values: Mapping[str, Any], param: str, by: str) -> Exception:
        """What ``by`` reading runtime ``param`` as a number while the model was built raises."""
        if not self._planned:
            return _ReadAsNumber(self.space.read_as_number(param, by), param)
        structure = dict(self.space.structure_key(values)) or "its first structure"
        return ConfigError(
            "param",
            f"model {self.config.model_name} reads hyperparameter {param!r} as a number (by "
            f"{by}) when built for {structure}, but the study planned it as runtime at its "
            f"first build, which did not; give it the role structural "
            f"(--param={param}:...:structural).",
        )

    def check_objective(self, params: Mapping[str, Any]) -> Config:
        """One sentence naming ``objective`` when no trial of ``params``'s structure reports it;
        else the config with the objective's direction settled by its metric object
        (:meth:`Config.settle_direction`) and, for an uncompiled model, the default optimizer
        named; this trainer keeps it too."""
        reported = self.reported_metrics(params)
        if self.config.objective not in reported:
            raise ConfigError(
                "objective",
                f"model {self.config.model_name} reports {', '.join(reported)}, not "
                f"{self.config.objective}.",
            )
        tower = self._any_program(params).towers[0]
        self.config = self.config.settle_direction(heads.metric_directions(tower))
        if self.config.optimizer is None and getattr(tower.model, "optimizer", None) is None:
            # An uncompiled model trains with the default optimizer; the study's identity says
            # so by name, as it did before a compiled optimizer was honoured, so those studies
            # still resume.
            self.config = dataclasses.replace(self.config, optimizer=DEFAULT_OPTIMIZER)
        return self.config

    def reported_metrics(self, params: Mapping[str, Any]) -> list[str]:
        """Every metric a trial of ``params``'s structure reports (``loss``, ``val_...``)."""
        names = self._any_program(params).metric_names
        return ["loss", "val_loss", *(f"val_{n}" for n in names)]

    def host_model(self, values: Mapping[str, Any]) -> Any:
        """A fresh model of ``values``' structure, outside every program and strategy (runtime
        values as plain numbers)."""
        with precision(self.config.mixed_precision):
            return models.build_model(
                self.builder,
                values,
                self.datasets.input_shape,
                self.datasets.num_classes,
                example=self.datasets.zeros(1)[0],
            )
