"""Observers: everything that watches a study without steering it, behind one small interface.

``run_study(..., observers=[...])`` calls each observer's hooks in order, through one
:class:`Observers`; the console table (:class:`tpu_bo.report.console.Console`), the TensorBoard
logs (:class:`tpu_bo.report.tensorboard.TensorBoard`) and ``summary.png``
(:class:`tpu_bo.report.plots.SummaryPlot`) are observers too, and so are the benchmarks'
meters. An observer never changes the study; the study never reads an observer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tpu_bo.records import Summary, Trial, TrialRecord

if TYPE_CHECKING:  # the study imports Optuna and the sampler; an observer needs neither
    from tpu_bo.study.study import Study


class Observer:
    """Base class with a no-op for every hook; override the ones you need."""

    def on_study_start(self, study: Study) -> None:
        """Once, with the opened :class:`tpu_bo.study.Study`, before any trial runs."""

    def on_pack(self, width: int) -> None:
        """A pack of ``width`` slots opens, or the ramp moves the running trials into a wider
        one (every later epoch computes ``width`` slot-epochs, idle slots included)."""

    def on_trial_start(self, trial: Trial) -> None:
        """A trial takes a slot: new, or resumed (``trial.resume`` is its checkpoint)."""

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        """After every host call of the training loop (``loss``: mean over running slots)."""

    def on_epoch(self, trial: Trial, metrics: Mapping[str, float]) -> None:
        """A running trial finished an epoch with these metrics."""

    def on_trial_end(self, record: TrialRecord, *, new_best: bool) -> None:
        """A trial ended; also replayed for the trials a resumed study already holds."""

    def on_study_end(self, summary: Summary) -> None:
        """Once, with what ``summary.json`` holds (``summary.to_dict()``)."""


class Observers(Observer):
    """Calls every hook of several observers, in order."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = list(observers)

    def on_study_start(self, study: Study) -> None:
        for o in self.observers:
            o.on_study_start(study)

    def on_pack(self, width: int) -> None:
        for o in self.observers:
            o.on_pack(width)

    def on_trial_start(self, trial: Trial) -> None:
        for o in self.observers:
            o.on_trial_start(trial)

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        for o in self.observers:
            o.on_progress(step, steps, loss, steps_per_second)

    def on_epoch(self, trial: Trial, metrics: Mapping[str, float]) -> None:
        for o in self.observers:
            o.on_epoch(trial, metrics)

    def on_trial_end(self, record: TrialRecord, *, new_best: bool) -> None:
        for o in self.observers:
            o.on_trial_end(record, new_best=new_best)

    def on_study_end(self, summary: Summary) -> None:
        for o in self.observers:
            o.on_study_end(summary)
