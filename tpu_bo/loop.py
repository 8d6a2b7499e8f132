"""One session of a study: the loop :func:`tpu_bo.study.run_study` runs (see its module docstring).

ask → load slot → run_epoch → report/should_prune → tell → refill, with the sampler's asks for
the slots an epoch will free made in a background thread while that epoch trains
(:mod:`tpu_bo.background`), in-flight checkpoints every ``checkpoint_every`` epochs written in
the background, and every second of the session counted in one clock (:mod:`tpu_bo.timing`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tpu_bo.background import Prefetch
from tpu_bo.config import Config
from tpu_bo.crew import TakenOver
from tpu_bo.ending import Ending
from tpu_bo.engine import Study, Trial, TrialRecord, best, best_epoch
from tpu_bo.input_pipeline import Datasets
from tpu_bo.models import json_shape
from tpu_bo.observers import Console, Observer, Observers, SummaryPlot, TensorBoard
from tpu_bo.pbt import Population
from tpu_bo.records import StudyResult
from tpu_bo.report import Reporter
from tpu_bo.selection import Kept
from tpu_bo.storage import BEST_TRIAL, BEST_WEIGHTS, CONFIG, PLOT
from tpu_bo.summary import header_lines
from tpu_bo.trainer import Trainer

__all__ = ["Loop", "StudyResult", "some_point"]


class Loop(Ending):
    """One session of a study; see the module docstring."""

    def __init__(
        self,
        config: Config,
        study: Study,
        trainer: Trainer,
        datasets: Datasets,
        observers: Sequence[Observer],
        extra_files: Mapping[str, str],
    ) -> None:
        self.config, self.study, self.datasets = config, study, datasets
        self.trainer = trainer
        self.reporter = Reporter(study.space.names, total=config.total_trials)
        files = study.dir
        for name, text in {CONFIG: config.to_json() + "\n", **extra_files}.items():
            files.write_text(name, text)
        built_in: list[Observer] = [Console(self.reporter)]
        if files.writer:
            metrics = trainer.reported_metrics(some_point(study.space))
            built_in.append(TensorBoard(files.output_dir, study.space, metrics))
            built_in.append(
                SummaryPlot(
                    files.path(PLOT),
                    study.space,
                    objective=config.objective,
                    maximize=config.maximize,
                )
            )
        self.observers = Observers([*built_in, *observers])
        self.pack: Any = None
        self.key: tuple[Any, ...] = ()
        self.slots: dict[int, Trial] = {}
        self.draining = False
        self.candidates: dict[int, tuple[float, list[np.ndarray]]] = {}
        self.best_weights: tuple[int, list[np.ndarray]] | None = None
        self.best_file: tuple[int, str] | None = None  # a selected trial's kept/ file
        self.unsaved_best: int | None = None
        self.told = study.records()  # before this session; replayed to the observers
        self.finished = list(self.told)  # and the ones told since
        self.best = best(self.told, maximize=config.maximize)
        keep = config.select_best == "posterior" or config.repeat_best > 1
        self.kept = Kept(study.dir, trainer.save_weights, maximize=config.maximize, enabled=keep)
        self.useful = self.computed = 0
        self.clock = trainer.clock
        self.prefetch = Prefetch(study.ask)
        pbt = config.scheduler == "pbt"
        self.population = Population(config, study.space, study) if pbt else None
        self.started = time.perf_counter()

    def run(self, started: float | None = None) -> StudyResult:
        """Runs the session; ``started`` is when it began (before the data were loaded)."""
        self.started = started or self.started
        for line in header_lines(self.config, self.datasets, self.study):
            self.reporter.line(line)
        self.observers.on_study_start(self.study)
        for record in self.told:
            self.observers.on_trial_end(record, new_best=record is self.best)
        waiting = self.study.resumable()
        if not (waiting or self.study.remaining):
            self.reporter.line("the study's budget is already spent; nothing to run.")
        for t in waiting:
            after = f"after epoch {t.resume.epoch}" if t.resume else "from its start"
            self.reporter.line(f"continuing trial {t.number} {after}")
        try:
            self._trials(waiting)
            self._trials(self._repeats())
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
        return self._finish()

    # The loop.

    def _trials(self, waiting: list[Trial]) -> None:
        while True:
            if self.pack is None:
                if not waiting and self.study.remaining:
                    with self.clock.measure("suggest_wait"):
                        waiting.extend(t for t in [self.study.ask()] if t is not None)
                if not waiting:
                    waiting.extend(self.study.wait_for_others())  # a shared study's end
                if not waiting:
                    return
                first = waiting.pop(0)
                self.pack = self.trainer.pack(first.params, self.config.parallel_trials)
                self.key = self._structure(first.params)
                self.draining = False
                self._load(0, first)
            self._fill(waiting)
            if not self.pack.active:
                self._close_pack()
                continue
            self._epoch(waiting)

    def _fill(self, waiting: list[Trial]) -> None:
        """Gives every free slot a trial of the pack's structure: a resumed one, else a new
        one (asked for this structure while the pack fills first, freely on a refill)."""
        key = self.key
        first_fill = self.pack.computed_tower_epochs == 0
        if self.population is not None and not first_fill:
            return  # a population runs together to its end; the next one opens a new pack
        for slot in self.pack.free:
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
            self._load(slot, match)

    def _load(self, slot: int, trial: Trial) -> None:
        params = trial.params if self.population is None else self.population.join(trial)
        self.pack.load(slot, params, seed=trial.seed, state=trial.resume)
        self.slots[slot] = trial
        state = trial.resume
        if state is not None and state.history and self._epoch_is_best(state.history):
            self.candidates[slot] = (self._score(state.history), state.model)
        self.observers.on_trial_start(trial)

    def _epoch(self, waiting: list[Trial]) -> None:
        """One epoch of the pack; meanwhile, the trials for the slots it frees are asked."""
        self.prefetch.start(self._to_prefetch(waiting))
        results = self.pack.run_epoch(progress=self.observers)
        for trial in self.prefetch.join():  # the wait, if any, is counted as suggest_wait
            if trial is None:
                continue  # another worker asked the last of the budget
            waiting.append(trial)
            if self._structure(trial.params) != self.key:
                self.draining = True  # it opens the next pack once this one drains
        every, saves = self.config.checkpoint_every, []
        for r in results:
            trial, prune = self.slots[r.slot], False
            if r.metrics is not None:
                self.observers.on_epoch(trial, r.metrics)
                self._keep_candidate(r.slot)
                with self.clock.measure("journal"):
                    prune = self.study.report(trial, r.metrics)
            if r.done:
                self._tell(r.slot, self.pack.result(r.slot))
            elif prune:
                self._tell(r.slot, self.pack.stop(r.slot))
            elif r.epoch % every == 0:
                saves.append(r.slot)
        if self.population is not None:  # PBT: before the checkpoints, which then hold it
            for line in self.population.step(self.pack, self.slots, results):
                self.reporter.line(line)
        for slot in saves:
            with self.clock.measure("checkpoint"):
                self.study.checkpoint(self.slots[slot], self.pack.state(slot))
        if self.pack.broken:
            self._close_pack()

    def _to_prefetch(self, waiting: list[Trial]) -> int:
        """How many trials to ask while the next epoch runs: one per slot it will free (a
        slot pruned or failed instead is refilled by an ask at the boundary)."""
        if self.draining:
            return 0
        ready = sum(1 for t in waiting if self._structure(t.params) == self.key)
        n = max(0, min(len(self.pack.finishing) - ready, self.study.remaining))
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

    def _tell(self, slot: int, result: Any) -> None:
        trial = self.slots.pop(slot)
        candidate = self.candidates.pop(slot, None)
        if self.population is not None:
            self.population.leave(trial.number)
        maximize = self.config.maximize
        with self.study.exclusive():  # a shared study: one worker at a time tells and saves
            try:
                with self.clock.measure("journal"):
                    width = self.pack.width
                    record = self.study.tell(trial, result, traces=self.trainer.traces, width=width)
            except TakenOver as e:
                self.reporter.line(str(e))
                return
            if self.study.shared:  # the best among every worker's trials, best/ included
                self.finished = self.study.records()
                others = [r for r in self.finished if r.number != record.number]
                self.best = best(others, maximize=maximize)
            else:
                self.finished.append(record)
            new_best = best([record, *([self.best] if self.best else [])], maximize=maximize)
            is_new_best = new_best is record
            if is_new_best:
                self.best = record
                if candidate is not None:
                    self._save_best(record, candidate[1])
                else:
                    self.unsaved_best = record.number
            if candidate is not None:
                self.kept.keep(record, candidate[1], self.finished)
        self.observers.on_trial_end(record, new_best=is_new_best)

    # Scores and the best trial's weights.

    def _score(self, history: Sequence[Mapping[str, float]]) -> float:
        sign = 1.0 if self.config.maximize else -1.0
        return max(sign * h[self.config.objective] for h in history)

    def _epoch_is_best(self, history: Sequence[Mapping[str, float]]) -> bool:
        """Whether the latest epoch is strictly the trial's best (ties: the earlier)."""
        return best_epoch(history, self.config.objective, maximize=self.config.maximize) == len(
            history
        )

    def _keep_candidate(self, slot: int) -> None:
        history = self.pack.result(slot).history
        if not self._epoch_is_best(history):
            return
        score = self._score(history)
        sign = 1.0 if self.config.maximize else -1.0
        if self.kept.enabled:
            beat = score > self.kept.threshold(self.finished)
        else:
            beat = self.best is None or score > sign * self.best.target
        if beat:
            self.candidates[slot] = (score, self.pack.weights(slot))
        else:
            self.candidates.pop(slot, None)

    def _save_best(self, record: TrialRecord, weights: list[np.ndarray]) -> None:
        self.best_weights = (record.number, weights)
        files = self.study.dir
        if not files.writer:
            return
        self.trainer.save_weights(record.params, weights, files.path(BEST_WEIGHTS))
        files.write_json(BEST_TRIAL, self._best_json(record))

    def _best_json(self, record: TrialRecord) -> dict[str, Any]:
        return {
            "trial": record.number,
            "target": record.target,
            "objective": self.config.objective,
            "best_epoch": record.best_epoch,
            "params": record.params,
            "fixed": dict(self.config.fixed),
            "model": self.config.model_name,
            "dataset": self.config.dataset,
            "input_shape": json_shape(self.datasets.input_shape),
            "num_classes": self.datasets.num_classes,
        }

    def _structure(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return self.study.space.structure_key(params)


def some_point(space: Any) -> dict[str, Any]:
    """A point of ``space``: every parameter at its low end or first choice."""
    return {p.name: p.choices[0] if p.kind == "choice" else p.low for p in space.params}
