"""One session of a study: the loop :func:`tpu_bo.session.run_study` runs.

ask → load slot → run_epoch → report/should_prune → tell → refill, with the sampler's asks for
the slots an epoch will free made in a background thread while that epoch trains
(:class:`tpu_bo.study.background.Prefetch`), in-flight checkpoints every ``checkpoint_every``
epochs written in the background, and every second of the session counted in one clock
(:mod:`tpu_bo.timing`).

:class:`Loop` holds what changes while the session runs: the open pack, the trial in each slot
and the clock. The best trial's weights are :class:`tpu_bo.session.best.BestWeights`'s; the
end of the session (repeats, selection, test score, summary, final model) is
:class:`tpu_bo.session.ending.Ending`'s.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_bo.config import Config
from tpu_bo.data.pipeline import Datasets
from tpu_bo.records import Outcome, StudyResult, Trial, TrialRecord
from tpu_bo.report.console import Console, Reporter
from tpu_bo.report.observers import Observer, Observers
from tpu_bo.report.plots import SummaryPlot
from tpu_bo.report.summary import header_lines
from tpu_bo.report.tensorboard import TensorBoard
from tpu_bo.session import executions
from tpu_bo.session.best import BestWeights
from tpu_bo.session.ending import Ending
from tpu_bo.session.pbt import Population
from tpu_bo.session.ramp import line as ramp_line
from tpu_bo.session.ramp import widened
from tpu_bo.session.ramp import width as ramp_width
from tpu_bo.study.background import Prefetch
from tpu_bo.study.output_dir import CONFIG, PLOT
from tpu_bo.study.shared.crew import TakenOver
from tpu_bo.study.study import Study
from tpu_bo.train.models import json_shape
from tpu_bo.train.pack import EpochResult, Pack
from tpu_bo.train.trainer import Trainer
from tpu_bo.train.width import Measured


class Loop:
    """One session of a study; see the module docstring.

    Args:
      config: The validated configuration.
      study: The open study.
      trainer: The trainer over the study's datasets (its first program is built).
      datasets: The study's datasets.
      observers: The caller's observers, after the console, TensorBoard and the plot.
      extra_files: More files to write into the output directory, name to text.
      width: ``--parallel_trials=auto``'s measurement, when it chose K.
      ramp: Packs start one trial wide and widen to K as trials are told
        (:mod:`tpu_bo.session.ramp`).
    """

    def __init__(
        self,
        config: Config,
        study: Study,
        trainer: Trainer,
        datasets: Datasets,
        observers: Sequence[Observer],
        extra_files: Mapping[str, str],
        *,
        width: Measured | None = None,
        ramp: bool = False,
    ) -> None:
        self.config, self.study, self.trainer = config, study, trainer
        self.reporter = Reporter(study.space.names, total=config.total_trials)
        files = study.dir
        for name, text in {CONFIG: config.to_json() + "\n", **extra_files}.items():
            files.write_text(name, text)
        built_in: list[Observer] = [Console(self.reporter)]
        if files.writer:
            metrics = trainer.reported_metrics(study.space.some_point())
            built_in.append(
                TensorBoard(files.output_dir, study.space, metrics, logdir=config.tensorboard_dir)
            )
            built_in.append(
                SummaryPlot(
                    files.path(PLOT),
                    study.space,
                    objective=config.objective,
                    maximize=config.maximize,
                )
            )
        self.observers = Observers([*built_in, *observers])
        self.ramp = ramp and config.trials_per_pack > 1
        self.header = [
            *([width.line()] if width else []),
            *([ramp_line(config.trials_per_pack)] if self.ramp else []),
            *header_lines(config, datasets, study),
        ]
        self.pack: Pack | None = None
        self.key: tuple[Any, ...] = ()  # the pack's structure
        self.params: dict[str, Any] = {}  # a point of it (its first trial's)
        self.widest = config.executions_per_trial  # the ramp's widest pack so far (slots)
        self.slots: dict[int, Trial] = {}  # the trial in each running slot
        self.groups: dict[int, list[int]] = {}  # each running trial's slots, by its number
        self.n = config.executions_per_trial  # slots per trial (tpu_bo.session.executions)
        self.draining = False  # a waiting trial has another structure: no refill
        self.told = study.records()  # before this session; replayed to the observers
        self.finished = list(self.told)  # and the ones told since
        self.best = BestWeights(
            config,
            files,
            trainer.save_weights,
            told=self.told,
            trial_json=lambda record: _trial_json(config, datasets, record),
        )
        self.ending = Ending(
            config, study, trainer, datasets, self.best, self.reporter, self.observers
        )
        self.ending.width = width.to_json() if width else None
        self.useful = self.computed = 0  # slot-epochs, over every pack of the session
        self.clock = trainer.clock
        self.prefetch = Prefetch(study.ask)
        pbt = config.scheduler == "pbt"
        self.population = Population(config, study.space, study) if pbt else None

    def run(self, started: float | None = None) -> StudyResult:
        """Runs the session; ``started`` is when it began (before the data were loaded)."""
        started = started or time.perf_counter()
        for line in self.header:
            self.reporter.line(line)
        self.observers.on_study_start(self.study)
        for record in self.told:
            self.observers.on_trial_end(record, new_best=record is self.best.record)
        waiting = self.study.resumable()
        if not (waiting or self.study.remaining):
            self.reporter.line("the study's budget is already spent; nothing to run.")
        for t in waiting:
            after = f"after epoch {t.resume.epoch}" if t.resume else "from its start"
            self.reporter.line(f"continuing trial {t.number} {after}")
        try:
            self._trials(waiting)
            self._trials(self.ending.repeats(self.finished) if not self.slots else [])
        except BaseException as e:
            # Nothing in the background may touch the study once its lock is released (the
            # checkpoint writes are waited for by Study.close, in run_study's finally).
            self.prefetch.close()
            if isinstance(e, KeyboardInterrupt):
                self.reporter.line(
                    f"interrupted; every finished trial is in {self.study.dir.output_dir}, and "
                    "running ones continue from their last saved epoch. Rerun the same command "
                    "to resume."
                )
            raise
        if self.pack is not None:
            self._close_pack()
        utilization = self.useful / self.computed if self.computed else None
        return self.ending.finish(clock=self.clock, started=started, utilization=utilization)

    # The loop.

    def _trials(self, waiting: list[Trial]) -> None:
        """Runs ``waiting`` and then asked trials, pack after pack, until none is left."""
        while True:
            if self.pack is not None and not self.draining and self._width() > self.pack.width:
                narrow = self.pack.width
                if self.slots:
                    self._widen(self._width())
                else:
                    self._close_pack()  # the next opens at the new width
                self.trainer.drop_program(self.params, narrow)  # the ramp never narrows again
            if self.pack is None:
                if not waiting and self.study.remaining:
                    with self.clock.measure("suggest_wait"):
                        waiting.extend(t for t in [self.study.ask()] if t is not None)
                if not waiting:
                    waiting.extend(self.study.wait_for_others())  # a shared study's end
                if not waiting:
                    return
                first = waiting.pop(0)
                self.pack = self.trainer.pack(first.params, self._width())
                self.key, self.params = self._structure(first.params), dict(first.params)
                self._opened()
                self.draining = False
                self._load(list(range(self.n)), first)
            self._fill(waiting)
            if not self.pack.active:
                self._close_pack()
                continue
            self._epoch(waiting)

    def _width(self) -> int:
        """Slots of the pack the study should run now: ``--parallel_trials`` trials (on the
        ramp, as many as the trials told so far allow) of ``executions_per_trial`` each."""
        k = self.config.trials_per_pack
        if self.ramp:
            k = ramp_width(k, told=len(self.finished))
        return k * self.n

    def _widen(self, width: int) -> None:
        """The ramp: moves the running trials into a pack of ``width`` slots, keeping their
        slots' order and each trial's executions together; the free slots fill next."""
        old, slots, groups = self.pack, self.slots, list(self.groups.items())
        self.slots, self.groups = {}, {}
        self._close_pack()
        self.pack = self.trainer.pack(self.params, width)
        moved: dict[int, int] = {}
        for i, (number, group) in enumerate(groups):
            new = list(range(i * self.n, (i + 1) * self.n))
            for was, slot in zip(group, new, strict=True):
                self.pack.adopt(slot, slots[was].params, old, was)
                self.slots[slot], moved[was] = slots[was], slot
            self.groups[number] = new
        self.best.moved(moved)
        self._opened(moved=len(groups))

    def _opened(self, moved: int = 0) -> None:
        """A pack opened (or widened, ``moved`` running trials along): the observers hear its
        width, the console a wider one."""
        width = self.pack.width
        if self.ramp and width > self.widest:
            self.reporter.line(widened(width // self.n, told=len(self.finished), moved=moved))
        self.widest = max(self.widest, width)
        self.observers.on_pack(width)

    def _fill(self, waiting: list[Trial]) -> None:
        """Gives every free group of slots (one per execution) a trial of the pack's structure:
        a resumed one, else a new one (asked for this structure while the pack fills first,
        freely on a refill)."""
        key = self.key
        first_fill = self.pack.computed_tower_epochs == 0
        if self.population is not None and not first_fill:
            return  # a population runs together to its end; the next one opens a new pack
        free, n = self.pack.free, self.n
        for group in (free[i : i + n] for i in range(0, len(free) - n + 1, n)):
            match = next((t for t in waiting if self._structure(t.params) == key), None)
            if match is not None:
                waiting.remove(match)
            elif self.draining or not self.study.remaining:
                return
            else:
                with self.clock.measure("suggest_wait"):
                    match = self.study.ask(dict(key) if first_fill else None)
                if match is None:  # another worker asked the last of the budget
                    return
                if self._structure(match.params) != key:
                    waiting.append(match)  # it opens the next pack once this one drains
                    self.draining = True
                    return
            self._load(group, match)

    def _load(self, group: list[int], trial: Trial) -> None:
        """Starts ``trial`` in ``group``'s slots, one execution each."""
        params = trial.params if self.population is None else self.population.join(trial)
        n = len(group)
        states = executions.states(trial, n)
        for slot, seed, state in zip(group, executions.seeds(trial, n), states, strict=True):
            self.pack.load(slot, params, seed=seed, state=state)
            self.slots[slot] = trial
        self.groups[trial.number] = group
        if states[0] is not None:  # the trial's (mean) history, execution 0's weights
            history = executions.mean_history([state.history for state in states])
            self.best.loaded(group[0], dataclasses.replace(states[0], history=history))
        self.observers.on_trial_start(trial)

    def _epoch(self, waiting: list[Trial]) -> None:
        """One epoch of the pack; meanwhile, the trials for the slots it frees are asked."""
        pack = self.pack
        self.prefetch.start(self._to_prefetch(waiting))
        results = pack.run_epoch(progress=self.observers)
        for trial in self.prefetch.join():  # the wait, if any, is counted as suggest_wait
            if trial is None:
                continue  # another worker asked the last of the budget
            waiting.append(trial)
            if self._structure(trial.params) != self.key:
                self.draining = True  # it opens the next pack once this one drains
        every, saves = self.config.checkpoint_every, []
        by_trial: dict[int, list[EpochResult]] = {}
        for r in results:
            by_trial.setdefault(self.slots[r.slot].number, []).append(r)
        for number, rs in by_trial.items():
            group, prune = self.groups[number], False
            trial = self.slots[group[0]]
            if all(r.metrics is not None for r in rs):
                history = executions.mean_history([pack.result(s).history for s in group])
                metrics = rs[0].metrics if len(rs) == 1 else history[-1]
                self.observers.on_epoch(trial, metrics)
                weights = lambda slot=group[0]: pack.weights(slot)  # noqa: E731 - copied if needed
                self.best.after_epoch(group[0], history, weights, self.finished)
                with self.clock.measure("journal"):
                    prune = self.study.report(trial, metrics)
                if not prune and not any(r.done for r in rs) and self._stalled(history):
                    self._tell(group, self._stop(group, "ok"))
                    continue
            if any(r.done for r in rs) or prune:  # done: reached --epochs, or one failed
                self._tell(group, self._stop(group, "pruned"))
            elif rs[0].epoch % every == 0:
                saves.append(group)
        if self.population is not None:  # PBT: before the checkpoints, which then hold it
            for line in self.population.step(pack, self.slots, results):
                self.reporter.line(line)
        for group in saves:
            with self.clock.measure("checkpoint"):
                state = executions.checkpoint([pack.state(slot) for slot in group])
                self.study.checkpoint(self.slots[group[0]], state)
        if pack.broken:
            self._close_pack()

    def _stalled(self, history: Sequence[Mapping[str, float]]) -> bool:
        """Early stopping (``--patience``), as ``keras.callbacks.EarlyStopping`` counts it: the
        last ``patience`` epochs each failed to beat the best before them by ``min_delta``."""
        return stalled(
            [h.get(self.config.objective) for h in history],
            self.config.patience,
            self.config.min_delta,
            maximize=self.config.maximize,
        )

    def _to_prefetch(self, waiting: list[Trial]) -> int:
        """How many trials to ask while the next epoch runs: one per slot it will free (a
        slot pruned or failed instead is refilled by an ask at the boundary)."""
        if self.draining:
            return 0
        ready = sum(1 for t in waiting if self._structure(t.params) == self.key)
        finishing = len(self.pack.finishing) // self.n  # trials: their slots end together
        n = max(0, min(finishing - ready, self.study.remaining))
        trials = self.study.optuna.get_trials(deepcopy=False)
        init = self.config.init_points
        if self.config.sampler != "random" and sum(t.state.is_finished() for t in trials) < init:
            # The first guided trial waits for every random one, as a sequential study's
            # does: asked any earlier, the sampler would guide from one or two scores.
            n = min(n, max(0, init - len(trials)))
        return n

    def _close_pack(self) -> None:
        self.useful += self.pack.useful_tower_epochs
        self.computed += self.pack.computed_tower_epochs
        assert not self.slots, "a pack closes once every slot's trial is told"
        self.pack = None

    def _stop(self, group: list[int], status: str) -> list[Outcome]:
        """Each execution's outcome, stopping (as ``status``) those still running."""
        active = set(self.pack.active)
        return [
            self.pack.stop(slot, status) if slot in active else self.pack.result(slot)
            for slot in group
        ]

    def _tell(self, group: list[int], outcomes: list[Outcome]) -> None:
        """Tells the trial in ``group``'s slots, from its executions' ``outcomes``."""
        slot, trial = group[0], self.slots[group[0]]
        for s in group:
            del self.slots[s]
        del self.groups[trial.number]
        config = self.config
        outcome = executions.outcome(outcomes, config.objective, maximize=config.maximize)
        if self.population is not None:
            self.population.leave(trial.number)
        with self.study.exclusive():  # a shared study: one worker at a time tells and saves
            try:
                with self.clock.measure("journal"):
                    record = self.study.tell(
                        trial, outcome, traces=self.trainer.traces, width=self.pack.width
                    )
            except TakenOver as e:
                for s in group:
                    self.best.dropped(s)
                self.reporter.line(str(e))
                return
            if self.study.shared:  # the best among every worker's trials, best/ included
                self.finished = self.study.records()
            else:
                self.finished.append(record)
            new_best = self.best.told(slot, record, self.finished, shared=self.study.shared)
        self.observers.on_trial_end(record, new_best=new_best)

    def _structure(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return self.study.space.structure_key(params)


def _trial_json(config: Config, datasets: Datasets, record: TrialRecord) -> dict[str, Any]:
    """What ``best/trial.json`` holds: enough to rebuild the model (``load_best_model``)."""
    return {
        "trial": record.number,
        "target": record.target,
        "objective": config.objective,
        "best_epoch": record.best_epoch,
        "params": record.params,
        "fixed": dict(config.fixed),
        "model": config.model_name,
        "dataset": config.dataset,
        "input_shape": json_shape(datasets.input_shape),
        "num_classes": datasets.num_classes,
    }


def stalled(
    values: Sequence[float | None], patience: int, min_delta: float, *, maximize: bool
) -> bool:
    """Whether ``values`` (an objective per epoch) ends in ``patience`` epochs without an
    improvement of more than ``min_delta`` over the best before each; never for ``patience``
    0. A missing or non-finite value counts as no improvement."""
    if patience <= 0:
        return False
    best, wait = None, 0
    sign = 1.0 if maximize else -1.0
    for value in values:
        if (
            value is not None
            and math.isfinite(value)
            and (best is None or sign * (value - best) > abs(min_delta))
        ):
            best, wait = value, 0
        else:
            wait += 1
    return wait >= patience
