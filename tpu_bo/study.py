"""A study: ``bayes_opt`` suggests, the trainer trains, the journal records, and it resumes.

``run_study`` is the one entry point, for the CLI and for notebooks alike:

1. Validate the configuration; resolve the model builder and the search space.
2. Read ``<output_dir>``. If it already holds a study, check that it is the *same* study
   (dataset, splits, batch, model, optimizer, epochs, space, objective) and replay its journal
   into a fresh optimizer, so no finished trial runs again.
3. Build the strategy, the datasets (once) and the trainer (one program per structure).
4. Until ``init_points + n_iter`` trials are journaled: take a random point (the first
   ``init_points`` trials) or ``bayes_opt``'s suggestion, train it, append its record to
   ``trials.jsonl``, register its target, print its row. At the end of every epoch but the
   last, the running trial's weights, optimizer state and history are saved to
   ``inflight.npz``; a study killed mid-trial continues that trial from its last finished
   epoch when it is run again.
5. Score the best trial once on the test split, write ``summary.json``, ``summary.png`` and
   ``best/``, and return a :class:`StudyResult`.

**Objective.** A trial's target is the best value of ``objective`` (``val_accuracy`` by
default; ``val_loss`` and ``loss`` are minimised) over its epochs, as the tuning playbook
advises. ``bayes_opt`` maximises, so a minimised objective is registered negated.

**Failed trials** (NaN/Inf loss, out of memory) are journaled with their reason; how they and
pruned trials are fed to the optimizer is :class:`tpu_bo.suggest.Suggester`'s business.

**Pruned trials** (``prune="median"``): after each epoch but the last, once ``prune_after``
trials have finished, a trial whose best score so far is worse than the median of the finished
trials' best scores at the same epoch stops. It is journaled as ``pruned`` with its partial
score, and registered with that score plus the median gain finished trials made afterwards.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from tpu_bo import models
from tpu_bo.accelerator import get_strategy, is_chief
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.input_pipeline import Datasets, load_datasets
from tpu_bo.journal import Journal
from tpu_bo.report import Reporter, format_value
from tpu_bo.suggest import Suggester
from tpu_bo.tb_log import TensorBoardLog
from tpu_bo.trainer import Trainer, TrialResult, TrialState, best_epoch, load_model_weights
from tpu_bo.workers import check_shared_output_dir

log = logging.getLogger("tpu_bo")

STUDY_FILE = "study.json"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
PLOT_FILE = "summary.png"
BEST_DIR = "best"
BEST_WEIGHTS = "model.weights.h5"
BEST_TRIAL = "trial.json"


@dataclasses.dataclass
class _Member:
    """One trial of a pack: its number, point, seed, origin and any state to continue."""

    trial: int
    params: dict[str, Any]
    seed: int
    source: str
    state: TrialState | None = None


@dataclasses.dataclass
class StudyResult:
    """What a study found.

    Attributes:
      best_params: Hyperparameters of the best successful trial.
      best_target: Its objective value (best over its epochs).
      best_trial: Its trial number.
      trials: Every journaled trial record, in order.
      test_metrics: The best trial's test-split metrics, when they could be computed.
      counts: Trials by status (``ok``, ``failed``, ``pruned``).
      traces: Programs traced in this session.
      seconds: Wall time of this session.
      output_dir: Where the journal, summary and best weights live.
    """

    best_params: dict[str, Any]
    best_target: float | None
    best_trial: int | None
    trials: list[dict[str, Any]]
    test_metrics: dict[str, Any] | None
    counts: dict[str, int]
    traces: int
    seconds: float
    output_dir: str


def run_study(
    config: Config | None = None,
    *,
    extra_files: Mapping[str, str] | None = None,
    **overrides: Any,
) -> StudyResult:
    """Runs (or resumes) a study to its budget.

    Args:
      config: The study's configuration; ``Config()`` (the offline digits study) if omitted.
      extra_files: More files to record in the output directory, name to text (the CLI
        records its resolved flags as ``flags.txt``).
      **overrides: Fields to replace in ``config``, e.g. ``dataset="mnist", epochs=1``.

    Returns:
      The :class:`StudyResult`.

    Raises:
      ConfigError: the configuration is invalid, or ``output_dir`` holds a different study.
      KeyboardInterrupt: after printing how to resume; journaled trials are kept.
    """
    config = dataclasses.replace(config or Config(), **overrides).validate()
    return _Study(config).run(extra_files or {})


def load_best_model(output_dir: str, *, builder: models.Builder | None = None) -> Any:
    """Builds a fresh model of a finished study's best trial and loads its saved weights.

    Args:
      output_dir: The study's directory (local or ``gs://``).
      builder: The model builder, when the study's model was a function defined in a notebook
        (``__main__``) that cannot be imported by name.

    Returns:
      An uncompiled ``keras.Model`` holding the best trial's weights from its best epoch.

    Raises:
      ConfigError: naming ``output_dir``, when the directory holds no saved best trial.
    """
    journal = Journal(output_dir, writer=False)
    info = journal.read_file(os.path.join(BEST_DIR, BEST_TRIAL))
    if info is None:
        raise ConfigError("output_dir", f"{output_dir} holds no best trial (no {BEST_DIR}/).")
    model = models.build_model(
        builder or models.get_builder(info["model"]),
        {**info["fixed"], **info["params"]},
        tuple(info["input_shape"]),
        info["num_classes"],
    )
    load_model_weights(model, os.path.join(output_dir, BEST_DIR, BEST_WEIGHTS))
    return model


class _Study:
    """One session of a study; see the module docstring for the flow."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.space = config.resolved_space()
        self.builder = models.get_builder(config.model)
        self.sign = 1.0 if config.maximize else -1.0
        self.journal = Journal(config.resolved_output_dir, writer=is_chief())
        self.records: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.reporter = Reporter(self.space.names, total=config.total_trials)
        self.trainer: Trainer | None = None
        self.datasets: Datasets | None = None
        # Read once at the start: in a multi-worker study every worker must take the same
        # decisions, and the chief rewrites these files while the others may still read.
        self.previous_summary: dict[str, Any] = {}
        self.saved_best: dict[str, Any] = {}
        # The best trial saved this session: (trial, weights), held on every worker.
        self.best_weights: tuple[int, list[np.ndarray]] | None = None

    # The flow.

    def run(self, extra_files: Mapping[str, str]) -> StudyResult:
        config, journal = self.config, self.journal
        self.records = journal.load()
        self._check_identity()
        self.previous_summary = journal.read_file(SUMMARY_FILE) or {}
        self.saved_best = journal.read_file(os.path.join(BEST_DIR, BEST_TRIAL)) or {}
        # Device and data come before any file is written, so a missing TPU or an unknown
        # dataset leaves no half-made study behind.
        strategy = get_strategy(
            config.accelerator, tpu=config.tpu, cpu_replicas=config.cpu_replicas
        )
        self.datasets = load_datasets(config, strategy)
        check_shared_output_dir(strategy, journal.output_dir, records=len(self.records))
        journal.write_file(STUDY_FILE, _json(config.study_identity()))
        journal.write_file(CONFIG_FILE, config.to_json() + "\n")
        for name, text in extra_files.items():
            journal.write_file(name, text)
        self._header()
        if len(self.records) >= config.total_trials:
            self.reporter.line("the study's budget is already spent; nothing to run.")
            journal.clear_inflight()
            return self._finish()

        self.trainer = Trainer(
            config, strategy, self.datasets, space=self.space, builder=self.builder
        )
        self.suggester = Suggester.from_config(config, self.space)
        self.tensorboard = TensorBoardLog(journal.output_dir, self.space, writer=journal.writer)
        for record in self.records:
            self._register(record)
        best = self._best_record()
        for record in self.records:
            self.reporter.trial(record, new_best=record is best)
        pack = self._inflight()
        if pack:
            self.reporter.line(
                f"continuing trial(s) {', '.join(str(m.trial) for m in pack)} after epoch "
                f"{pack[0].state.epoch} of {config.epochs}"
            )
        try:
            while len(self.records) < config.total_trials:
                if not pack:
                    pack = self._new_pack()
                self._run_pack(pack)
                pack = []
        except KeyboardInterrupt:
            self.reporter.line(
                f"interrupted after {len(self.records)} of {config.total_trials} trials; every "
                f"finished trial is in {journal.path}, and the running one continues from its "
                "last finished epoch. Rerun the same command to resume."
            )
            raise
        finally:
            self.tensorboard.close()
        return self._finish()

    def _header(self) -> None:
        config, data, line = self.config, self.datasets, self.reporter.line
        line(
            f"study: {config.dataset} / {config.model_name}, {config.total_trials} trials "
            f"({config.init_points} random + {config.n_iter} guided), {config.epochs} epoch(s) "
            f"each, objective {config.objective} ({'max' if config.maximize else 'min'}) -> "
            f"{self.journal.output_dir}"
        )
        for p in self.space.params:
            line(f"  {p.describe()}")
        line(
            f"data: {config.dataset} train={data.num_train} ({data.steps_per_epoch} steps of "
            f"{data.global_batch} per epoch), eval={data.eval.num_examples} "
            f"({data.eval.steps} steps)"
        )
        if self.records:
            line(f"resuming: {len(self.records)} trial(s) already in the journal")

    def _new_pack(self) -> list[_Member]:
        """The next pack's trials: numbers, points (random or guided) and seeds."""
        config = self.config
        size = min(config.parallel_trials, config.total_trials - len(self.records))
        taken = {r["trial"] for r in self.records}
        numbers: list[int] = []
        candidate = 1
        while len(numbers) < size:  # the lowest free numbers: a lost trial's slot is reused
            if candidate not in taken:
                numbers.append(candidate)
            candidate += 1
        random = [len(self.records) + i < config.init_points for i in range(size)]
        points = self.suggester.suggest_batch(random)
        return [
            _Member(
                trial=n,
                params=p,
                seed=(config.seed * 100_003 + n) % 2**31,
                source="random" if r else "guided",
            )
            for n, p, r in zip(numbers, points, random, strict=True)
        ]

    def _run_pack(self, pack: list[_Member]) -> None:
        config, trainer = self.config, self.trainer
        self.reporter.start_trial([m.trial for m in pack])
        candidates: dict[int, tuple[float, list[np.ndarray]]] = {}
        for k, member in enumerate(pack):
            self.tensorboard.start_trial(member.trial, member.params)
            state = member.state
            if state is not None:
                for h in state.history:
                    self.tensorboard.epoch(member.trial, h)
                if state.history and self._is_trial_best(state.history):
                    candidates[k] = (self._score(state.history), state.model)

        def progress(epoch: int, step: int, steps: int, loss: float, rate: float) -> None:
            self.reporter.progress(epoch, step, steps, loss, rate, config.epochs)

        def on_epoch(k: int, epoch: int, history: list[dict[str, float]], seconds: float) -> bool:
            self.tensorboard.epoch(pack[k].trial, history[-1])
            if self._is_trial_best(history) and self._could_be_best(self._score(history)):
                candidates[k] = (self._score(history), trainer.tower_weights(k))
            return epoch < config.epochs and self._below_median(history)

        def on_checkpoint(epoch: int, states: dict[int, TrialState]) -> None:
            members, arrays = [], {}
            for k, state in states.items():
                m = pack[k]
                members.append(
                    {
                        "trial": m.trial,
                        "params": m.params,
                        "seed": m.seed,
                        "source": m.source,
                        "epoch": state.epoch,
                        "history": state.history,
                        "steps": state.steps,
                        "seconds": state.seconds,
                        "num_model": len(state.model),
                        "num_optimizer": len(state.optimizer),
                    }
                )
                arrays.update({f"t{m.trial}m{i}": a for i, a in enumerate(state.model)})
                arrays.update({f"t{m.trial}o{i}": a for i, a in enumerate(state.optimizer)})
            self.journal.save_inflight({"pack": members}, arrays)

        def on_finish(k: int, result: TrialResult) -> None:
            self.tensorboard.close(pack[k].trial)
            self._journal_trial(pack[k], result, candidates.pop(k, None), pack)

        trainer.run_pack(
            [m.params for m in pack],
            seeds=[m.seed for m in pack],
            resume=[m.state for m in pack],
            on_progress=progress,
            on_epoch=on_epoch,
            on_checkpoint=on_checkpoint,
            on_finish=on_finish,
            width=config.parallel_trials,
        )
        self.journal.clear_inflight()

    def _journal_trial(
        self,
        member: _Member,
        result: TrialResult,
        candidate: tuple[float, list[np.ndarray]] | None,
        pack: list[_Member],
    ) -> None:
        config = self.config
        best = best_epoch(result.history, config.objective, maximize=config.maximize)
        scored = result.status in ("ok", "pruned") and bool(best)
        record = {
            "trial": member.trial,
            "status": result.status,
            "target": best[config.objective] if scored else None,
            "params": member.params,
            "seconds": round(result.seconds, 3),
            "traces": self.trainer.traces,
            "seed": member.seed,
            "source": member.source,
            "steps": result.steps,
            "best_epoch": best.get("best_epoch"),
            "resumed_from_epoch": result.resumed_from_epoch,
            "pack": min(m.trial for m in pack),
            "pack_size": len(pack),
            "train_seconds": round(result.train_seconds, 3),
            "eval_seconds": round(result.eval_seconds, 3),
            "metrics": {k: v for k, v in best.items() if k not in ("epoch", "best_epoch")},
            "history": result.history,
            "error": result.error,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        }
        self.journal.append(record)
        self.records.append(record)
        self._register(record)
        is_new_best = self._best_record() is record
        if is_new_best and candidate is not None:
            self._save_best(record, candidate[1])
        self.reporter.trial(record, new_best=is_new_best)

    def _register(self, record: dict[str, Any]) -> None:
        score = record.get("target")
        if record["status"] == "pruned" and _finite(score):
            score = self._pruned_estimate(record)
        if not self.suggester.observe(record["params"], score, status=record["status"]):
            log.warning("trial %s lies outside the space; not registered", record["trial"])

    def _pruned_estimate(self, record: dict[str, Any]) -> float:
        """What a pruned trial would likely have scored had it run all its epochs.

        Its partial score plus the median gain that finished trials made after the same epoch.
        Registering the bare partial score would tell the optimizer that an early, still
        improving point is as bad as its first epochs, and steer it away from good regions.
        """
        epoch = len(record["history"])
        gains = [
            self._score(r["history"]) - self._score(r["history"][:epoch])
            for r in self.records
            if r["status"] == "ok" and len(r["history"]) > epoch
        ]
        gain = statistics.median(gains) if gains else 0.0
        return record["target"] + self.sign * gain

    # Scores.

    def _score(self, history: list[dict[str, float]]) -> float:
        """The signed best-so-far objective of a history (larger is better)."""
        return max(self.sign * h[self.config.objective] for h in history)

    def _is_trial_best(self, history: list[dict[str, float]]) -> bool:
        """Whether the latest epoch is strictly the trial's best so far (ties: the earlier)."""
        earlier = history[:-1]
        return not earlier or self.sign * history[-1][self.config.objective] > self._score(earlier)

    def _could_be_best(self, score: float) -> bool:
        best = self._best_record()
        return best is None or score > self.sign * best["target"]

    def _best_record(self) -> dict[str, Any] | None:
        ok = [r for r in self.records if r["status"] == "ok" and _finite(r.get("target"))]
        return max(ok, key=lambda r: self.sign * r["target"]) if ok else None

    def _below_median(self, history: list[dict[str, float]]) -> bool:
        """The median rule: is this trial worse than the finished ones at the same epoch?"""
        if self.config.prune != "median":
            return False
        epoch = len(history)
        peers = [
            self._score(r["history"][:epoch])
            for r in self.records
            if r["status"] == "ok" and len(r["history"]) >= epoch
        ]
        if len(peers) < self.config.prune_after:
            return False
        return self._score(history) < statistics.median(peers)

    # Files.

    def _check_identity(self) -> None:
        """Refuses to continue a journal written by a different study."""
        identity = self.config.study_identity()
        stored = self.journal.read_file(STUDY_FILE)
        if stored is None or not self.records:
            return  # nothing journaled yet (an earlier start failed early): nothing to protect
        for key in identity:
            if _normalise(stored.get(key)) != _normalise(identity[key]):
                raise ConfigError(
                    "output_dir",
                    f"{self.journal.output_dir} holds a different study ({key} was "
                    f"{stored.get(key)!r}, now {identity[key]!r}); use a new --output_dir or "
                    "the original settings.",
                )

    def _inflight(self) -> list[_Member]:
        """The interrupted pack's unfinished trials, to continue from their saved epoch."""
        saved = self.journal.load_inflight()
        if saved is None:
            return []
        meta, arrays = saved
        journaled = {r["trial"] for r in self.records}
        members = []
        for m in meta.get("pack", []):
            if m["trial"] in journaled:
                continue  # it finished (failed or pruned) after the state was saved
            params = m["params"]
            if not self.space.contains(params):
                self.journal.clear_inflight()
                return []
            state = TrialState(
                epoch=m["epoch"],
                history=m["history"],
                model=[arrays[f"t{m['trial']}m{i}"] for i in range(m["num_model"])],
                optimizer=[arrays[f"t{m['trial']}o{i}"] for i in range(m["num_optimizer"])],
                steps=m["steps"],
                seconds=m["seconds"],
            )
            members.append(_Member(m["trial"], params, m["seed"], m["source"], state))
        room = self.config.total_trials - len(self.records)
        if not members or len(members) > min(room, self.config.parallel_trials):
            # Nothing left, or saved by a run with a wider pack than this one allows.
            if members:
                log.warning(
                    "the interrupted pack of %d trials does not fit --parallel_trials=%d; "
                    "its trials start again",
                    len(members),
                    self.config.parallel_trials,
                )
            self.journal.clear_inflight()
            return []
        return members

    def _save_best(self, record: dict[str, Any], weights: list[np.ndarray]) -> None:
        self.best_weights = (record["trial"], weights)
        if not self.journal.writer:
            return
        path = os.path.join(self.journal.output_dir, BEST_DIR, BEST_WEIGHTS)
        self.trainer.save_weights(record["params"], weights, path)
        self.journal.write_file(
            os.path.join(BEST_DIR, BEST_TRIAL),
            _json(
                {
                    "trial": record["trial"],
                    "target": record["target"],
                    "objective": self.config.objective,
                    "best_epoch": record["best_epoch"],
                    "params": record["params"],
                    "fixed": dict(self.config.fixed),
                    "model": self.config.model_name,
                    "dataset": self.config.dataset,
                    "input_shape": list(self.datasets.input_shape),
                    "num_classes": self.datasets.num_classes,
                }
            ),
        )

    def _test_metrics(self, best: dict[str, Any]) -> dict[str, Any] | None:
        """The best trial's test-split score: from an earlier summary, or computed once now."""
        previous = self.previous_summary
        if previous.get("best_trial") == best["trial"] and previous.get("test"):
            return previous["test"]
        test = self.datasets.test if self.datasets else None
        if test is None or self.trainer is None:
            return None
        # Every worker decides from what it holds, never from a file the chief may be writing.
        if self.best_weights is not None and self.best_weights[0] == best["trial"]:
            metrics = self.trainer.evaluate_weights(best["params"], self.best_weights[1], test)
        elif self.saved_best.get("trial") == best["trial"]:
            path = os.path.join(self.journal.output_dir, BEST_DIR, BEST_WEIGHTS)
            metrics = self.trainer.evaluate_saved(best["params"], path, test)
        else:
            return None
        return {
            "split": test.split,
            "examples": test.num_examples,
            "accuracy": metrics["accuracy"],
            "loss": metrics["loss"],
        }

    def _finish(self) -> StudyResult:
        config, journal, records, line = self.config, self.journal, self.records, self.reporter.line
        best = self._best_record()
        counts: dict[str, int] = {}
        for r in records:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        test_metrics = self._test_metrics(best) if best else None
        edges = self.space.at_edge(best["params"]) if best else []
        seconds = time.perf_counter() - self.started
        mode = "max" if config.maximize else "min"
        journal.write_file(
            SUMMARY_FILE,
            _json(
                {
                    "best_trial": best["trial"] if best else None,
                    "best_target": best["target"] if best else None,
                    "objective": f"{config.objective} ({mode}, best epoch)",
                    "best_params": best["params"] if best else {},
                    "best_epoch": best["best_epoch"] if best else None,
                    "test": test_metrics,
                    "counts": counts,
                    "trials": len(records),
                    "budget": config.total_trials,
                    "training_steps": sum(r["steps"] for r in records),
                    "best_at_edge": edges,
                    "seconds_this_session": round(seconds, 3),
                    "seconds_all_trials": round(_trial_seconds(records), 3),
                }
            ),
        )
        if journal.writer and records:
            from tpu_bo.plots import write_summary_plot

            write_summary_plot(
                os.path.join(journal.output_dir, PLOT_FILE),
                records,
                self.space,
                objective=config.objective,
                maximize=config.maximize,
            )

        line()
        status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        line(f"trials: {len(records)} ({status}); {seconds:.1f} s this session")
        if best is None:
            line("best: no trial succeeded.")
        else:
            params = " ".join(f"{k}={format_value(v)}" for k, v in best["params"].items())
            line(f"best: trial {best['trial']} {config.objective} {best['target']:.4f} {params}")
            if test_metrics:
                line(
                    f"test ({test_metrics['split']}, {test_metrics['examples']} examples): "
                    f"accuracy {test_metrics['accuracy']:.4f}"
                )
            if edges:
                line(
                    f"warning: the best point lies at the edge of the space for "
                    f"{', '.join(edges)}; consider widening those bounds."
                )
        line(f"journal: {journal.path}")
        return StudyResult(
            best_params=dict(best["params"]) if best else {},
            best_target=best["target"] if best else None,
            best_trial=best["trial"] if best else None,
            trials=records,
            test_metrics=test_metrics,
            counts=counts,
            traces=self.trainer.traces if self.trainer else 0,
            seconds=seconds,
            output_dir=journal.output_dir,
        )


def _trial_seconds(records: list[dict[str, Any]]) -> float:
    """Wall time spent in trials; the trials of a pack share theirs, so it counts once."""
    packs: dict[Any, float] = {}
    for r in records:
        key = r.get("pack", ("trial", r["trial"]))
        packs[key] = max(packs.get(key, 0.0), r["seconds"])
    return sum(packs.values())


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
