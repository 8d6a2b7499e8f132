"""The end of a session: ``--repeat_best``'s runs, the choice of the best trial, its test-split
score, ``summary.json`` and ``--final_epochs``.

:class:`Ending` is what :class:`tpu_bo.session.loop.Loop` calls once its budget is spent: first
:meth:`Ending.repeats` (the runs still to make, which the loop runs like any trial), then
:meth:`Ending.finish`. In a study shared by many workers (:mod:`tpu_bo.study.shared`) each
worker ends once no trial of the study runs anywhere: its summary covers every worker's trials,
and the test split is scored from ``best/``, which the worker that trained the best trial
wrote.
"""

from __future__ import annotations

import time
from typing import Any

from optuna.trial import TrialState

from tpu_bo.config import Config
from tpu_bo.data.pipeline import Datasets
from tpu_bo.records import StudyResult, Summary, Trial, TrialRecord, best
from tpu_bo.report.console import Reporter
from tpu_bo.report.observers import Observer
from tpu_bo.report.summary import summarize
from tpu_bo.session.best import BestWeights
from tpu_bo.session.final import train_final
from tpu_bo.session.pbt import pbt_lines, pbt_summary
from tpu_bo.session.selection import (
    choose,
    posterior,
    repeat_candidates,
    repeat_plan,
    selection_lines,
)
from tpu_bo.study.output_dir import SUMMARY
from tpu_bo.study.study import Study
from tpu_bo.study.trials import REPEAT_OF
from tpu_bo.timing import Clock
from tpu_bo.train.trainer import Trainer

REPEAT_CANDIDATES = "repeat_candidates"  # the study attribute: chosen once, for every session


class Ending:
    """The end of one session (see the module docstring).

    Args:
      config: The study's configuration.
      study: The open study.
      trainer: The session's trainer (its packs are done when :meth:`finish` runs).
      datasets: The study's datasets (the test split).
      best: The best trial and its weights.
      reporter: The console.
      observers: Every observer, told of the summary.
    """

    def __init__(
        self,
        config: Config,
        study: Study,
        trainer: Trainer,
        datasets: Datasets,
        best: BestWeights,
        reporter: Reporter,
        observers: Observer,
    ) -> None:
        self.config, self.study, self.trainer, self.datasets = config, study, trainer, datasets
        self.best, self.reporter, self.observers = best, reporter, observers
        self.width: dict[str, Any] | None = None  # --parallel_trials=auto's measurement

    def repeats(self, finished: list[TrialRecord]) -> list[Trial]:
        """The runs ``repeat_best`` still wants, asked (none until every budgeted trial is
        told; ``finished``: the trials told so far).

        A shared study plans them under its lock, counting every worker's repeats, running
        ones included, so two workers that end together do not both ask them."""
        if self.config.repeat_best <= 1 or self.study.remaining:
            return []
        optuna_study = self.study.optuna
        with self.study.exclusive():
            records = self.study.records() if self.study.shared else finished
            candidates = optuna_study.user_attrs.get(REPEAT_CANDIDATES)
            if candidates is None:  # chosen once: a resumed study completes the same ones
                table, _ = posterior(self.config, self.study.space, optuna_study.get_trials())
                candidates = repeat_candidates(self.config, records, table)
                optuna_study.set_user_attr(REPEAT_CANDIDATES, candidates)
            running = [
                t.user_attrs[REPEAT_OF]
                for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if REPEAT_OF in t.user_attrs
            ]
            plan = repeat_plan(self.config, records, candidates, running)
            for record, n in plan:
                self.reporter.line(f"repeating trial {record.number} {n} more time(s), new seeds")
            return [self.study.ask_repeat(record) for record, n in plan for _ in range(n)]

    def finish(self, *, clock: Clock, started: float, utilization: float | None) -> StudyResult:
        """Chooses the best trial, scores it on the test split once, writes ``summary.json``
        (and with ``--final_epochs`` trains the final model); returns the study's result.

        Args:
          clock: The session's clock (the test split's scoring is added as ``eval``).
          started: When the session began (``time.perf_counter()``).
          utilization: Useful over computed slot-epochs, or ``None`` when nothing ran.
        """
        self.study.flush()
        records = sorted(self.study.records(), key=lambda r: r.number)
        if self.study.shared:  # every worker's trials
            self.best.record = best(records, maximize=self.config.maximize)
        with self.study.exclusive():  # a shared study's workers end one at a time here
            selection = self._select(records) if self.best.record else {}
        with clock.measure("eval"):  # the test split, scored once
            test = self._test_metrics() if self.best.record else None
        chosen = self.best.record
        wall = time.perf_counter() - started
        split = clock.split(wall)
        summary, lines = summarize(
            self.config, self.study, records, chosen, test, split, utilization
        )
        summary.selection = selection
        summary.parallel_trials = self.width
        if self.config.scheduler == "pbt":
            summary.pbt = pbt_summary(chosen, records, self.trainer.copy_traces)
            lines[-1:-1] = pbt_lines(summary.pbt)
        self._write(summary)
        self.observers.on_study_end(summary)
        for line in [*lines[:-1], *selection_lines(selection, self.config.objective), lines[-1]]:
            self.reporter.line(line)
        if self.config.final_epochs and chosen:  # on every worker; only the writer writes
            summary.final = train_final(
                self.config, self.trainer, self.datasets, chosen, self.study.dir, self.reporter
            )
            self._write(summary)
        return StudyResult(
            best_params=dict(chosen.params) if chosen else {},
            best_target=chosen.target if chosen else None,
            best_trial=chosen.number if chosen else None,
            trials=records,
            test_metrics=test,
            counts=summary.counts,
            traces=self.trainer.traces,
            seconds=wall,
            utilization=utilization,
            output_dir=self.study.dir.output_dir,
            final=summary.final,
            time=split,
        )

    def _write(self, summary: Summary) -> None:
        self.study.dir.write_json(SUMMARY, summary.to_dict())

    def _select(self, records: list[TrialRecord]) -> dict[str, Any]:
        """Chooses the trial ``best/`` holds (``select_best``; see
        :mod:`tpu_bo.session.selection`) and installs it; returns what ``summary.json`` says of
        the choice. Every lockstep worker decides alike, from memory and files no one is
        writing: the test split's scoring that follows runs collectives."""
        trials = self.study.optuna.get_trials()
        table, noise = posterior(self.config, self.study.space, trials)
        choice = choose(self.config, records, table, noise)
        self.best.install(choice, shared=self.study.shared)
        return choice.info

    def _test_metrics(self) -> dict[str, Any] | None:
        """The best trial's test-split score: from an earlier summary, or computed once now."""
        record = self.best.record
        test = self.trainer.data(record.params).test  # batched as the trial's program runs it
        previous = self.study.dir.read_json(SUMMARY) or {}
        if previous.get("best_trial") == record.number and previous.get("test"):
            return previous["test"]
        if test is None:
            return None
        weights = self.best.in_memory(record.number)
        saved = self.best.saved(record.number) if weights is None else None
        if weights is not None:
            metrics = self.trainer.evaluate_weights(record.params, weights, test)
        elif saved is not None:
            metrics = self.trainer.evaluate_saved(record.params, saved, test)
        else:
            return None
        scores = {k: v for k, v in metrics.items() if k != "examples"}
        return {"split": test.split, "examples": test.num_examples, **scores}
