"""The study's best trial and its weights: one owner for what ``best/`` and ``kept/`` hold.

A trial's score is its best epoch's, so the weights that go with it are that epoch's: they
must be copied to the host while the trial still runs, before a later epoch moves them on.
:class:`BestWeights` owns that whole story:

* **Candidates.** After every epoch (:meth:`BestWeights.after_epoch`) a running trial whose
  latest epoch is its best so far, and whose score could make it the best trial (or one of the
  ``TOP`` kept ones), has its weights copied to the host; a trial resumed from a checkpoint of
  its best epoch starts as one (:meth:`BestWeights.loaded`).
* **The best.** When a trial is told (:meth:`BestWeights.told`) and beats the best, its
  candidate weights are written to ``best/`` (``model.weights.h5`` and ``trial.json``) and
  kept in memory for the test split. A trial resumed after its best epoch has no such weights:
  ``best/`` then keeps the previous best's, and :meth:`BestWeights.holds` says so.
* **Kept.** With ``--select_best=posterior`` or ``--repeat_best`` > 1 the weights of the
  ``TOP`` best observed trials are also kept in ``kept/`` (:class:`tpu_bo.session.selection.Kept`),
  so that the trial the end of the session selects can be installed into ``best/``
  (:meth:`BestWeights.install`).
* **The test split** is scored from the selected trial's weights in memory, else from its
  file (:meth:`BestWeights.in_memory`, :meth:`BestWeights.saved`).

A study shared by many workers recomputes the best from every worker's trials at each tell;
its ``best/`` is written by the worker that trained the trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tpu_bo.config import Config
from tpu_bo.records import Checkpoint, TrialRecord, best, best_epoch
from tpu_bo.session.selection import Choice, Kept
from tpu_bo.study.output_dir import BEST_TRIAL, BEST_WEIGHTS, OutputDir, kept_name

Weights = list[np.ndarray]


class BestWeights:
    """The best trial and where its weights are (see the module docstring).

    Args:
      config: The study's configuration (objective, direction, the selection rule).
      files: The study's output directory; only a writer writes.
      save: Writes ``(params, weights, path)`` as ``.weights.h5`` (``Trainer.save_weights``).
      told: The trials told before this session.
      trial_json: The fields every ``best/trial.json`` has, for a record.
    """

    def __init__(
        self,
        config: Config,
        files: OutputDir,
        save: Callable[[Mapping[str, Any], Weights, str], None],
        *,
        told: Sequence[TrialRecord],
        trial_json: Callable[[TrialRecord], dict[str, Any]],
    ) -> None:
        self.config, self.files, self.save, self.trial_json = config, files, save, trial_json
        self.sign = 1.0 if config.maximize else -1.0
        keep = config.keep_top or config.select_best == "posterior" or config.repeat_best > 1
        self.kept = Kept(files, save, maximize=config.maximize, enabled=keep)
        self.record: TrialRecord | None = best(told, maximize=config.maximize)
        self._candidates: dict[int, tuple[float, Weights]] = {}  # by slot
        self._memory: tuple[int, Weights] | None = None  # the best trial's, this session
        self._file: tuple[int, str] | None = None  # a selected trial's kept/ file
        self._unsaved: int | None = None  # a best trial whose best epoch was not at hand

    # While trials run.

    def loaded(self, slot: int, checkpoint: Checkpoint | None) -> None:
        """A trial takes ``slot``; resumed from a checkpoint of its best epoch, that
        checkpoint's weights are its candidate."""
        if (
            checkpoint is not None
            and checkpoint.history
            and self._latest_is_best(checkpoint.history)
        ):
            self._candidates[slot] = (self._score(checkpoint.history), checkpoint.model)

    def after_epoch(
        self,
        slot: int,
        history: Sequence[Mapping[str, float]],
        weights: Callable[[], Weights],
        finished: Sequence[TrialRecord],
    ) -> None:
        """After an epoch of ``slot``'s trial: copies its ``weights()`` to the host if that epoch
        is its best and could make it the best (or a kept) trial; ``finished``: every trial
        told so far."""
        if not self._latest_is_best(history):
            return
        score = self._score(history)
        if self.kept.enabled:
            beat = score > self.kept.threshold(finished)
        else:
            beat = self.record is None or score > self.sign * self.record.target
        if beat:
            self._candidates[slot] = (score, weights())
        else:
            self._candidates.pop(slot, None)

    def moved(self, slots: Mapping[int, int]) -> None:
        """The running trials moved to other slots (the ramp's wider pack), old to new."""
        self._candidates = {slots[s]: c for s, c in self._candidates.items() if s in slots}

    def dropped(self, slot: int) -> None:
        """``slot``'s trial left without a result here (taken over by another worker)."""
        self._candidates.pop(slot, None)

    def told(
        self, slot: int, record: TrialRecord, finished: Sequence[TrialRecord], *, shared: bool
    ) -> bool:
        """``slot``'s trial was told as ``record`` (``finished``: every trial told so far, it
        included); returns whether it is the new best. Writes ``best/`` and ``kept/``.

        Args:
          shared: A shared study: the best is recomputed from every worker's trials.
        """
        candidate = self._candidates.pop(slot, None)
        if shared:
            others = [r for r in finished if r.number != record.number]
            self.record = best(others, maximize=self.config.maximize)
        contenders = [record, *([self.record] if self.record else [])]
        new_best = best(contenders, maximize=self.config.maximize) is record
        if new_best:
            self.record = record
            if candidate is not None:
                self._save(record, candidate[1])
            else:
                self._unsaved = record.number
        if candidate is not None:
            self.kept.keep(record, candidate[1], finished)
        return new_best

    # At the end.

    def holds(self, number: int, *, shared: bool) -> bool:
        """Whether ``best/`` or ``kept/`` holds trial ``number``'s weights. A trial resumed from
        a checkpoint after its best epoch has none: the checkpoint holds its last epoch.
        Decided from memory, as every lockstep worker must, except in a ``shared`` study,
        whose other workers wrote ``best/``."""
        if self.kept.has(number):
            return True
        if shared:
            return (self.files.read_json(BEST_TRIAL) or {}).get("trial") == number
        return number != self._unsaved

    def install(self, choice: Choice, *, shared: bool) -> None:
        """Makes the chosen trial (``choice.record``) the best and ``best/`` hold its weights,
        when they were kept; otherwise ``choice.info`` gets ``not_kept``. Then records
        ``selected_trial``. Every lockstep worker decides alike, from memory and files no one
        is writing."""
        chosen = choice.record
        if chosen is not None and chosen.number != self.record.number:
            if self.kept.has(chosen.number):
                self.kept.install(choice, self.trial_json(chosen))
                self.record = chosen
                weights = self.kept.weights.get(chosen.number)
                if weights is not None:
                    self._memory = (chosen.number, weights)
                else:
                    self._file = (chosen.number, self.files.path(kept_name(chosen.number)))
            else:
                choice.info["not_kept"] = chosen.number  # best/ keeps the observed best
        elif chosen is not None and self.holds(chosen.number, shared=shared):
            self.kept.install(choice, self.trial_json(chosen))
        elif chosen is not None:
            choice.info["not_kept"] = chosen.number  # best/ keeps what it holds
        choice.info["selected_trial"] = self.record.number

    def in_memory(self, number: int) -> Weights | None:
        """Trial ``number``'s weights, if this session has them in memory."""
        if self._memory is not None and self._memory[0] == number:
            return self._memory[1]
        return None

    def saved(self, number: int) -> str | None:
        """The ``.weights.h5`` holding trial ``number``'s weights (its kept file once selected,
        or ``best/``), or ``None``."""
        if self._file is not None and self._file[0] == number:
            return self._file[1]
        if (self.files.read_json(BEST_TRIAL) or {}).get("trial") == number:
            return self.files.path(BEST_WEIGHTS)
        return None

    # Helpers.

    def _save(self, record: TrialRecord, weights: Weights) -> None:
        self._memory = (record.number, weights)
        if not self.files.writer:
            return
        self.save(record.params, weights, self.files.path(BEST_WEIGHTS))
        self.files.write_json(BEST_TRIAL, self.trial_json(record))

    def _score(self, history: Sequence[Mapping[str, float]]) -> float:
        return max(self.sign * h[self.config.objective] for h in history)

    def _latest_is_best(self, history: Sequence[Mapping[str, float]]) -> bool:
        """Whether the latest epoch is strictly the trial's best (ties: the earlier)."""
        epoch = best_epoch(history, self.config.objective, maximize=self.config.maximize)
        return epoch == len(history)
