"""One worker of a study that many workers share through a database (``--storage=postgresql://``).

``python -m tpu_bo.main --storage=URL --study_name=NAME ...`` started on N hosts makes N workers
of one study. Each runs its own packs on its own accelerator; :class:`tpu_bo.engine.Study`
turns to a :class:`Crew` for what sharing needs (the database side is :mod:`tpu_bo.rdb`):

* **One study.** The first worker records the study's identity and budget; a worker whose flags
  differ is refused in one sentence naming the first flag that differs.
* **An exact budget.** A worker asks under the study lock, after counting every worker's
  trials, so ``--init_points + --n_iter`` trials are asked in all, with unique numbers. Every
  RUNNING trial is a pending point for the sampler, so workers do not propose the same point.
* **Takeover.** Each worker beats for its trials (:class:`tpu_bo.rdb.Heartbeats`). A trial
  whose worker died (no beat for ``--grace_period`` s) or was stopped with Ctrl-C is claimed,
  under the lock, by the next worker that asks: it continues under the same number from its
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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tpu_bo.errors import ConfigError
from tpu_bo.rdb import (
    RELEASED,
    Heartbeats,
    Outage,
    StudyLock,
    open_storage,
    orphans,
    where,
    worker_name,
)

if TYPE_CHECKING:
    from tpu_bo.config import Config
    from tpu_bo.engine import Study

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
    """This worker's side of a shared study (see the module docstring)."""

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

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self.lock.hold():
            yield

    def start(self, study: Study) -> None:
        """Checks the study's identity and budget, then starts beating for its trials."""
        with self.lock.hold():
            self.check(study)
        live = study._live
        self.heartbeats = Heartbeats(
            self.storage,
            self.config.heartbeat_interval,
            lambda: [t._trial_id for t in list(live.values())],
        )

    def check(self, study: Study) -> None:
        """Records the identity of a new study, refuses a worker whose flags differ, and keeps
        the largest ``--n_iter`` of the study's workers as its budget (a bigger one extends
        the study, as rerunning a study with a bigger ``--n_iter`` does)."""
        from tpu_bo.engine import IDENTITY_ATTR, _normalise

        optuna_study, name = study.optuna, self.config.resolved_study_name
        mine = {**_normalise(self.config.study_identity()), "init_points": self.config.init_points}
        stored = optuna_study.user_attrs
        if IDENTITY_ATTR not in stored:
            optuna_study.set_user_attr(IDENTITY_ATTR, mine)
        theirs = {"init_points": mine["init_points"], **stored.get(IDENTITY_ATTR, mine)}
        for key in [*mine, *(k for k in theirs if k not in mine)]:
            if theirs.get(key) != mine.get(key):
                raise ConfigError(
                    "param" if key == "space" else key,
                    f"the study {name!r} in {where(self.config.storage)} was started with "
                    f"{key}={theirs.get(key)!r}, this worker has {mine.get(key)!r}; every "
                    "worker of a study needs the same flags (or use another --study_name).",
                )
        n_iter = stored.get(BUDGET_ATTR, 0)
        if self.config.n_iter > n_iter:  # the first worker, or one that extends the study
            optuna_study.set_user_attr(BUDGET_ATTR, self.config.n_iter)
            if n_iter:
                self.outage.say(f"--n_iter={self.config.n_iter} extends the study (was {n_iter})")
        elif self.config.n_iter < n_iter:
            self.outage.say(f"the study's --n_iter is {n_iter}; this worker follows it")

    def total_trials(self, study: Study) -> int:
        """The study's budget: ``--init_points`` plus the largest ``--n_iter`` of its workers."""
        n_iter = study.optuna.user_attrs.get(BUDGET_ATTR, self.config.n_iter)
        return self.config.init_points + n_iter

    def close(self, study: Study) -> None:
        """Stops the heartbeats and lets this worker's running trials go (on Ctrl-C or an
        error), so the next worker takes them over at once instead of after the grace."""
        if self.heartbeats is not None:
            self.heartbeats.stop()
        for live in list(study._live.values()):
            with contextlib.suppress(Exception):  # once, not retried: a dead database must
                # not hold up a Ctrl-C; the trials then go stale after the grace period
                self.storage.backend.set_trial_user_attr(live._trial_id, "worker", RELEASED)

    # Trials.

    def own(self, live: optuna.Trial) -> None:
        """Marks a trial as this worker's and beats for it at once."""
        live.set_user_attr("worker", self.name)
        self.storage.record_heartbeat(live._trial_id)

    def claim(self, study: Study, limit: int, *, every: float = 0.0) -> list[Any]:
        """Takes over up to ``limit`` orphaned trials (call under the lock); with ``every``,
        looks for them at most once in that many seconds (an ask's look costs three queries,
        and a trial becomes an orphan only after ``--grace_period`` s anyway)."""
        now = time.monotonic()
        if every and now - self._looked < every:
            return []
        self._looked = now
        out = []
        for t in orphans(self.storage, study.optuna, self.config.grace_period)[:limit]:
            if t.number in study._live:
                continue  # ours already
            out.append(self._take(study, t))
        return out

    def _take(self, study: Study, t: FrozenTrial) -> Any:
        live = optuna.Trial(study.optuna, t._trial_id)
        previous = t.user_attrs.get("worker")
        self.own(live)
        trial = study._continue(t)
        epoch = trial.resume.epoch if trial.resume is not None else 0
        checkpoint = study._checkpoint(t)
        takeovers = [*t.user_attrs.get("takeovers", []), {"worker": self.name, "from": previous}]
        takeovers[-1]["epoch"] = epoch
        live.set_user_attr("takeovers", takeovers)
        if trial.resume is not None:
            how = f"continuing after epoch {epoch} from {checkpoint}"
        elif t.intermediate_values:
            how = f"restarting from scratch: {checkpoint} is not in this --output_dir"
        else:
            how = "from its start"
        who = "a worker that stopped" if previous == RELEASED else f"worker {previous}"
        self.outage.say(f"taking over trial {t.number} from {who}: {how}")
        return trial

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

    def wait_for_others(self, study: Study) -> list[Any]:
        """Waits until no other worker runs a trial of the study; returns the trials this
        worker takes over meanwhile (then the caller runs them and asks again)."""
        said = 0.0
        while True:
            with self.lock.hold():
                taken = self.claim(study, self.config.parallel_trials)
            if taken:
                return taken
            running = [
                t.number
                for t in study.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number not in study._live
            ]
            if not running:
                return []
            if time.monotonic() - said > WAIT_SAY_EVERY:
                said = time.monotonic()
                self.outage.say(
                    f"the budget is spent; waiting for trial(s) {running} on other workers "
                    f"(taken over if their worker stops beating for {self.config.grace_period} s)"
                )
            time.sleep(min(5.0, self.config.heartbeat_interval))
