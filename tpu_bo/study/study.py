"""The study: ask/tell over an Optuna study, with typed trials, one writer and checkpoints.

Optuna holds the trials (states, parameters, per-epoch values, attributes) in its storage: by
default a journal in ``--output_dir`` (:mod:`tpu_bo.study.journal`), or a database named by
``--storage``. This module adds what a tpu_bo study needs on top:

* one writer: :meth:`Study.open` takes the output directory's lock first
  (:mod:`tpu_bo.study.writer_lock`); a database shared by many workers has a study lock instead
  (:mod:`tpu_bo.study.shared`);
* identity: a study journaled under one configuration is not continued under another
  (:mod:`tpu_bo.study.identity`);
* typed trials: :class:`tpu_bo.records.Trial` out of :meth:`Study.ask`, an
  :class:`tpu_bo.records.Outcome` into :meth:`Study.tell`, :class:`tpu_bo.records.TrialRecord`
  back (:mod:`tpu_bo.study.trials`);
* checkpoints: a running trial's state at its last saved epoch is a file in the output
  directory, named by its ``checkpoint`` attribute, so it continues after a crash.

Use it directly to drive trials yourself (see docs/ask_and_tell.md)::

    study = Study(config).open()
    while (trial := study.ask()) is not None:
        ...train, calling study.report(trial, metrics) after every epoch...
        study.tell(trial, Outcome("ok", history))
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from tpu_bo.config import Config
from tpu_bo.records import Checkpoint, Outcome, Status, Trial, TrialRecord, best_epoch
from tpu_bo.search.sampler import distributions, make_sampler
from tpu_bo.search.space import SearchSpace
from tpu_bo.study import identity
from tpu_bo.study.background import Writes
from tpu_bo.study.journal import GFileJournal
from tpu_bo.study.output_dir import JOURNAL, OutputDir
from tpu_bo.study.pruners import make_pruner
from tpu_bo.study.shared.crew import Crew
from tpu_bo.study.shared.rdb import count_asked, is_shared
from tpu_bo.study.trials import REPEAT_OF, STATE, STATUS, record
from tpu_bo.study.writer_lock import WriterLock


@contextlib.contextmanager
def _optuna_announcements_off() -> Iterator[None]:
    """Optuna's INFO line ``A new study created in Journal with name: ...`` left out while the
    study is created or loaded (the console's header says where the study is), if Optuna logs
    at its own default level, INFO; a level its user set otherwise (DEBUG, WARNING) stays, and
    everything Optuna logs outside this block is as they configured it."""
    if optuna.logging.get_verbosity() != optuna.logging.INFO:
        yield
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)


def sampler_for(config: Config, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The sampler ``config`` asks for (``--sampler`` and its settings) over ``space``."""
    return make_sampler(
        config.sampler,
        space,
        init_points=config.init_points,
        seed=config.seed,
        maximize=config.maximize,
        acquisition=config.acquisition,
        xi=config.xi,
        kappa=config.kappa,
        domain_reduction=config.domain_reduction,
    )


class Study:
    """One study: its directory, its lock, and its Optuna study.

    Args:
      config: The validated configuration.
      writer: Whether this process writes (False on a lockstep study's other workers,
        which take the same decisions from an in-memory copy of the chief's journal). With a
        database ``--storage`` (PostgreSQL, SQLite), each process is a worker of the study
        (:class:`tpu_bo.study.shared.crew.Crew`) and no directory lock is taken.
    """

    def __init__(self, config: Config, *, writer: bool = True) -> None:
        self.config = config
        self.space = config.resolved_space()
        self.dir = OutputDir(config.resolved_output_dir, writer=writer)
        self.sign = 1.0 if config.maximize else -1.0
        self.shared = writer and is_shared(config.storage)
        lock = writer and not self.shared
        self._lock = WriterLock(self.dir.output_dir, wait=config.wait_for_lock) if lock else None
        self.crew: Crew | None = None  # a shared study's worker
        self._distributions = distributions(self.space)
        self._live: dict[int, optuna.Trial] = {}
        self._reported: dict[int, set[int]] = {}  # epochs reported, per running trial
        self._checkpoints: dict[int, str] = {}  # saved-state files, per running trial
        self._writes = Writes()  # checkpoint files being written
        self.optuna: optuna.Study | None = None

    # Opening and closing.

    def open(self) -> Study:
        """Takes the lock, opens (or creates) the Optuna study and checks its identity."""
        self.dir.check_not_legacy()
        if self._lock is not None:
            self._lock.acquire()
        try:
            if self.shared:
                self.crew = Crew(self.config)
                with self.crew.exclusive():
                    self.optuna = self._load_or_create()
                self.crew.start(self.optuna, lambda: [t._trial_id for t in self._live.values()])
                return self
            self.optuna = self._load_or_create()
            self._check_identity()
        except BaseException:
            self.close()
            raise
        return self

    def _load_or_create(self) -> optuna.Study:
        storage = self._storage()
        name = self.config.resolved_study_name
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if not (self.config.study_name or self.config.storage) and len(names) == 1:
            name = names[0]  # the directory's own study, even after the directory was renamed
        kwargs = {
            "study_name": name,
            "storage": storage,
            "sampler": sampler_for(self.config, self.space),
            "pruner": make_pruner(self.config),
        }
        with _optuna_announcements_off():
            if name not in names:
                direction = "maximize" if self.config.maximize else "minimize"
                return optuna.create_study(direction=direction, load_if_exists=True, **kwargs)
            return optuna.load_study(**kwargs)

    def _storage(self) -> optuna.storages.BaseStorage:
        url = self.config.storage
        if self.crew is not None:
            return self.crew.storage
        if not url:
            backend = GFileJournal(self.dir.path(JOURNAL), writer=self.dir.writer)
            return optuna.storages.JournalStorage(backend)
        if self.dir.writer:
            return optuna.storages.get_storage(url)
        # Another lockstep worker: an in-memory copy, written by nobody.
        memory = optuna.storages.InMemoryStorage()
        name = self.config.resolved_study_name
        if name in [s.study_name for s in optuna.get_all_study_summaries(url)]:
            optuna.copy_study(from_study_name=name, from_storage=url, to_storage=memory)
        return memory

    def _check_identity(self) -> None:
        current = identity.of(self.config)
        stored = self.optuna.user_attrs.get(identity.ATTR)
        if stored is not None and self.optuna.get_trials(deepcopy=False):
            identity.check(
                stored,
                current,
                place=self.dir.output_dir,
                flag=lambda key: "output_dir",
                remedy="use a new --output_dir or the original settings",
            )
        if stored != current:
            self.optuna.set_user_attr(identity.ATTR, current)

    def close(self) -> None:
        """Waits for the checkpoint writes in flight, then releases the lock (the storage needs
        no closing)."""
        self.flush(quiet=True)
        if self.crew is not None:
            self.crew.close([t._trial_id for t in self._live.values()])
        if self._lock is not None:
            self._lock.release()

    # Reading.

    def records(self) -> list[TrialRecord]:
        """Every finished trial, by number."""
        trials = self.optuna.get_trials(deepcopy=False)
        return [record(t) for t in trials if STATUS[t.state] != Status.RUNNING]

    @property
    def remaining(self) -> int:
        """Trials the budget still allows to ask (running ones count as spent)."""
        if self.crew is not None:
            asked = count_asked(self.crew.storage, self.optuna._study_id)
            return max(0, self.crew.total_trials(self.optuna) - asked)
        asked = sum(
            t.state != TrialState.WAITING and REPEAT_OF not in t.user_attrs
            for t in self.optuna.get_trials(deepcopy=False)
        )
        return max(0, self.config.total_trials - asked)

    def resumable(self) -> list[Trial]:
        """The trials a killed session left RUNNING, with their saved state when there is one.

        This process holds the lock, so no one else runs them. A trial without a readable
        state starts again from fresh weights, under the same number and parameters. A trial
        killed while it was being asked (no parameters yet; asks run in the background while
        the chip trains) gets them now, from the sampler, and starts under its number.

        In a shared study, only trials no worker beats for are taken (up to a pack's slots).
        """
        with self.exclusive():
            running = self.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            # A kill between telling a trial and deleting its file leaves a stale one behind.
            for name in set(self.dir.checkpoints()) - {self._checkpoint(t) for t in running}:
                self.dir.remove(name)
            if self.crew is not None:
                return self._take_over(self.config.trials_per_pack)
        return [self._continue(t) for t in running]

    def _continue(self, t: FrozenTrial) -> Trial:
        """Makes a RUNNING trial live again, with its saved state when there is one."""
        live = optuna.Trial(self.optuna, t._trial_id)
        if not self._distributions.keys() <= t.params.keys():
            return self._start(live, suggest=True)
        self._live[t.number] = live
        self._reported[t.number] = set(t.intermediate_values)
        if self.dir.exists(self._checkpoint(t)):
            self._checkpoints[t.number] = self._checkpoint(t)
        name = self._checkpoint(t)
        state = self.dir.load_checkpoint(name) if self.dir.exists(name) else None
        return Trial(t.number, dict(t.params), t.user_attrs["seed"], "resumed", state)

    def _take_over(self, limit: int, *, every: float = 0.0) -> list[Trial]:
        """A shared study: the orphaned trials this worker claims (at most ``limit``; with
        ``every``, looking at most once in that many seconds), made live here, each from its
        checkpoint when the shared ``--output_dir`` has it. Call under the study lock."""
        taken = []
        for t in self.crew.claim(self.optuna, limit, mine=self._live.keys(), every=every):
            trial = self._continue(t)
            self.crew.record_takeover(self._live[t.number], t, trial.resume, self._checkpoint(t))
            taken.append(trial)
        return taken

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Holds the study-wide lock of a shared study (a no-op otherwise)."""
        return self.crew.exclusive() if self.crew is not None else contextlib.nullcontext()

    def wait_for_others(self) -> list[Trial]:
        """In a shared study, waits until no other worker runs a trial; returns the trials
        taken over meanwhile. Otherwise nothing to wait for."""
        if self.crew is None:
            return []
        while True:
            with self.exclusive():
                taken = self._take_over(self.config.trials_per_pack)
            if taken:
                return taken
            running = self.crew.running_elsewhere(self.optuna, mine=self._live.keys())
            if not running:
                return []
            self.crew.pause(running)

    def _checkpoint(self, t: FrozenTrial) -> str:
        # The attribute names the file; a kill between writing the file and recording the
        # attribute leaves only the file, under the name storage gives every trial.
        return t.user_attrs.get("checkpoint") or self.dir.checkpoint_name(t.number)

    # Ask, report, tell.

    def ask(self, structure: Mapping[str, Any] | None = None) -> Trial | None:
        """A new trial, already RUNNING in the storage; ``None`` when the budget is spent.

        In a shared study the ask is made under the study lock, and a trial whose worker died
        is taken over first (the ``structure`` is then not guaranteed).

        Args:
          structure: Structural values the trial must take (to fill a slot of a pack); a
            ``None`` (an inactive parameter) is drawn.
        """
        with self.exclusive():
            if self.crew is not None:
                taken = self._take_over(1, every=self.config.heartbeat_interval)
                if taken:
                    return taken[0]
            if not self.remaining:
                return None
            given = {k: v for k, v in (structure or {}).items() if v is not None}
            if given:  # an inactive parameter (None) is drawn: the model does not read it
                self.optuna.enqueue_trial(given)
            return self._start(self.optuna.ask(self._distributions))

    def ask_repeat(self, of: TrialRecord) -> Trial:
        """A new run of a finished trial's hyperparameters with a new seed (``--repeat_best``):
        outside the budget, with ``repeat_of`` naming the trial."""
        with self.exclusive():
            self.optuna.enqueue_trial(dict(of.params), user_attrs={REPEAT_OF: of.number})
            return self._start(self.optuna.ask(self._distributions))

    def _start(self, live: optuna.Trial, *, suggest: bool = False) -> Trial:
        """Records a new trial's seed and source (and, with ``suggest``, draws its parameters
        from the sampler, as ``optuna.Study.ask`` does) and makes it live."""
        if suggest:
            for name, d in self._distributions.items():
                if isinstance(d, CategoricalDistribution):
                    live.suggest_categorical(name, d.choices)
                elif isinstance(d, IntDistribution):
                    live.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
                else:
                    live.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        number = live.number
        seed = (self.config.seed * 100_003 + number) % 2**31
        guided = self.config.sampler != "random" and number >= self.config.init_points
        source = "guided" if guided else "random"
        if REPEAT_OF in live.user_attrs:
            source = "repeat"
        live.set_user_attr("seed", seed)
        live.set_user_attr("source", source)
        if self.crew is not None:
            self.crew.own(live)
        self._live[number] = live
        self._reported[number] = set()
        return Trial(number, dict(live.params), seed, source)

    def report(self, trial: Trial, metrics: Mapping[str, float]) -> bool:
        """Records one epoch's objective; True when the pruner stops the trial here (never at
        the last epoch: stopping there saves nothing)."""
        live = self._live[trial.number]
        epoch = int(metrics["epoch"])
        value = float(metrics[self.config.objective])
        reported = self._reported[trial.number]
        try:
            if epoch not in reported and math.isfinite(value):
                live.report(value, epoch)
                reported.add(epoch)
            return epoch < self.config.epochs and live.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            return True  # another worker took the trial over and finished it; tell says so

    def note(self, trial: Trial, **attrs: Any) -> dict[str, Any]:
        """Records attributes of a running trial (PBT's schedule); returns all it has."""
        live = self._live[trial.number]
        for key, value in attrs.items():
            live.set_user_attr(key, value)
        return live.user_attrs

    def checkpoint(self, trial: Trial, checkpoint: Checkpoint) -> None:
        """Saves a running trial's checkpoint (host copies): names the file in the trial's
        attributes, then writes it in a background thread. A trial's next save, its tell and
        :meth:`flush` wait for the write in flight; the file is replaced by a rename, so a kill
        leaves the previous state or the new one."""
        if not self.dir.writer:
            return
        number = trial.number
        name = self.dir.checkpoint_name(number)
        if self._checkpoints.get(number) != name:
            self._live[number].set_user_attr("checkpoint", name)
            self._checkpoints[number] = name
        self._writes.submit(number, lambda: self.dir.save_checkpoint(number, checkpoint))

    def flush(self, *, quiet: bool = False) -> None:
        """Waits for every checkpoint write (``quiet``: ignoring failures, when leaving on
        Ctrl-C or an error)."""
        self._writes.close(quiet=quiet)

    def tell(
        self, trial: Trial, outcome: Outcome, *, traces: int = 0, width: int = 1
    ) -> TrialRecord:
        """Records a finished trial and returns its record.

        Args:
          trial: The trial, as asked.
          outcome: What it produced (a pack's slot gives one; build one when you train it
            yourself).
          traces: Programs traced so far in this session (recorded with the trial).
          width: The slots of the program it ran in.

        Raises:
          TakenOver: (a shared study) another worker took the trial over meanwhile.
        """
        attrs = {"traces": traces, "width": width}
        if self.crew is None:
            return self._tell(trial, outcome, attrs)
        trial_id = self._live[trial.number]._trial_id
        try:
            self.crew.check_owner(trial_id, trial.number)
            return self._tell(trial, outcome, attrs)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise self.crew.taken_over(trial_id, trial.number) from None
        finally:  # a trial taken over is dropped here, its file left to its new worker
            self._live.pop(trial.number, None)
            self._reported.pop(trial.number, None)
            self._checkpoints.pop(trial.number, None)

    def _tell(self, trial: Trial, outcome: Outcome, attrs: dict[str, Any]) -> TrialRecord:
        live = self._live.pop(trial.number)
        self._reported.pop(trial.number, None)
        status = Status(outcome.status)
        history = [dict(h) for h in outcome.history]
        objective, target = self.config.objective, None
        if history and status is not Status.FAILED:
            epoch = best_epoch(history, objective, maximize=self.config.maximize)
            target = history[epoch - 1][objective]
            live.set_user_attr("best_epoch", epoch)
        values = {
            "target": target,
            "history": history,
            "error": outcome.error,
            "steps": outcome.steps,
            "seconds": round(outcome.seconds, 3),
            "resumed_from_epoch": outcome.resumed_from_epoch,
            **({"optimizer": outcome.optimizer} if outcome.optimizer else {}),
            **({"executions": list(outcome.executions)} if outcome.executions else {}),
            **attrs,
        }
        for key, value in values.items():
            live.set_user_attr(key, value)
        if status is Status.OK and target is None:
            status = Status.FAILED  # nothing was scored
        state = STATE.get(status, TrialState.FAIL)
        self.optuna.tell(live, target if state == TrialState.COMPLETE else None, state=state)
        name = self._checkpoints.pop(trial.number, None)
        self._writes.wait(trial.number)
        if name:
            self.dir.remove(name)
        return record(self.optuna._storage.get_trial(live._trial_id))
