"""The end of a session: ``--repeat_best``'s runs, the choice of the best trial, its test-split
score, ``summary.json`` and ``--final_epochs``; a mixin of :class:`tpu_bo.loop.Loop`.

In a study shared by many workers (:mod:`tpu_bo.crew`) each worker ends once no trial of the
study runs anywhere: its summary covers every worker's trials, and the test split is scored
from ``best/``, which the worker that trained the best trial wrote.
"""

from __future__ import annotations

import time
from typing import Any

from optuna.trial import TrialState

from tpu_bo.engine import Trial, TrialRecord, best
from tpu_bo.pbt import pbt_lines, pbt_summary
from tpu_bo.records import StudyResult
from tpu_bo.selection import (
    choose,
    kept_name,
    posterior,
    repeat_candidates,
    repeat_plan,
    selection_lines,
)
from tpu_bo.storage import BEST_TRIAL, BEST_WEIGHTS, SUMMARY
from tpu_bo.summary import summarize


class Ending:
    """The end of :class:`tpu_bo.loop.Loop` (see the module docstring)."""

    config: Any
    study: Any
    unsaved_best: int | None  # the best trial when its best epoch's weights were not at hand

    # The end: repeats, then the choice of the best trial.

    def _repeats(self) -> list[Trial]:
        """The runs ``repeat_best`` still wants (none until every budgeted trial is told).

        A shared study plans them under its lock, counting every worker's repeats, running
        ones included, so two workers that end together do not both ask them."""
        if self.config.repeat_best <= 1 or self.study.remaining or self.slots:
            return []
        optuna_study = self.study.optuna
        with self.study.exclusive():
            if self.study.shared:
                self.finished = self.study.records()
            candidates = optuna_study.user_attrs.get("repeat_candidates")
            if candidates is None:  # chosen once: a resumed study completes the same ones
                table, _ = posterior(self.config, self.study.space, optuna_study.get_trials())
                candidates = repeat_candidates(self.config, self.finished, table)
                optuna_study.set_user_attr("repeat_candidates", candidates)
            running = [
                t.user_attrs["repeat_of"]
                for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if "repeat_of" in t.user_attrs
            ]
            plan = repeat_plan(self.config, self.finished, candidates, running)
            for record, n in plan:
                self.reporter.line(f"repeating trial {record.number} {n} more time(s), new seeds")
            return [self.study.ask_repeat(record) for record, n in plan for _ in range(n)]

    def _select(self, records: list[TrialRecord]) -> dict[str, Any]:
        """Chooses the trial ``best/`` holds (``select_best``; see :mod:`tpu_bo.selection`).

        Every worker of a multi-worker study decides alike, from memory and files no one is
        writing: the test split's scoring that follows runs collectives.
        """
        trials = self.study.optuna.get_trials()
        table, noise = posterior(self.config, self.study.space, trials)
        choice = choose(self.config, records, table, noise)
        chosen = choice.record
        if chosen is not None and chosen.number != self.best.number:
            if self.kept.has(chosen.number):
                self.kept.install(choice, self._best_json(chosen))
                self.best = chosen
                weights = self.kept.weights.get(chosen.number)
                if weights is not None:
                    self.best_weights = (chosen.number, weights)
                else:
                    self.best_file = (chosen.number, self.study.dir.path(kept_name(chosen.number)))
            else:
                choice.info["not_kept"] = chosen.number  # best/ keeps the observed best
        elif chosen is not None and self._holds(chosen.number):
            self.kept.install(choice, self._best_json(chosen))
        elif chosen is not None:
            choice.info["not_kept"] = chosen.number  # best/ keeps what it holds
        choice.info["selected_trial"] = self.best.number
        return choice.info

    def _holds(self, number: int) -> bool:
        """Whether ``best/`` or ``kept/`` holds trial ``number``'s weights. A trial resumed
        from a checkpoint after its best epoch has none: the checkpoint holds its last epoch.
        Decided from memory, as every lockstep worker must, except in a shared study, whose
        other workers wrote ``best/``."""
        if self.kept.has(number):
            return True
        if self.study.shared:
            return (self.study.dir.read_json(BEST_TRIAL) or {}).get("trial") == number
        return number != self.unsaved_best

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
        elif self.best_file is not None and self.best_file[0] == record.number:
            metrics = self.trainer.evaluate_saved(record.params, self.best_file[1], test)
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
        if self.study.shared:  # every worker's trials
            self.best = best(records, maximize=self.config.maximize)
        with self.study.exclusive():  # a shared study's workers end one at a time here
            selection = self._select(records) if self.best else {}
        with self.clock.measure("eval"):  # the test split, scored once
            test = self._test_metrics() if self.best else None
        seconds = time.perf_counter() - self.started
        utilization = self.useful / self.computed if self.computed else None
        split = self.clock.split(seconds)
        summary, lines = summarize(
            self.config, self.study, records, self.best, test, split, utilization
        )
        summary["selection"] = selection
        if self.config.scheduler == "pbt":
            summary["pbt"] = pbt_summary(self.best, records, self.trainer.copy_traces)
            lines[-1:-1] = pbt_lines(summary["pbt"])
        self.study.dir.write_json(SUMMARY, summary)
        self.observers.on_study_end(summary)
        for line in [*lines[:-1], *selection_lines(selection, self.config.objective), lines[-1]]:
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
