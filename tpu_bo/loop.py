"""One session of a study: the loop :func:`tpu_bo.study.run_study` runs (see its module docstring).

ask → load slot → run_epoch → report/should_prune → tell → refill, with the sampler's asks for
the slots an epoch will free made in a background thread while that epoch trains
(:mod:`tpu_bo.background`), in-flight checkpoints every ``checkpoint_every`` epochs written in
the background, and every second of the session counted in one clock (:mod:`tpu_bo.timing`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tpu_bo.background import Prefetch
from tpu_bo.config import Config
from tpu_bo.engine import Study, Trial, TrialRecord, best, best_epoch
from tpu_bo.input_pipeline import Datasets
from tpu_bo.models import json_shape
from tpu_bo.observers import Console, Observer, Observers, SummaryPlot, TensorBoard
from tpu_bo.report import Reporter
from tpu_bo.storage import BEST_TRIAL, BEST_WEIGHTS, CONFIG, PLOT, SUMMARY
from tpu_bo.summary import header_lines, summarize
from tpu_bo.trainer import Trainer

__all__ = ["Loop", "StudyResult", "some_point"]


@dataclasses.dataclass
class StudyResult:
    """What a study found.

    Attributes:
      best_params: Hyperparameters of the best completed trial.
      best_target: Its objective value (best over its epochs).
      best_trial: Its trial number.
      trials: Every finished trial, by number.
      test_metrics: The best trial's test-split metrics, when they could be computed.
      counts: Trials by status (``ok``, ``failed``, ``pruned``).
      traces: Programs traced in this session.
      seconds: Wall time of this session.
      utilization: Useful slot-epochs over computed slot-epochs in this session.
      output_dir: Where the journal, summary and best weights live.
      final: With ``final_epochs``, the best configuration retrained and exported (what
        ``final/final.json`` holds, see :func:`tpu_bo.final.train_final`), else ``None``.
      time: Where this session's wall time went, in seconds (:mod:`tpu_bo.timing`; the final
        model's training is not in it).
    """

    best_params: dict[str, Any]
    best_target: float | None
    best_trial: int | None
    trials: list[TrialRecord]
    test_metrics: dict[str, Any] | None
    counts: dict[str, int]
    traces: int
    seconds: float
    utilization: float | None
    output_dir: str
    final: dict[str, Any] | None = None
    time: dict[str, float] = dataclasses.field(default_factory=dict)


class Loop:
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
        self.told = study.records()  # before this session; replayed to the observers
        self.best = best(self.told, maximize=config.maximize)
        self.useful = self.computed = 0
        self.clock = trainer.clock
        self.prefetch = Prefetch(study.ask)
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
                        waiting.append(self.study.ask())
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
        for slot in self.pack.free:
            match = next((t for t in waiting if self._structure(t.params) == key), None)
            if match is not None:
                waiting.remove(match)
            elif self.draining or not self.study.remaining:
                return
            else:
                with self.clock.measure("suggest_wait"):
                    match = self.study.ask(dict(key) if first_fill else None)
                if self._structure(match.params) != key:
                    waiting.append(match)  # it opens the next pack once this one drains
                    self.draining = True
                    return
            self._load(slot, match)

    def _load(self, slot: int, trial: Trial) -> None:
        self.pack.load(slot, trial.params, seed=trial.seed, state=trial.resume)
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
            waiting.append(trial)
            if self._structure(trial.params) != self.key:
                self.draining = True  # it opens the next pack once this one drains
        every = self.config.checkpoint_every
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
                with self.clock.measure("checkpoint"):
                    self.study.checkpoint(trial, self.pack.state(r.slot))
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
        with self.clock.measure("journal"):
            width = self.pack.width
            record = self.study.tell(trial, result, traces=self.trainer.traces, width=width)
        new_best = best(
            [record, *([self.best] if self.best else [])], maximize=self.config.maximize
        )
        is_new_best = new_best is record
        if is_new_best:
            self.best = record
            if candidate is not None:
                self._save_best(record, candidate[1])
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
        if self.best is None or score > sign * self.best.target:
            self.candidates[slot] = (score, self.pack.weights(slot))
        else:
            self.candidates.pop(slot, None)

    def _save_best(self, record: TrialRecord, weights: list[np.ndarray]) -> None:
        self.best_weights = (record.number, weights)
        files, data = self.study.dir, self.datasets
        if not files.writer:
            return
        self.trainer.save_weights(record.params, weights, files.path(BEST_WEIGHTS))
        files.write_json(
            BEST_TRIAL,
            {
                "trial": record.number,
                "target": record.target,
                "objective": self.config.objective,
                "best_epoch": record.best_epoch,
                "params": record.params,
                "fixed": dict(self.config.fixed),
                "model": self.config.model_name,
                "dataset": self.config.dataset,
                "input_shape": json_shape(data.input_shape),
                "num_classes": data.num_classes,
            },
        )

    def _structure(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return self.study.space.structure_key(params)

    # The end.

    def _test_metrics(self) -> dict[str, Any] | None:
        """The best trial's test-split score: from an earlier summary, or computed once now."""
        record, test = self.best, self.datasets.test
        previous = self.study.dir.read_json(SUMMARY) or {}
        if previous.get("best_trial") == record.number and previous.get("test"):
            return previous["test"]
        if test is None:
            return None
        if self.best_weights is not None and self.best_weights[0] == record.number:
            metrics = self.trainer.evaluate_weights(record.params, self.best_weights[1], test)
        elif (self.study.dir.read_json(BEST_TRIAL) or {}).get("trial") == record.number:
            path = self.study.dir.path(BEST_WEIGHTS)
            metrics = self.trainer.evaluate_saved(record.params, path, test)
        else:
            return None
        scores = {k: v for k, v in metrics.items() if k != "examples"}
        return {"split": test.split, "examples": test.num_examples, **scores}

    def _finish(self) -> StudyResult:
        if self.pack is not None:
            self._close_pack()
        self.study.flush()
        records = sorted(self.study.records(), key=lambda r: r.number)
        with self.clock.measure("eval"):  # the test split, scored once
            test = self._test_metrics() if self.best else None
        seconds = time.perf_counter() - self.started
        utilization = self.useful / self.computed if self.computed else None
        split = self.clock.split(seconds)
        summary, lines = summarize(
            self.config, self.study, records, self.best, test, split, utilization
        )
        self.study.dir.write_json(SUMMARY, summary)
        self.observers.on_study_end(summary)
        for line in lines:
            self.reporter.line(line)
        final = None
        if self.config.final_epochs and self.best:  # on every worker; only the writer writes
            from tpu_bo.final import train_final

            final = summary["final"] = train_final(
                self.config, self.trainer, self.datasets, self.best, self.study.dir, self.reporter
            )
            self.study.dir.write_json(SUMMARY, summary)
        return StudyResult(
            best_params=dict(self.best.params) if self.best else {},
            best_target=self.best.target if self.best else None,
            best_trial=self.best.number if self.best else None,
            trials=records,
            test_metrics=test,
            counts=summary["counts"],
            traces=self.trainer.traces,
            seconds=seconds,
            utilization=utilization,
            output_dir=self.study.dir.output_dir,
            final=final,
            time=split,
        )


def some_point(space: Any) -> dict[str, Any]:
    """A point of ``space``: every parameter at its low end or first choice."""
    return {p.name: p.choices[0] if p.kind == "choice" else p.low for p in space.params}
