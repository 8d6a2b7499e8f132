"""One worker of a study that many workers share through a database (``--storage=postgresql://``).

``python -m tpu_bo.main --storage=URL --study_name=NAME ...`` started on N hosts makes N workers
of one study. Each runs its own packs on its own accelerator; :class:`tpu_bo.study.Study` turns
to a :class:`Crew` for what sharing needs (the database side is :mod:`tpu_bo.study.shared.rdb`):

* **One study.** The first worker records the study's identity and budget; a worker whose flags
  differ is refused in one sentence naming the first flag that differs.
* **An exact budget.** A worker asks under the study lock, after counting every worker's
  trials, so ``--init_points + --n_iter`` trials are asked in all, with unique numbers. Every
  RUNNING trial is a pending point for the sampler, so workers do not propose the same point.
* **Takeover.** Each worker beats for its trials (:class:`~tpu_bo.study.shared.rdb.Heartbeats`).
  A trial whose worker died (no beat for ``--grace_period`` s) or was stopped with Ctrl-C is
  claimed, under the lock, by the next worker that asks: it continues under the same number from its
  last checkpoint in ``--output_dir`` (a shared one, such as ``gs://``), or from scratch when
  that file is not there. The trial records each takeover (``takeovers``).
* **Told once.** A worker tells a trial under the lock and only while it still owns it; a
  worker so slow that its trial was taken over drops its result (:class:`TakenOver`).
* **The end.** A worker with nothing left to ask waits for the other workers' trials, taking
  over any that go stale, so no trial stays RUNNING, then writes the summary like any study.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tpu_bo.config import Config
from tpu_bo.records import Checkpoint
from tpu_bo.study import identity
from tpu_bo.study.shared.rdb import (
    RELEASED,
    Heartbeats,
    Outage,
    StudyLock,
    open_storage,
    orphans,
    where,
    worker_name,
)

BUDGET_ATTR = "tpu_bo_n_iter"  # the largest --n_iter of the study's workers
WAIT_SAY_EVERY = 60.0  # seconds between "waiting for other workers" lines


class TakenOver(Exception):
    """This worker's trial was taken over by another worker; its result here is dropped."""

    def __init__(self, number: int, owner: Any) -> None:
        super().__init__(
            f"trial {number} was taken over by worker {owner} (this worker missed its "
            "heartbeats); its result here is dropped, the other worker's stands"
        )


