"""A study: ``bayes_opt`` suggests, the trainer trains, the journal records, and it resumes.

``run_study`` is the one entry point, for the CLI and for notebooks alike:

1. Validate the configuration; resolve the model builder and the search space.
2. Open ``<output_dir>``. If it already holds a study, check that it is the *same* study
   (dataset, splits, batch, model, optimizer, epochs, space...) and replay its journal into a
   fresh optimizer, so no finished trial runs again.
3. Build the strategy, the datasets (once) and the trainer (one program per structure).
4. Until ``init_points + n_iter`` trials are journaled: take a random point (the first
   ``init_points`` trials) or ``bayes_opt``'s suggestion, train it, append its record to
   ``trials.jsonl``, register its target, print its row.
5. Score the best trial once on the test split, write ``summary.json`` and return a
   :class:`StudyResult`.

The objective is the best validation accuracy over a trial's epochs. A failed trial (NaN/Inf
loss, out of memory) is journaled with its reason and registered with the *worst* target seen
so far among successful trials, so the Gaussian process learns that its region is bad without
a made-up number skewing its scale; until one trial has succeeded, failed ones wait to be
registered.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from tpu_bo import models
from tpu_bo.accelerator import get_strategy, is_chief
from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.input_pipeline import load_datasets
from tpu_bo.journal import Journal
from tpu_bo.report import Reporter, format_value
from tpu_bo.space import SearchSpace
from tpu_bo.trainer import Trainer

log = logging.getLogger("tpu_bo")

STUDY_FILE = "study.json"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"


@dataclasses.dataclass
class StudyResult:
    """What a study found.

    Attributes:
      best_params: Hyperparameters of the best successful trial.
      best_target: Its objective (best validation accuracy over its epochs).
      best_trial: Its trial number.
      trials: Every journaled trial record, in order.
      test_metrics: The best trial's test-split metrics, when they could be computed.
      counts: Trials by status.
      traces: Programs traced in this session.
      seconds: Wall time of this session.
      output_dir: Where the journal and summary live.
    """

    best_params: dict[str, Any]
    best_target: float | None
    best_trial: int | None
    trials: list[dict[str, Any]]
    test_metrics: dict[str, float] | None
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
    started = time.perf_counter()
    config = dataclasses.replace(config or Config(), **overrides).validate()
    space = config.resolved_space()
    builder = models.get_builder(config.model)
    output_dir = config.resolved_output_dir
    journal = Journal(output_dir, writer=is_chief())
    records = journal.load()
    _check_identity(config, journal, has_trials=bool(records))
    # Device and data come before any file is written, so a missing TPU or an unknown
    # dataset leaves no half-made study behind.
    strategy = get_strategy(config.accelerator, tpu=config.tpu, cpu_replicas=config.cpu_replicas)
    datasets = load_datasets(config, strategy)
    journal.write_file(STUDY_FILE, _json(config.study_identity()))
    journal.write_file(CONFIG_FILE, config.to_json() + "\n")
    for name, text in (extra_files or {}).items():
        journal.write_file(name, text)

    reporter = Reporter(space.names, total=config.total_trials)
    reporter.line(
        f"study: {config.dataset} / {config.model_name}, {config.total_trials} trials "
        f"({config.init_points} random + {config.n_iter} guided), "
        f"{config.epochs} epoch(s) each -> {output_dir}"
    )
    for p in space.params:
        reporter.line(f"  {p.describe()}")
    reporter.line(
        f"data: {config.dataset} train={datasets.num_train} ({datasets.steps_per_epoch} steps "
        f"of {datasets.global_batch} per epoch), eval={datasets.eval.num_examples} "
        f"({datasets.eval.steps} steps)"
    )
    if records:
        reporter.line(f"resuming: {len(records)} trial(s) already in the journal")
    if len(records) >= config.total_trials:
        reporter.line("the study's budget is already spent; nothing to run.")
        return _finish(config, space, journal, records, None, reporter, started, traces=0)

    trainer = Trainer(config, strategy, datasets, space=space, builder=builder)
    optimizer = _make_optimizer(config, space)
    pending_failed: list[dict[str, Any]] = []
    for record in records:
        _register(optimizer, space, record, records, pending_failed)

    best = _best_record(records)
    best_weights = None
    for record in records:
        reporter.trial(record, new_best=record is best)
    try:
        while len(records) < config.total_trials:
            trial = max((r["trial"] for r in records), default=0) + 1
            guided = len(records) >= config.init_points
            point = _suggest(optimizer, config) if guided else optimizer.random_sample(1)[0]
            params = space.from_optimizer(point)
            seed = (config.seed * 100_003 + trial) % 2**31
            reporter.start_trial(trial)

            def progress(epoch: int, step: int, steps: int, loss: float, rate: float) -> None:
                reporter.progress(epoch, step, steps, loss, rate, config.epochs)

            result = trainer.run_trial(params, seed=seed, on_progress=progress)
            record = {
                "trial": trial,
                "status": result.status,
                "target": result.metrics.get("val_accuracy") if result.status == "ok" else None,
                "params": params,
                "seconds": round(result.seconds, 3),
                "traces": trainer.traces,
                "seed": seed,
                "source": "guided" if guided else "random",
                "steps": result.steps,
                "train_seconds": round(result.train_seconds, 3),
                "eval_seconds": round(result.eval_seconds, 3),
                "metrics": result.metrics,
                "history": result.history,
                "error": result.error,
                "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
            }
            journal.append(record)
            records.append(record)
            _register(optimizer, space, record, records, pending_failed)
            new_best = _best_record(records)
            is_new_best = new_best is record
            if is_new_best and datasets.test is not None:
                best_weights = (trial, params, trainer.snapshot(params))
            best = new_best
            reporter.trial(record, new_best=is_new_best)
    except KeyboardInterrupt:
        reporter.line(
            f"interrupted after {len(records)} of {config.total_trials} trials; every finished "
            f"trial is in {journal.path}. Rerun the same command to resume."
        )
        raise

    test_metrics = None
    if best is not None and best_weights is not None and best_weights[0] == best["trial"]:
        test = datasets.test
        metrics = trainer.evaluate_weights(best_weights[1], best_weights[2], test)
        test_metrics = {
            "split": test.split,
            "examples": test.num_examples,
            "accuracy": metrics["accuracy"],
            "loss": metrics["loss"],
        }
    return _finish(config, space, journal, records, test_metrics, reporter, started, trainer.traces)


def _finish(
    config: Config,
    space: SearchSpace,
    journal: Journal,
    records: list[dict[str, Any]],
    test_metrics: dict[str, Any] | None,
    reporter: Reporter,
    started: float,
    traces: int,
) -> StudyResult:
    output_dir = config.resolved_output_dir
    best = _best_record(records)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    previous = journal.read_file(SUMMARY_FILE) or {}
    if test_metrics is None and best is not None:
        # Keep a test score computed by an earlier session for the same best trial.
        if previous.get("best_trial") == best["trial"]:
            test_metrics = previous.get("test")
    edges = space.at_edge(best["params"]) if best else []
    seconds = time.perf_counter() - started
    summary = {
        "best_trial": best["trial"] if best else None,
        "best_target": best["target"] if best else None,
        "objective": "val_accuracy (best epoch)",
        "best_params": best["params"] if best else {},
        "test": test_metrics,
        "counts": counts,
        "trials": len(records),
        "budget": config.total_trials,
        "best_at_edge": edges,
        "seconds_this_session": round(seconds, 3),
        "seconds_all_trials": round(sum(r["seconds"] for r in records), 3),
    }
    journal.write_file(SUMMARY_FILE, _json(summary))

    reporter.line()
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    reporter.line(f"trials: {len(records)} ({status}); {seconds:.1f} s this session")
    if best is None:
        reporter.line("best: no trial succeeded.")
    else:
        params = " ".join(f"{k}={format_value(v)}" for k, v in best["params"].items())
        reporter.line(f"best: trial {best['trial']} val_accuracy {best['target']:.4f} {params}")
        if test_metrics:
            reporter.line(
                f"test ({test_metrics['split']}, {test_metrics['examples']} examples): "
                f"accuracy {test_metrics['accuracy']:.4f}"
            )
        if edges:
            reporter.line(
                f"warning: the best point lies at the edge of the space for "
                f"{', '.join(edges)}; consider widening those bounds."
            )
    reporter.line(f"journal: {os.path.join(output_dir, 'trials.jsonl')}")
    return StudyResult(
        best_params=dict(best["params"]) if best else {},
        best_target=best["target"] if best else None,
        best_trial=best["trial"] if best else None,
        trials=records,
        test_metrics=test_metrics,
        counts=counts,
        traces=traces,
        seconds=seconds,
        output_dir=output_dir,
    )


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2) + "\n"


def _check_identity(config: Config, journal: Journal, *, has_trials: bool) -> None:
    """Refuses to continue a journal written by a different study."""
    identity = config.study_identity()
    stored = journal.read_file(STUDY_FILE)
    if stored is None or not has_trials:
        # Nothing journaled yet (e.g. an earlier start failed on a typo): nothing to protect.
        return
    for key in identity:
        if _normalise(stored.get(key)) != _normalise(identity[key]):
            raise ConfigError(
                "output_dir",
                f"{journal.output_dir} holds a different study ({key} was {stored.get(key)!r}, now "
                f"{identity[key]!r}); use a new --output_dir or the original settings.",
            )


def _normalise(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, sort_keys=True))


def _make_optimizer(config: Config, space: SearchSpace) -> Any:
    from bayes_opt import BayesianOptimization, acquisition

    if config.acquisition == "ucb":
        acq = acquisition.UpperConfidenceBound(kappa=config.kappa)
    elif config.acquisition == "poi":
        acq = acquisition.ProbabilityOfImprovement(xi=config.xi)
    else:
        acq = acquisition.ExpectedImprovement(xi=config.xi)
    with warnings.catch_warnings():
        # bayes_opt flags int/choice parameters as experimental; tests cover our use of them.
        warnings.filterwarnings("ignore", message="Non-float parameters")
        return BayesianOptimization(
            f=None,
            pbounds=space.pbounds(),
            acquisition_function=acq,
            random_state=config.seed,
            verbose=0,
            # Int and choice parameters can repeat a point; a noisy objective may want that.
            allow_duplicate_points=True,
        )


def _suggest(optimizer: Any, config: Config) -> dict[str, Any]:
    """The optimizer's next point, with ``xi`` measured in units of the targets' spread.

    bayes_opt applies ``xi`` in raw target units. Validation accuracies of a study often differ
    by less than 0.01, so a raw ``xi=0.01`` would demand improvements larger than the whole
    spread and push every suggestion to unexplored corners. Scaling by the standard deviation
    of the registered targets makes ``xi`` mean the same on any objective.
    """
    if config.acquisition in ("ei", "poi"):
        targets = np.asarray(optimizer.space.target, dtype=float)
        spread = float(np.std(targets)) if targets.size > 1 else 0.0
        optimizer.acquisition_function.xi = config.xi * spread
    return optimizer.suggest()


def _register(
    optimizer: Any,
    space: SearchSpace,
    record: dict[str, Any],
    records: list[dict[str, Any]],
    pending_failed: list[dict[str, Any]],
) -> None:
    """Feeds a finished trial to the optimizer (failed ones at the worst target so far)."""
    if not all(
        p.name in record["params"] and p.contains(record["params"][p.name]) for p in space.params
    ):
        log.warning("trial %s lies outside the space; not registered", record["trial"])
        return
    if record["status"] == "ok" and _finite(record.get("target")):
        optimizer.register(params=space.to_optimizer(record["params"]), target=record["target"])
    else:
        pending_failed.append(record)
    worst = min(
        (r["target"] for r in records if r["status"] == "ok" and _finite(r["target"])), default=None
    )
    if worst is None:
        return
    while pending_failed:
        failed = pending_failed.pop()
        optimizer.register(params=space.to_optimizer(failed["params"]), target=worst)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in records if r["status"] == "ok" and _finite(r.get("target"))]
    return max(ok, key=lambda r: r["target"]) if ok else None
