"""KerasTuner's tuners over tpu_bo's engine: ``BayesianOptimization``, ``RandomSearch``,
``Hyperband``, with their ``Objective``, ``HyperModel``, ``Oracle`` and ``Trial``.

A tuner is built as KerasTuner's is (the same arguments, the space found by building the
model-building function: :mod:`tpu_bo.keras_tuner.space`); ``search`` runs one
:func:`tpu_bo.run_study` in ``directory/project_name``, which holds a tpu_bo study (its
journal, ``summary.json``, ``best/``, ``kept/``). A second ``search`` there, by the same tuner or
a new one, resumes it; ``overwrite=True`` deletes the directory when the tuner is built, as
KerasTuner does. Everything a tuner reports afterwards (``results_summary``, ``oracle``,
``get_best_hyperparameters``, ``get_best_models``) is read back from that directory.

How KerasTuner's settings map onto the study's (docs/keras_tuner.md):

* ``BayesianOptimization``: ``sampler=bayes_opt``, ``num_initial_points`` random trials
  (KerasTuner's default: 3 per declared hyperparameter, at least 3) then guided ones up to
  ``max_trials``; a ``beta`` other than KerasTuner's 2.6 is UCB's ``kappa``.
* ``RandomSearch``: ``sampler=random``, ``max_trials`` trials.
* ``Hyperband``: ``sampler=random`` with ``prune=hyperband`` (``reduction_factor=factor``,
  ``epochs=max_epochs``, ``min_epochs=1``); its trials are the configurations KerasTuner's
  Hyperband would start (:func:`hyperband_trials`), each one a tpu_bo trial that the pruner
  stops early (KerasTuner counts each of a configuration's rounds as a trial of its own).
* ``seed=None`` is seed 0 (a study's identity holds its seed, so a resumed study needs the same);
  ``batch_size`` defaults to Keras's 32; ``epochs`` to ``fit``'s 1.
* A trial's score is its best epoch's, as in both. Trials rank by score, as KerasTuner's oracle
  ranks them; their weights come from ``best/`` and ``kept/`` (the study keeps the
  :data:`tpu_bo.search.recommend.TOP` best trials' weights).

``keras.callbacks.EarlyStopping`` on the objective is the study's early stopping per trial
(``patience``, ``min_delta``). Anything a tuner cannot honour is one :class:`tpu_bo.ConfigError`
naming the argument: any other callback (none runs: tpu_bo trains
in its own compiled loop), a ``HyperModel.fit`` that changes more than ``model.fit``'s
``batch_size`` (:class:`HyperModel`), a fit argument such as ``class_weight``, and the like.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_bo.errors import ConfigError
from tpu_bo.keras_tuner import search_args
from tpu_bo.keras_tuner.hyperparameters import HyperParameters, with_values
from tpu_bo.keras_tuner.space import (
    Space,
    build_and_fit,
    discover,
    fit_batch,
    optimizer_feeds,
    runtime_choices,
)
from tpu_bo.objectives import infer_maximize
from tpu_bo.records import Status, TrialRecord

# Arguments of KerasTuner's Tuner that a tpu_bo study takes at their defaults only.
_DEFAULTS_ONLY = {
    "max_model_size": None,
    "distribution_strategy": None,
    "max_retries_per_trial": 0,
    "alpha": 1e-4,
}
_IGNORED = ("logger", "tuner_id", "max_consecutive_failed_trials")  # no effect on a study


class Objective:
    """The metric a search optimizes and its direction, ``"max"`` or ``"min"``."""

    def __init__(self, name: str, direction: str) -> None:
        self.name, self.direction = name, direction

    def has_value(self, logs: Mapping[str, Any]) -> bool:
        return self.name in logs

    def get_value(self, logs: Mapping[str, Any]) -> Any:
        return logs[self.name]

    def better_than(self, a: float, b: float) -> bool:
        return (a > b and self.direction == "max") or (a < b and self.direction == "min")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Objective) and (self.name, self.direction) == (
            other.name,
            other.direction,
        )

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return f'Objective(name="{self.name}", direction="{self.direction}")'

    __repr__ = __str__


def create_objective(objective: Any) -> Objective:
    """An :class:`Objective` from a name (its direction inferred) or an Objective.

    Raises:
      ConfigError: naming ``objective``: none, a list (several objectives), an unknown type, or
        a name whose direction cannot be inferred.
    """
    if isinstance(objective, Objective):
        if objective.direction not in ("max", "min"):
            raise ConfigError(
                "objective", f"direction must be 'max' or 'min', got {objective.direction!r}."
            )
        return objective
    if objective is None:
        raise ConfigError(
            "objective",
            "give the metric to optimize, for example objective='val_accuracy' or "
            "kt.Objective('val_loss', direction='min') (tpu_bo scores trials by a metric, not "
            "by a value HyperModel.fit returns).",
        )
    if isinstance(objective, (list, tuple)):
        raise ConfigError(
            "objective",
            "tpu_bo optimizes one objective; give one name or kt.Objective, not a list.",
        )
    if not isinstance(objective, str):
        raise ConfigError(
            "objective", f"expected a str or kt.Objective, got {type(objective).__name__}."
        )
    maximize = infer_maximize(objective)
    if maximize is None:
        raise ConfigError(
            "objective",
            f'cannot tell the direction ("min" or "max") of {objective!r}; give it as '
            f'kt.Objective("{objective}", direction="min") or direction="max".',
        )
    return Objective(objective, "max" if maximize else "min")


class HyperModel:
    """A model-building class: override ``build(self, hp)`` (KerasTuner's ``HyperModel``).

    ``fit(self, hp, model, *args, **kwargs)`` is KerasTuner's hook for a custom training call.
    tpu_bo trains every trial in its own compiled loop, so an overridden ``fit`` is run once per
    probe with a stand-in model that records its ``model.fit`` call
    (:func:`tpu_bo.keras_tuner.space.fit_batch`): it may pass search's arguments on with a
    ``batch_size`` of its own, a number or a hyperparameter (``hp.Choice("batch_size", [32,
    64])``: tpu_bo's structural ``batch_size``, one program and one input pipeline per size);
    anything else it changes is one ``ConfigError`` naming ``hypermodel``.
    """

    def __init__(self, name: str | None = None, tunable: bool = True) -> None:
        self.name, self.tunable = name, tunable

    def build(self, hp: HyperParameters) -> Any:
        raise NotImplementedError

    def declare_hyperparameters(self, hp: HyperParameters) -> None:
        """Declares hyperparameters ahead of ``build`` (none by default)."""

    def fit(self, hp: HyperParameters, model: Any, *args: Any, **kwargs: Any) -> Any:
        """``model.fit(*args, **kwargs)``: what a model built outside a study trains with."""
        return model.fit(*args, **kwargs)


class _FunctionModel(HyperModel):
    """A model-building function as a :class:`HyperModel`."""

    def __init__(self, build: Any) -> None:
        super().__init__()
        self._function = build
        self.module = getattr(build, "__module__", type(build).__module__)
        self.qualname = getattr(build, "__qualname__", type(build).__qualname__)

    def build(self, hp: HyperParameters) -> Any:
        return self._function(hp)


def get_hypermodel(hypermodel: Any) -> HyperModel:
    """``hypermodel`` as a :class:`HyperModel`: a function ``build(hp)``, or an object with a
    ``build`` method.

    Raises:
      ConfigError: naming ``hypermodel``: missing, not callable, or overriding ``fit``.
    """
    if hypermodel is None:
        raise ConfigError(
            "hypermodel", "give the model-building function build(hp) or a HyperModel."
        )
    build = getattr(hypermodel, "build", None)
    if callable(build) and not isinstance(hypermodel, type):
        return hypermodel
    if callable(hypermodel):
        return _FunctionModel(hypermodel)
    raise ConfigError(
        "hypermodel",
        f"expected a function build(hp) or a HyperModel, got {type(hypermodel).__name__}.",
    )


class Metrics:
    """A trial's metrics by epoch (a small form of KerasTuner's ``MetricsTracker``)."""

    def __init__(self, history: Sequence[Mapping[str, float]], objective: Objective) -> None:
        self.history = [dict(h) for h in history]
        self.objective = objective

    def exists(self, name: str) -> bool:
        return any(name in h for h in self.history)

    def get_history(self, name: str) -> list[float]:
        """The metric's value at every epoch."""
        return [h[name] for h in self.history if name in h]

    def get_last_value(self, name: str) -> float | None:
        values = self.get_history(name)
        return values[-1] if values else None

    def get_best_value(self, name: str) -> float | None:
        values = self.get_history(name)
        if not values:
            return None
        up = infer_maximize(name)
        if name == self.objective.name:
            up = self.objective.direction == "max"
        return max(values) if up else min(values)


class Trial:
    """One trial as KerasTuner shows it.

    Attributes:
      trial_id: The trial's number, zero-padded as KerasTuner pads it.
      number: tpu_bo's trial number.
      hyperparameters: A :class:`HyperParameters` holding the trial's active values.
      score: Its objective at its best epoch (``None`` for a failed trial).
      best_step: That epoch, counted from 0.
      status: ``COMPLETED``, ``PRUNED`` (stopped early by Hyperband's pruner), ``FAILED`` or
        ``RUNNING``.
      message: Why it failed, else ``None``.
      metrics: Its metrics by epoch (:class:`Metrics`).
      record: tpu_bo's :class:`tpu_bo.TrialRecord`.
    """

    _STATUS = {Status.OK: "COMPLETED", Status.PRUNED: "PRUNED", Status.FAILED: "FAILED"}

    def __init__(self, record: TrialRecord, hyperparameters: HyperParameters, *, width: int,
                 objective: Objective) -> None:  # fmt: skip
        self.record, self.number = record, record.number
        self.trial_id = f"{record.number:0{width}d}"
        self.hyperparameters = hyperparameters
        self.score = record.target
        self.best_step = (record.best_epoch or 1) - 1
        self.status = self._STATUS.get(record.status, "RUNNING")
        self.message = record.error
        self.metrics = Metrics(record.history, objective)

    def summary(self) -> None:
        """Prints the trial as KerasTuner's ``Trial.summary`` does."""
        print(f"Trial {self.trial_id} summary")
        print("Hyperparameters:")
        self.display_hyperparameters()
        if self.score is not None:
            print(f"Score: {self.score}")
        if self.message is not None:
            print(self.message)

    def display_hyperparameters(self) -> None:
        if self.hyperparameters.values:
            for name, value in self.hyperparameters.values.items():
                print(f"{name}:", value)
        else:
            print("default configuration")

    def __repr__(self) -> str:
        return f"Trial({self.trial_id}, {self.status}, score={self.score})"


class Oracle:
    """What a tuner's study holds, read back from its directory (KerasTuner's ``Oracle``).

    Attributes:
      objective: The :class:`Objective`.
      max_trials: The budget in trials (``None`` for Hyperband, as in KerasTuner).
      hyperparameters: The search space, as a :class:`HyperParameters` at its defaults.
    """

    def __init__(self, tuner: Tuner) -> None:
        self._tuner = tuner
        self.objective = tuner._objective
        self.max_trials = tuner._max_trials
        self.hyperparameters = with_values(tuner._space.declarations, tuner._space.defaults())

    @property
    def trials(self) -> dict[str, Trial]:
        """Every trial of the study so far, by ``trial_id``."""
        return {t.trial_id: t for t in self._tuner._trials()}

    def get_trial(self, trial_id: str) -> Trial:
        return self.trials[trial_id]

    def get_space(self) -> HyperParameters:
        return self.hyperparameters.copy()

    def get_best_trials(self, num_trials: int = 1) -> list[Trial]:
        """The ``num_trials`` best completed trials, best first; then, if they are fewer, the
        others (as KerasTuner's oracle does)."""
        trials = self._tuner._trials()
        done = [t for t in trials if t.status == "COMPLETED" and t.score is not None]
        done.sort(key=lambda t: (-t.score if self.objective.direction == "max" else t.score,
                                 t.number))  # fmt: skip
        if len(done) < num_trials:
            done += [t for t in trials if t not in done]
        return done[:num_trials]

    def remaining_trials(self) -> int | None:
        if self.max_trials is None:
            return None
        return self.max_trials - len(self._tuner._trials())


class Tuner:
    """The tuner every KerasTuner tuner here is: builds the space, runs the study, reads it back.

    Args:
      hypermodel: A function ``build(hp)`` returning a (compiled) Keras model, or a
        :class:`HyperModel`.
      objective: The metric to optimize: a name (``val_accuracy``) or an :class:`Objective`.
      max_trials: The budget in trials (``None``: the tuner's own, Hyperband's).
      seed: Seeds the sampler, the data order and the trials (``None``: 0).
      hyperparameters: Declarations registered before the function's own (they win).
      tune_new_entries: Whether a hyperparameter not in ``hyperparameters`` is searched
        (``False``: it stays at its default).
      allow_new_entries: As ``tune_new_entries`` (a new entry keeps its default either way).
      directory: The directory of projects (KerasTuner's; default ``.``).
      project_name: The study's directory inside it (default ``untitled_project``).
      overwrite: Deletes ``directory/project_name`` first, else a search resumes it.
      executions_per_trial: Trains each trial this many times, with different seeds, side by
        side in one pack, and scores it by their mean (``--executions_per_trial``).
      optimizer, loss, metrics: Compile every model with these instead of its own.
      tpu_bo: More :class:`tpu_bo.Config` fields for the study (``parallel_trials=4``...).
      **kwargs: KerasTuner's other arguments, each refused unless at its default.

    Raises:
      ConfigError: naming the argument at fault (see the module docstring).
    """

    def __init__(
        self,
        hypermodel: Any = None,
        objective: Any = None,
        max_trials: int | None = 10,
        seed: int | None = None,
        hyperparameters: HyperParameters | None = None,
        tune_new_entries: bool = True,
        allow_new_entries: bool = True,
        *,
        directory: str | None = None,
        project_name: str | None = None,
        overwrite: bool = False,
        executions_per_trial: int = 1,
        optimizer: Any = None,
        loss: Any = None,
        metrics: Any = None,
        tpu_bo: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        for name, value in kwargs.items():
            if name in _IGNORED:
                continue
            if name not in _DEFAULTS_ONLY:
                raise ConfigError(
                    name, f"is not an argument of KerasTuner's {type(self).__name__}."
                )
            if value != _DEFAULTS_ONLY[name]:
                raise ConfigError(
                    name,
                    f"is not supported by tpu_bo.keras_tuner (only its default, "
                    f"{_DEFAULTS_ONLY[name]!r}); drop it.",
                )
        if not isinstance(executions_per_trial, int) or executions_per_trial < 1:
            raise ConfigError(
                "executions_per_trial",
                f"must be a positive whole number, got {executions_per_trial!r}.",
            )
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ConfigError("seed", f"must be a whole number >= 0, got {seed!r}.")
        if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 1):
            raise ConfigError("max_trials", f"must be a positive whole number, got {max_trials!r}.")
        if not tune_new_entries or not allow_new_entries:
            if not hyperparameters or not hyperparameters.space:
                flag = "tune_new_entries" if not tune_new_entries else "allow_new_entries"
                raise ConfigError(
                    flag, "needs the search space given by the hyperparameters argument."
                )
        self._objective = create_objective(objective)
        self._max_trials, self._seed = max_trials, seed or 0
        self._executions = executions_per_trial
        self.hypermodel = get_hypermodel(hypermodel)
        self.directory = directory or "."
        self.project_name = project_name or "untitled_project"
        self._options = dict(tpu_bo or {})
        self._compile = {"optimizer": optimizer, "loss": loss, "metrics": metrics}
        self._preset = _preset(self.hypermodel, hyperparameters)
        self._only = (
            None if tune_new_entries and allow_new_entries else {d.name for d in self._preset}
        )
        self._space = _find_space(self.hypermodel, self._preset, self._only)
        self._builder = self._space.builder(self.hypermodel, self._compile)
        self.result: Any = None  # the last search's tpu_bo.StudyResult
        if overwrite and _exists(self.project_dir):
            import tensorflow as tf

            tf.io.gfile.rmtree(self.project_dir)
        elif _exists(os.path.join(self.project_dir, "trials.journal")):
            print(f"Reloading Tuner from {self.project_dir}")
        self.oracle = Oracle(self)

    @property
    def project_dir(self) -> str:
        """``directory/project_name``: the study's output directory."""
        return os.path.join(str(self.directory), self.project_name)

    @property
    def remaining_trials(self) -> int | None:
        return self.oracle.remaining_trials()

    # The search.

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
        """Runs (or resumes) the study on what ``model.fit`` would take.

        Args:
          *fit_args: ``x`` and ``y``: arrays (``x`` may be a dict of arrays), or a batched
            ``tf.data.Dataset`` of ``(features, labels)`` as ``x`` alone.
          **fit_kwargs: ``epochs`` (1), ``batch_size`` (32; a Dataset's own batch),
            ``validation_data`` (a pair or a Dataset), ``validation_split``, ``verbose``,
            ``shuffle=True``; ``callbacks``: ``EarlyStopping`` on the objective and
            ``TensorBoard`` (study settings: see :func:`search_args.callbacks_fields`).

        Raises:
          ConfigError: naming the argument tpu_bo cannot honour.
        """
        from tpu_bo.session.run import run_study

        kwargs = search_args.fit_kwargs(fit_args, fit_kwargs)
        train, validation, study = search_args.data(kwargs)
        fit = getattr(type(self.hypermodel), "fit", None)
        if fit is not None and getattr(fit, "__qualname__", "") != "HyperModel.fit":
            batch = self._with_fit(fit_args, fit_kwargs)
            if batch is not None:
                study["batch_size"] = batch
        study.update(search_args.callbacks_fields(kwargs.get("callbacks") or [], self._objective))
        overrides = {
            "model": self._builder,
            "space": self._space.search_space(),
            "output_dir": self.project_dir,
            "objective": self._objective.name,
            "objective_mode": self._objective.direction,
            "seed": self._seed,
            "epochs": int(kwargs.get("epochs", 1)),
            # get_best_models(n) loads the n best trials' weights from kept/.
            "keep_top": True,
            "executions_per_trial": self._executions,
            **study,
            **self._study(int(kwargs.get("epochs", 1))),
        }
        from tpu_bo.config import Config

        fields = set(Config.__dataclass_fields__)
        for key in self._options:
            if key not in fields:
                raise ConfigError("tpu_bo", f"{key!r} is not a field of tpu_bo.Config.")
        overrides.update(self._options)
        self.result = run_study(data=train, validation_data=validation, **overrides)

    def _study(self, epochs: int) -> dict[str, Any]:
        """The study's sampler and budget (each tuner's own)."""
        raise NotImplementedError

    def _with_fit(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int | None:
        """An overridden ``HyperModel.fit``: the space again with what fit declares, its
        ``batch_size`` hyperparameter as tpu_bo's; returns its constant batch size, if any."""
        run = build_and_fit(args, kwargs)
        preset = _container(self._preset)
        declarations, _ = discover(self.hypermodel, preset, run)
        fed, batch = fit_batch(self.hypermodel, declarations, self._preset, args, kwargs)
        self._space = _find_space(
            self.hypermodel, self._preset, self._only, declarations=declarations,
            batch=fed,
        )  # fmt: skip
        self._builder = self._space.builder(self.hypermodel, self._compile)
        self.oracle = Oracle(self)
        return batch

    # Reading the study back.

    def _trials(self) -> list[Trial]:
        from tpu_bo.results import load_records

        if not _exists(os.path.join(self.project_dir, "trials.journal")):
            return []
        width = len(str(self._max_trials))
        out = []
        for record in load_records(self.project_dir):
            values = self._space.values(record.params)
            hp = with_values(self._space.declarations, values)
            out.append(Trial(record, hp, width=width, objective=self._objective))
        return out

    def search_space_summary(self, extended: bool = False) -> None:
        """Prints the search space as KerasTuner does, then each hyperparameter's tpu_bo
        parameter and role."""
        del extended
        print("Search space summary")
        space = self._space.declarations
        print(f"Default search space size: {len(space)}")
        for p in space:
            config = p.get_config()
            name = config.pop("name")
            print(f"{name} ({type(p).__name__})")
            print(config)
        print("tpu_bo parameters:")
        for line in self._space.roles():
            print(f"  {line}")

    def results_summary(self, num_trials: int = 10) -> None:
        """Prints the best trials as KerasTuner does."""
        print("Results summary")
        print(f"Results in {self.project_dir}")
        print(f"Showing {num_trials} best trials")
        print(f"{self._objective}")
        for trial in self.oracle.get_best_trials(num_trials):
            print()
            trial.summary()

    def get_best_hyperparameters(self, num_trials: int = 1) -> list[HyperParameters]:
        """The best trials' hyperparameters, best first (``hypermodel.build`` takes each)."""
        return [t.hyperparameters for t in self.oracle.get_best_trials(num_trials)]

    def get_best_models(self, num_models: int = 1) -> list[Any]:
        """The best trials' models, best first: each built by the model-building function
        (compiled as it compiles them) and holding the trial's weights from its best epoch.

        Raises:
          ConfigError: naming ``num_models``, for a trial whose weights the study did not keep
            (it keeps the best :data:`tpu_bo.search.recommend.TOP`).
        """
        from tpu_bo.study.output_dir import BEST_TRIAL, BEST_WEIGHTS, OutputDir, kept_name
        from tpu_bo.train import models

        files = OutputDir(self.project_dir, writer=False)
        info = files.read_json(BEST_TRIAL) if _exists(self.project_dir) else None
        if info is None:
            raise ConfigError(
                "num_models", f"{self.project_dir} holds no trained trial yet; run search first."
            )
        out = []
        for trial in self.oracle.get_best_trials(num_models):
            if files.exists(kept_name(trial.number)):
                path = files.path(kept_name(trial.number))
            elif info.get("trial") == trial.number:
                path = files.path(BEST_WEIGHTS)
            else:
                raise ConfigError(
                    "num_models",
                    f"trial {trial.trial_id} ({trial.status.lower()}) has no saved weights: the "
                    "study keeps the best completed trials' only; ask for fewer models.",
                )
            model = models.build_model(
                self._builder,
                {**info.get("fixed", {}), **trial.record.params},
                info["input_shape"],
                info["num_classes"],
            )
            models.load_model_weights(model, path)
            out.append(model)
        return out


def _preset(hypermodel: HyperModel, preset: HyperParameters | None) -> list[Any]:
    """The tuner's ``hyperparameters`` and what ``declare_hyperparameters`` adds to them."""
    space = list(preset.space) if preset is not None else []
    declare = getattr(hypermodel, "declare_hyperparameters", None)
    if callable(declare):
        container = HyperParameters()
        container.merge(space)
        declare(container)
        space = list(container.space)
    return space


def _find_space(
    hypermodel: HyperModel,
    preset: Sequence[Any],
    only: set[str] | None,
    *,
    declarations: Sequence[Any] | None = None,
    batch: str = "",
) -> Space:
    """Discovery (unless ``declarations`` are given), then the optimizer and runtime probes
    (:mod:`tpu_bo.keras_tuner.space`); ``batch``: the declaration fit passes as batch_size."""
    if declarations is None:
        declarations, _ = discover(hypermodel, _container(preset))
    feeds = optimizer_feeds(hypermodel, declarations, preset)
    if batch:
        feeds[batch] = "batch_size"
    space = Space(declarations, feeds=feeds, searched=only)
    runtime = runtime_choices(hypermodel, space, preset)
    if runtime:
        space = Space(declarations, feeds=feeds, runtime=runtime, searched=only)
    return space


def _container(space: Sequence[Any]) -> HyperParameters | None:
    if not space:
        return None
    container = HyperParameters()
    container.merge(list(space))
    return container


def _exists(path: str) -> bool:
    if "://" in path:
        import tensorflow as tf

        return bool(tf.io.gfile.exists(path))
    return os.path.exists(path)


# The tuners.


class BayesianOptimization(Tuner):
    """KerasTuner's ``BayesianOptimization`` on tpu_bo's GP sampler (``bayes_opt``).

    Args:
      num_initial_points: Random trials before the GP proposes (default: 3 per declared
        hyperparameter, at least 3, at most ``max_trials``).
      beta: UCB's exploration; KerasTuner's default 2.6 leaves tpu_bo's own acquisition (auto).
      (the others: :class:`Tuner`)
    """

    def __init__(
        self,
        hypermodel: Any = None,
        objective: Any = None,
        max_trials: int = 10,
        num_initial_points: int | None = None,
        alpha: float = 1e-4,
        beta: float = 2.6,
        seed: int | None = None,
        hyperparameters: HyperParameters | None = None,
        tune_new_entries: bool = True,
        allow_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        **kwargs: Any,
    ) -> None:
        if num_initial_points is not None and (
            not isinstance(num_initial_points, int) or num_initial_points < 1
        ):
            raise ConfigError(
                "num_initial_points",
                f"must be a positive whole number, got {num_initial_points!r}.",
            )
        self.num_initial_points, self.beta = num_initial_points, beta
        super().__init__(
            hypermodel, objective, max_trials, seed, hyperparameters, tune_new_entries,
            allow_new_entries, alpha=alpha, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials, **kwargs,
        )  # fmt: skip

    def _study(self, epochs: int) -> dict[str, Any]:
        dims = len({d.name for d in self._space.declarations})
        first = self.num_initial_points or max(3 * dims, 3)
        first = min(first, self._max_trials)
        out = {"sampler": "bayes_opt", "init_points": first, "n_iter": self._max_trials - first}
        if self.beta != 2.6:
            out.update(acquisition="ucb", kappa=float(self.beta))
        return out


class RandomSearch(Tuner):
    """KerasTuner's ``RandomSearch``: ``max_trials`` random trials (Optuna's random sampler)."""

    def __init__(
        self,
        hypermodel: Any = None,
        objective: Any = None,
        max_trials: int = 10,
        seed: int | None = None,
        hyperparameters: HyperParameters | None = None,
        tune_new_entries: bool = True,
        allow_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            hypermodel, objective, max_trials, seed, hyperparameters, tune_new_entries,
            allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials, **kwargs,
        )  # fmt: skip

    def _study(self, epochs: int) -> dict[str, Any]:
        return {"sampler": "random", "init_points": self._max_trials, "n_iter": 0}


def hyperband_trials(max_epochs: int, factor: int, iterations: int = 1) -> int:
    """The configurations KerasTuner's Hyperband starts: the first round of every bracket
    (``HyperbandOracle._get_size(bracket, 0)``), over ``iterations`` sweeps."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end = math.ceil(1 + math.log(max_epochs, factor))
    per_sweep = sum(math.ceil(end / (b + 1) * factor**b) for b in range(brackets))
    return per_sweep * iterations


class Hyperband(Tuner):
    """KerasTuner's ``Hyperband`` as random trials under Optuna's Hyperband pruner.

    Args:
      max_epochs: The epochs of a configuration that is never stopped (a search's ``epochs`` is
        ignored, as in KerasTuner).
      factor: The reduction factor (``reduction_factor``), at least 2.
      hyperband_iterations: Sweeps over the brackets; the trials are
        :func:`hyperband_trials`.
      (the others: :class:`Tuner`)
    """

    def __init__(
        self,
        hypermodel: Any = None,
        objective: Any = None,
        max_epochs: int = 100,
        factor: int = 3,
        hyperband_iterations: int = 1,
        seed: int | None = None,
        hyperparameters: HyperParameters | None = None,
        tune_new_entries: bool = True,
        allow_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        **kwargs: Any,
    ) -> None:
        for name, value, low in (("max_epochs", max_epochs, 1), ("factor", factor, 2),
                                 ("hyperband_iterations", hyperband_iterations, 1)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(name, f"must be a whole number >= {low}, got {value!r}.")
        self.max_epochs, self.factor = max_epochs, factor
        self.hyperband_iterations = hyperband_iterations
        super().__init__(
            hypermodel, objective, None, seed, hyperparameters, tune_new_entries,
            allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials, **kwargs,
        )  # fmt: skip

    def _study(self, epochs: int) -> dict[str, Any]:
        del epochs  # max_epochs rules, as in KerasTuner
        trials = hyperband_trials(self.max_epochs, self.factor, self.hyperband_iterations)
        return {
            "sampler": "random",
            "init_points": trials,
            "n_iter": 0,
            "epochs": self.max_epochs,
            "prune": "hyperband",
            "reduction_factor": self.factor,
            "min_epochs": 1,
        }