class Crew:
    """This worker's side of a shared study (see the module docstring).

    Args:
      config: The validated configuration (``--storage`` a PostgreSQL or SQLite URL).
      say: Prints one line (by default to stderr, prefixed ``tpu_bo:``).
    """

    def __init__(self, config: Config, say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.outage = Outage(config.storage, config.storage_patience, say)
        self.storage = open_storage(
            config.storage,
            heartbeat=config.heartbeat_interval,
            grace=config.grace_period,
            outage=self.outage,
        )
        self.name = worker_name()
        self.lock = StudyLock(self.storage, config.resolved_study_name)
        self.heartbeats: Heartbeats | None = None
        self._looked = -math.inf  # when claim last looked for orphans
        self._said = 0.0  # when pause last said what it waits for

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Holds the study lock (every worker's)."""
        with self.lock.hold():
            yield

    def start(self, study: optuna.Study, live: Callable[[], list[int]]) -> None:
        """Checks the study's identity and budget, then beats for the trials ``live()`` names
        (the ids of this worker's running trials)."""
        with self.lock.hold():
            self.check(study)
        self.heartbeats = Heartbeats(self.storage, self.config.heartbeat_interval, live)

    def check(self, study: optuna.Study) -> None:
        """Records the identity of a new study, refuses a worker whose flags differ, and keeps
        the largest ``--n_iter`` of the study's workers as its budget (a bigger one extends
        the study, as rerunning a study with a bigger ``--n_iter`` does)."""
        mine = identity.of(self.config, shared=True)
        stored = study.user_attrs
        if identity.ATTR not in stored:
            study.set_user_attr(identity.ATTR, mine)
        # A study recorded before init_points joined the identity takes this worker's.
        theirs = {"init_points": mine["init_points"], **stored.get(identity.ATTR, mine)}
        name = self.config.resolved_study_name
        identity.check(
            theirs,
            mine,
            place=f"{where(self.config.storage)} (study {name!r})",
            flag=lambda key: "param" if key == "space" else key,
            remedy="every worker of a study needs the same flags (or use another --study_name)",
        )
        n_iter = stored.get(BUDGET_ATTR, 0)
        if self.config.n_iter > n_iter:  # the first worker, or one that extends the study
            study.set_user_attr(BUDGET_ATTR, self.config.n_iter)
            if n_iter:
                self.outage.say(f"--n_iter={self.config.n_iter} extends the study (was {n_iter})")
        elif self.config.n_iter < n_iter:
            self.outage.say(f"the study's --n_iter is {n_iter}; this worker follows it")

    def total_trials(self, study: optuna.Study) -> int:
        """The study's budget: ``--init_points`` plus the largest ``--n_iter`` of its workers."""
        n_iter = study.user_attrs.get(BUDGET_ATTR, self.config.n_iter)
        return self.config.init_points + n_iter

    def close(self, live: Collection[int]) -> None:
        """Stops the heartbeats and lets this worker's running trials (``live``: their ids) go,
        on Ctrl-C or an error, so the next worker takes them over at once instead of after the
        grace period."""
        if self.heartbeats is not None:
            self.heartbeats.stop()
        for trial_id in live:
            with contextlib.suppress(Exception):  # once, not retried: a dead database must
                # not hold up a Ctrl-C; the trials then go stale after the grace period
                self.storage.backend.set_trial_user_attr(trial_id, "worker", RELEASED)

    # Trials.

    def own(self, live: optuna.Trial) -> None:
        """Marks a trial as this worker's and beats for it at once."""
        live.set_user_attr("worker", self.name)
        self.storage.record_heartbeat(live._trial_id)

    def claim(
        self, study: optuna.Study, limit: int, *, mine: Collection[int], every: float = 0.0
    ) -> list[FrozenTrial]:
        """Takes over up to ``limit`` orphaned trials (call under the lock): marks each as this
        worker's and returns them as they were, for the caller to continue
        (:meth:`record_takeover` then records how). ``mine``: the numbers of this worker's
        own running trials. With ``every``, looks at most once in that many seconds (a look
        costs three queries, and a trial becomes an orphan only after ``--grace_period`` s)."""
        now = time.monotonic()
        if every and now - self._looked < every:
            return []
        self._looked = now
        taken = []
        for t in orphans(self.storage, study, self.config.grace_period)[:limit]:
            if t.number not in mine:  # else ours already
                self.own(optuna.Trial(study, t._trial_id))
                taken.append(t)
        return taken

    def record_takeover(
        self, live: optuna.Trial, was: FrozenTrial, resume: Checkpoint | None, checkpoint: str
    ) -> None:
        """Records in trial ``was``'s ``takeovers`` that this worker took it over, continuing
        from ``resume`` (its ``checkpoint`` file) or from scratch, and says so in one line."""
        previous = was.user_attrs.get("worker")
        epoch = resume.epoch if resume is not None else 0
        entry = {"worker": self.name, "from": previous, "epoch": epoch}
        live.set_user_attr("takeovers", [*was.user_attrs.get("takeovers", []), entry])
        if resume is not None:
            how = f"continuing after epoch {epoch} from {checkpoint}"
        elif was.intermediate_values:
            how = f"restarting from scratch: {checkpoint} is not in this --output_dir"
        else:
            how = "from its start"
        who = "a worker that stopped" if previous == RELEASED else f"worker {previous}"
        self.outage.say(f"taking over trial {was.number} from {who}: {how}")

    def check_owner(self, trial_id: int, number: int) -> None:
        """Raises :class:`TakenOver` unless this worker still owns trial ``number``.

        Needs no lock (the loop holds one anyway, to write ``best/``): if another worker
        claims the trial between this check and the tell, the database's row lock lets only
        the first of the two finish it (Optuna raises ``UpdateFinishedTrialError`` for the
        second, which drops its result)."""
        frozen = self.storage.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING or frozen.user_attrs.get("worker") != self.name:
            raise TakenOver(number, frozen.user_attrs.get("worker"))

    def taken_over(self, trial_id: int, number: int) -> TakenOver:
        """The error for a trial of this worker's that another worker took over."""
        return TakenOver(number, self.storage.get_trial(trial_id).user_attrs.get("worker"))

    def running_elsewhere(self, study: optuna.Study, *, mine: Collection[int]) -> list[int]:
        """The numbers of the study's running trials that are not this worker's (``mine``)."""
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [t.number for t in running if t.number not in mine]

    def pause(self, running: list[int]) -> None:
        """Waits a moment for the ``running`` trials of other workers once the budget is spent,
        saying so once a minute."""
        if time.monotonic() - self._said > WAIT_SAY_EVERY:
            self._said = time.monotonic()
            self.outage.say(
                f"the budget is spent; waiting for trial(s) {running} on other workers "
                f"(taken over if their worker stops beating for {self.config.grace_period} s)"
            )
        time.sleep(min(5.0, self.config.heartbeat_interval))
