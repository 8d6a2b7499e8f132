"""``run_study``: the loop that owns a study, for the CLI and for notebooks alike.

The loop reads top to bottom (docs/DESIGN.md, "Data flow"):

1. Validate the configuration; build the strategy and the datasets (once) before any file is
   written, so a missing TPU or an unknown dataset leaves no half-made study behind.
2. Open the study (:class:`tpu_bo.engine.Study`): take the output directory's lock, open its
   Optuna storage, refuse a different study. Trials a killed session left running continue
   from their last saved epoch.
3. Ask a trial and open a *pack* of its structure (``parallel_trials`` slots in one compiled
   program); fill the other slots with trials asked for the same structure.
4. Every epoch: ``run_epoch`` trains and evaluates every running slot; each slot's metrics are
   reported to Optuna's pruner; a slot whose trial ended (finished, pruned or failed) is told
   to the study, and takes the next asked trial at once (fresh weights, no retrace). A trial
   that goes on saves its state, so a kill loses at most one epoch.
5. When the budget is spent: score the best trial once on the test split and write
   ``summary.json``, ``summary.png`` and ``best/``.

A refill whose proposed structure differs from the pack's waits: the pack drains, and the next
pack is built for it. **Utilization**, useful slot-epochs over computed slot-epochs, is
recorded in ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tpu_bo.accelerator import get_strategy, is_chief
from tpu_bo.config import Config
from tpu_bo.engine import Study, Trial, TrialRecord, best, best_epoch
from tpu_bo.input_pipeline import Datasets, load_datasets
from tpu_bo.models import json_shape
from tpu_bo.observers import Console, Observer, Observers, SummaryPlot, TensorBoard
from tpu_bo.report import Reporter
from tpu_bo.sources import python_study
from tpu_bo.storage import BEST_TRIAL, BEST_WEIGHTS, CONFIG, PLOT, SUMMARY, WriterLock
from tpu_bo.summary import header_lines, summarize
from tpu_bo.trainer import Trainer
from tpu_bo.workers import check_shared_output_dir

__all__ = ["StudyResult", "run_study"]


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


def run_study(
    config: Config | None = None,
    *,
    data: Any = None,
    validation_data: Any = None,
    test_data: Any = None,
    observers: Sequence[Observer] = (),
    extra_files: Mapping[str, str] | None = None,
    **overrides: Any,
) -> StudyResult:
    """Runs (or resumes) a study to its budget.

    Args:
      config: The study's configuration; ``Config()`` (the offline digits study) if omitted.
      data: Your own training data instead of ``config.dataset``, as ``model.fit`` takes it:
        an ``(x, y)`` pair of NumPy arrays (``x`` may be a dict of arrays) or an unbatched
        ``tf.data.Dataset`` of ``(features, label)``. Its split is called ``train``.
      validation_data: The split that scores trials (``validation``); without it, the
        configured ``eval_split`` (by default ``train[90%:]``, the last tenth of ``data``).
      test_data: The split scored once for the best trial (``test``); without it, none.
      observers: More :class:`tpu_bo.observers.Observer`s, after the console table, the
        TensorBoard log and the summary plot.
      extra_files: More files to record in the output directory, name to text (the CLI
        records its resolved flags as ``flags.txt``).
      **overrides: Fields to replace in ``config``, e.g. ``dataset="mnist", epochs=1``.

    Raises:
      ConfigError: the configuration is invalid, another process runs the study, or
        ``output_dir`` holds a different study.
      KeyboardInterrupt: after printing how to resume; every told trial is kept.
    """
    config = dataclasses.replace(config or Config(), **overrides)
    config, splits = python_study(config, data, validation_data, test_data)
    config = config.validate()
    if is_chief() and not config.wait_for_lock:
        # Refuse a running study at once, before the device and the data take their time.
        lock = WriterLock(config.resolved_output_dir)
        holder = lock.holder()
        if holder is not None:
            raise lock.refuse(holder)
    strategy = get_strategy(config.accelerator, tpu=config.tpu, cpu_replicas=config.cpu_replicas)
    datasets = load_datasets(config, strategy, data=splits)
    trainer = Trainer(config, strategy, datasets, space=config.resolved_space())
    # Build a program before the study is opened: a model that cannot be built (a misspelt
    # hyperparameter, say) then fails before anything is written.
    trainer.pack(_some_point(trainer.space), config.parallel_trials)
    trainer.check_objective(_some_point(trainer.space))
    study = Study(config, writer=is_chief()).open()
    try:
        check_shared_output_dir(strategy, study.dir.output_dir, records=len(study.records()))
        return _Loop(config, study, trainer, datasets, observers, extra_files or {}).run()
    finally:
        study.close()


class _Loop:
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
            metrics = trainer.reported_metrics(_some_point(study.space))
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
        self.started = time.perf_counter()

    def run(self) -> StudyResult:
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
        except KeyboardInterrupt:
            self.reporter.line(
                f"interrupted; every finished trial is in {self.study.dir.output_dir}, and "
                "running ones continue from their last finished epoch. Rerun the same command "
                "to resume."
            )
            raise
        return self._finish()

    # The loop.

    def _trials(self, waiting: list[Trial]) -> None:
        while True:
            if self.pack is None:
                if not waiting and self.study.remaining:
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
            self._epoch()

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

    def _epoch(self) -> None:
        results = self.pack.run_epoch(progress=self.observers)
        for r in results:
            trial, prune = self.slots[r.slot], False
            if r.metrics is not None:
                self.observers.on_epoch(trial, r.metrics)
                self._keep_candidate(r.slot)
                prune = self.study.report(trial, r.metrics)
            if r.done:
                self._tell(r.slot, self.pack.result(r.slot))
            elif prune:
                self._tell(r.slot, self.pack.stop(r.slot))
            else:
                self.study.checkpoint(trial, self.pack.state(r.slot))
        if self.pack.broken:
            self._close_pack()

    def _close_pack(self) -> None:
        self.useful += self.pack.useful_tower_epochs
        self.computed += self.pack.computed_tower_epochs
        assert not self.slots, "a pack closes once every slot's trial is told"
        self.pack = None

    def _tell(self, slot: int, result: Any) -> None:
        trial = self.slots.pop(slot)
        candidate = self.candidates.pop(slot, None)
        record = self.study.tell(trial, result, traces=self.trainer.traces, width=self.pack.width)
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
        records = sorted(self.study.records(), key=lambda r: r.number)
        test = self._test_metrics() if self.best else None
        seconds = time.perf_counter() - self.started
        utilization = self.useful / self.computed if self.computed else None
        summary, lines = summarize(
            self.config, self.study, records, self.best, test, seconds, utilization
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
        )


def _some_point(space: Any) -> dict[str, Any]:
    """A point of ``space``: every parameter at its low end or first choice."""
    return {p.name: p.choices[0] if p.kind == "choice" else p.low for p in space.params}
