"""Observers: everything that watches a study without steering it.

``run_study(..., observers=[...])`` calls each observer's hooks in order; the console table,
the TensorBoard logs and ``summary.png`` are observers too, and so are the benchmarks' meters.
An observer never changes the study; the study never reads an observer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_bo.report import Reporter


class Observer:
    """Base class with a no-op for every hook; override the ones you need."""

    def on_study_start(self, study: Any) -> None:
        """Once, with the opened :class:`tpu_bo.engine.Study`, before any trial runs."""

    def on_trial_start(self, trial: Any) -> None:
        """A trial (a :class:`tpu_bo.engine.Trial`) takes a slot: new, or resumed."""

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        """After every host call of the training loop (``loss``: mean over running slots)."""

    def on_epoch(self, trial: Any, metrics: Mapping[str, float]) -> None:
        """A running trial finished an epoch with these metrics."""

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        """A trial ended (a :class:`tpu_bo.engine.TrialRecord`); also replayed for the trials
        a resumed study already holds."""

    def on_study_end(self, summary: Mapping[str, Any]) -> None:
        """Once, with what ``summary.json`` holds."""


class Observers(Observer):
    """Calls every hook of several observers, in order."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = list(observers)

    def on_study_start(self, study: Any) -> None:
        for o in self.observers:
            o.on_study_start(study)

    def on_trial_start(self, trial: Any) -> None:
        for o in self.observers:
            o.on_trial_start(trial)

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        for o in self.observers:
            o.on_progress(step, steps, loss, steps_per_second)

    def on_epoch(self, trial: Any, metrics: Mapping[str, float]) -> None:
        for o in self.observers:
            o.on_epoch(trial, metrics)

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        for o in self.observers:
            o.on_trial_end(record, new_best=new_best)

    def on_study_end(self, summary: Mapping[str, Any]) -> None:
        for o in self.observers:
            o.on_study_end(summary)


class Console(Observer):
    """The trial table and the live progress line (:class:`tpu_bo.report.Reporter`)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._running: list[int] = []

    def on_trial_start(self, trial: Any) -> None:
        self._running.append(trial.number)
        self.reporter.start_trial(sorted(self._running))

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        self.reporter.progress(step, steps, loss, steps_per_second)

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        if record.number in self._running:
            self._running.remove(record.number)
            if self._running:
                self.reporter.start_trial(sorted(self._running))
        self.reporter.trial(record, new_best=new_best)


class TensorBoard(Observer):
    """Per-epoch scalars and the HParams dashboard under ``<output_dir>/tensorboard``."""

    def __init__(self, output_dir: str, space: Any, metrics: Any = None) -> None:
        from tpu_bo.tb_log import METRICS, TensorBoardLog

        self.log = TensorBoardLog(output_dir, space, metrics=metrics or METRICS)

    def on_trial_start(self, trial: Any) -> None:
        self.log.start_trial(trial.number, trial.params)
        for metrics in trial.resume.history if trial.resume is not None else []:
            self.log.epoch(trial.number, metrics)

    def on_epoch(self, trial: Any, metrics: Mapping[str, float]) -> None:
        self.log.epoch(trial.number, metrics)

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        self.log.close(record.number)

    def on_study_end(self, summary: Mapping[str, Any]) -> None:
        self.log.close()
        best = (summary.get("pbt") or {}).get("best")
        if best:
            self.log.schedule(best)


class SummaryPlot(Observer):
    """Writes ``summary.png`` from every finished trial when the study ends."""

    def __init__(self, path: str, space: Any, *, objective: str, maximize: bool) -> None:
        self.path = path
        self.space = space
        self.objective = objective
        self.maximize = maximize
        self.records: list[Any] = []
        self.study: Any = None

    def on_study_start(self, study: Any) -> None:
        self.study = study  # a shared study's plot shows every worker's trials
        # Matplotlib takes about a second to import: do it while the study trains.
        threading.Thread(target=_import_plots, name="matplotlib-import", daemon=True).start()

    def on_trial_end(self, record: Any, *, new_best: bool) -> None:
        self.records.append(record)

    def on_study_end(self, summary: Mapping[str, Any]) -> None:
        records = self.records
        if getattr(self.study, "shared", False):
            records = self.study.records()
        if not records:
            return
        from tpu_bo.plots import write_summary_plot

        write_summary_plot(
            self.path,
            [r.to_dict() for r in sorted(records, key=lambda r: r.number)],
            self.space,
            objective=self.objective,
            maximize=self.maximize,
            pbt=(summary.get("pbt") or {}).get("best"),
        )


def _import_plots() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except Exception:  # noqa: BLE001, S110 - only a head start; the plot imports it again
        pass
