"""``run_study``: the loop that owns a study, for the CLI and for notebooks alike.

The loop reads top to bottom (docs/DESIGN.md, "Data flow"):

1. Validate the configuration; build the strategy and the datasets (once) before any file is
   written, so a missing TPU or an unknown dataset leaves no half-made study behind.
2. Open the study (:class:`tpu_bo.study.study.Study`): take the output directory's lock, open its
   Optuna storage, refuse a different study. Trials a killed session left running continue
   from their last saved epoch.
3. Ask a trial and open a *pack* of its structure (``parallel_trials`` slots in one compiled
   program); fill the other slots with trials asked for the same structure.
4. Every epoch: ``run_epoch`` trains and evaluates every running slot while a background
   thread asks the trials for the slots that epoch will free; each slot's metrics are
   reported to Optuna's pruner; a slot whose trial ended (finished, pruned or failed) is told
   to the study, and takes the next trial at once (one device call redraws its weights, no
   retrace). A trial that goes on saves its state every ``checkpoint_every`` epochs (copied to
   the host, written in the background), so a kill loses at most that many epochs.
5. When the budget is spent: score the best trial once on the test split and write
   ``summary.json``, ``summary.png`` and ``best/``.

A refill whose proposed structure differs from the pack's waits: the pack drains, and the next
pack is built for it. **Utilization**, useful slot-epochs over computed slot-epochs, and the
split of the session's wall time (:mod:`tpu_bo.timing`) are recorded in ``summary.json``. The
loop itself is :class:`tpu_bo.session.loop.Loop`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets, release_in_background
from tpu_bo.data.sources import python_study
from tpu_bo.device.accelerator import describe, get_strategy
from tpu_bo.device.cluster import is_chief, lockstep_workers
from tpu_bo.records import StudyResult
from tpu_bo.report.observers import Observer
from tpu_bo.session import ramp
from tpu_bo.session.lockstep import check_shared_output_dir, mean_over_workers
from tpu_bo.session.loop import Loop
from tpu_bo.study.output_dir import OutputDir
from tpu_bo.study.study import Study
from tpu_bo.study.writer_lock import WriterLock
from tpu_bo.timing import Clock
from tpu_bo.train import width
from tpu_bo.train.trainer import Trainer
from tpu_bo.train.width import WIDTH_FILE, Measured


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
      observers: More :class:`tpu_bo.Observer`s, after the console table, the TensorBoard log
        and the summary plot.
      extra_files: More files to record in the output directory, name to text (the CLI
        records its resolved flags as ``flags.txt``).
      **overrides: Fields to replace in ``config``, e.g. ``dataset="mnist", epochs=1``.

    Raises:
      ConfigError: the configuration is invalid, another process runs the study, or
        ``output_dir`` holds a different study.
      KeyboardInterrupt: after printing how to resume; every told trial is kept.
    """
    # Earlier studies' trainers and iterators are unreachable by now (a StudyResult holds
    # none); a full collection frees them on a daemon thread while this study starts. Not at
    # the end of a study: a process that then exits (the CLI) would wait for that collection.
    release_in_background()
    return _run(
        dataclasses.replace(config or Config(), **overrides),
        (data, validation_data, test_data),
        observers,
        extra_files or {},
    )


def _run(
    config: Config,
    data: tuple[Any, Any, Any],
    observers: Sequence[Observer],
    extra_files: Mapping[str, str],
) -> StudyResult:
    started = time.perf_counter()
    config, splits = python_study(config, *data)
    config = config.validate()
    if is_chief() and not config.wait_for_lock:
        # Refuse a running study at once, before the device and the data take their time.
        lock = WriterLock(config.resolved_output_dir)
        holder = lock.holder()
        if holder is not None:
            raise lock.refuse(holder)
    clock = Clock()
    with clock.measure("setup"):
        strategy = get_strategy(
            config.accelerator, tpu=config.tpu, cpu_replicas=config.cpu_replicas
        )
        datasets = load_datasets(config, strategy, data=splits)
    trainer = Trainer(config, strategy, datasets, space=config.resolved_space(), clock=clock)
    # Build a program before the study is opened: a model that cannot be built (a misspelt
    # hyperparameter, say) then fails before anything is written.
    point, measured = trainer.space.some_point(), None
    if config.parallel_trials == "auto":
        with clock.measure("setup"):
            measured = _measure_width(config, trainer, point, strategy)
        trainer.settle_width(measured.chosen)
        extra_files = {**extra_files, WIDTH_FILE: json.dumps(measured.to_json(), indent=2)}
    trainer.pack(point, trainer.config.pack_width)
    config = trainer.check_objective(point)  # its direction settled
    study = Study(config, writer=is_chief()).open()
    try:
        check_shared_output_dir(strategy, study.dir.output_dir, records=len(study.records()))
        ramping = ramps(config) and measured is not None
        loop = Loop(
            config, study, trainer, datasets, observers, extra_files, width=measured, ramp=ramping
        )
        return loop.run(started)
    finally:
        study.close()


def _measure_width(
    config: Config, trainer: Trainer, point: dict[str, Any], strategy: Any
) -> Measured:
    """``--parallel_trials=auto``'s K (:mod:`tpu_bo.train.width`): the study directory's cached
    measurement for this structure and device, else measured now. Lockstep workers decide on
    the mean of their rates, so that every one of them runs the same programs."""
    key = width.key_of(trainer, point, describe(strategy))
    cached = OutputDir(config.resolved_output_dir, writer=False).read_json(WIDTH_FILE)
    found = width.Measured.from_json(cached or {}, key)
    if found is not None:
        return found
    datasets = trainer.data(point)
    # A few steps per timed call: the measurement must not cost the study epochs (32 steps of
    # the blog CNN at K = 1, 2 and 4 were 10 of its epochs on a CPU).
    steps = min(datasets.steps_per_epoch, width.TIMED_STEPS)
    agree = (lambda rate: mean_over_workers(strategy, rate)) if lockstep_workers() > 1 else None
    keep = (lambda k: ramp.widths(k)) if ramps(config) else (lambda k: ())
    # A width is worth measuring when the budget fills it twice: a short study spends its
    # measurement (traces above all) on the widths it will use.
    limit = max(1, config.total_trials // 2)
    return width.measure(trainer, point, key=key, limit=limit, steps=steps, agree=agree, keep=keep)


def ramps(config: Config) -> bool:
    """Whether the study's packs ramp up to ``--parallel_trials=auto``'s K
    (:mod:`tpu_bo.session.ramp`): not with PBT's fixed population, nor in lockstep."""
    return config.ramp and config.scheduler != "pbt" and lockstep_workers() <= 1
