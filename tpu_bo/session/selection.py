"""The best trial of a study, its weights, and its repeats (``--select_best``, ``--repeat_best``).

While a study runs, ``best/`` holds the best *observed* trial's weights, so a killed study
always has one. With ``--select_best=posterior`` or ``--repeat_best`` > 1 the weights of the
``TOP`` best observed trials are kept too, in ``kept/``; at the end :class:`Selection` picks the
recommended trial (:mod:`tpu_bo.search.recommend`) and copies its weights into ``best/``:

* ``observed`` (the default): the best score, a single draw of a noisy measurement;
* ``posterior``: the best posterior mean of the sampler's noise-aware Gaussian process among
  the ``TOP`` best observed trials (better on smooth noisy objectives, worse next to a cliff:
  ``bench/RESULTS.md``, "optimizer_quality").

With ``--repeat_best=N`` the top candidates (by the same rule) run N - 1 more times with new
seeds once the budget is spent, as many as a pack's slots allow (:func:`repeat_candidates`,
chosen once and stored with the study, so a resumed study completes the same ones); the
choice is then the repeated candidate with the best mean (``observed``) or posterior mean
(``posterior``), and its weights those of its best run. Every number is in ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from optuna.trial import FrozenTrial

from tpu_bo.config import Config
from tpu_bo.records import Status, TrialRecord, best
from tpu_bo.search import recommend
from tpu_bo.search.sampler import replay
from tpu_bo.search.space import SearchSpace
from tpu_bo.search.suggester import Suggester
from tpu_bo.study.output_dir import BEST_TRIAL, BEST_WEIGHTS, OutputDir, copy_file, kept_name


@dataclasses.dataclass
class Choice:
    """The recommended trial and what ``summary.json`` says about the choice."""

    record: TrialRecord | None
    info: dict[str, Any]


def posterior(
    config: Config, space: SearchSpace, trials: Sequence[FrozenTrial]
) -> tuple[dict[int, tuple], float]:
    """The GP's (mean, std) of every completed trial's objective, by number, and its fitted
    noise std: tpu_bo's sampler replayed over the study's Optuna trials."""
    suggester = Suggester(space, seed=config.seed, maximize=config.maximize)
    ok = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not ok or not replay(suggester, trials, -1, maximize=config.maximize):
        return {}, 0.0
    inside = [t for t in ok if space.contains(t.params)]
    if not inside:
        return {}, 0.0
    mean, std = suggester.posterior([t.params for t in inside])
    table = {t.number: (float(m), float(s)) for t, m, s in zip(inside, mean, std, strict=True)}
    return table, suggester.noise_std


def ok_records(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.status is Status.OK and r.target is not None]


def ranked(
    records: Sequence[TrialRecord], table: dict[int, tuple], *, rule: str, maximize: bool
) -> list[TrialRecord]:
    """Completed trials, best first, by ``rule``: ``observed`` by score; ``posterior`` the
    ``TOP`` best observed by posterior mean (a trial without one last)."""
    sign = 1.0 if maximize else -1.0
    ok = sorted(ok_records(records), key=lambda r: (-sign * r.target, r.number))
    if rule == "observed" or not table:
        return ok
    means = [table[r.number][0] if r.number in table else None for r in ok]
    return [ok[i] for i in recommend.order([r.target for r in ok], means, maximize=maximize)]


def repeat_candidates(
    config: Config, records: Sequence[TrialRecord], table: dict[int, tuple]
) -> list[int]:
    """The trials to repeat: the top ``C`` originals by ``select_best``'s rule, ``C`` = the
    slots of a pack over the runs each needs (at least 1, at most ``TOP``)."""
    n = config.repeat_best
    if n <= 1:
        return []
    originals = [r for r in records if r.repeat_of is None]
    count = min(recommend.TOP, max(1, config.trials_per_pack // (n - 1)))
    top = ranked(originals, table, rule=config.select_best, maximize=config.maximize)
    return [r.number for r in top[:count]]


def repeat_plan(
    config: Config,
    records: Sequence[TrialRecord],
    candidates: Sequence[int],
    running: Sequence[int] = (),
) -> list[tuple[TrialRecord, int]]:
    """How many more runs each candidate needs to have ``repeat_best`` in all (its repeats
    so far, whatever their state, count; ``running``: the candidates of repeats still running,
    which a shared study's other workers may run)."""
    by_number = {r.number: r for r in records}
    done = dict.fromkeys(candidates, 0)
    for of in [*(r.repeat_of for r in records), *running]:
        if of in done:
            done[of] += 1
    needed = [(by_number[c], config.repeat_best - 1 - done[c]) for c in candidates]
    return [(r, n) for r, n in needed if n > 0]


def choose(
    config: Config, records: Sequence[TrialRecord], table: dict[int, tuple], noise: float
) -> Choice:
    """The recommended trial: see the module docstring."""
    maximize, rule = config.maximize, config.select_best
    sign = 1.0 if maximize else -1.0
    observed = best(records, maximize=maximize)
    if observed is None:
        return Choice(None, {"selected_by": rule})
    info: dict[str, Any] = {
        "selected_by": rule,
        "best_observed": {"trial": observed.number, "target": observed.target},
    }
    if table:
        top = max(table, key=lambda k: (sign * table[k][0], -k))
        mean, std = table[top]
        info["best_posterior"] = {"trial": top, "mean": mean, "std": std, "noise_std": noise}
    groups = recommend.groups(ok_records(records))
    repeated = {k: runs for k, runs in groups.items() if any(r.repeat_of is not None for r in runs)}
    if repeated:
        info["repeats"] = [_group_info(runs, table) for runs in repeated.values()]

        def merit(runs: list[TrialRecord]) -> float:
            if rule == "posterior" and runs[0].number in table:
                return sign * table[runs[0].number][0]
            return sign * recommend.spread([r.target for r in runs])["mean"]

        winner = max(repeated.values(), key=lambda runs: (merit(runs), -runs[0].number))
        chosen = max(winner, key=lambda r: (sign * r.target, -r.number))
    else:
        chosen = ranked(records, table, rule=rule, maximize=maximize)[0]
    if chosen.number in table:
        info["posterior_mean"], info["posterior_std"] = table[chosen.number]
    return Choice(chosen, info)


def _group_info(runs: list[TrialRecord], table: dict[int, tuple]) -> dict[str, Any]:
    runs = sorted(runs, key=lambda r: r.number)
    out = {
        "params": runs[0].params,
        "trials": [r.number for r in runs],
        "targets": [r.target for r in runs],
        **recommend.spread([r.target for r in runs]),
    }
    if runs[0].number in table:
        out["posterior_mean"], out["posterior_std"] = table[runs[0].number]
    return out


class Kept:
    """The ``TOP`` best observed trials' weights in ``kept/`` (when a rule may need them).

    Args:
      files: The study's output directory.
      save: Writes ``(params, weights, path)`` as ``.weights.h5`` (``Trainer.save_weights``).
      maximize: The objective's direction.
      enabled: Whether to keep anything (``keep_top``, ``select_best=posterior`` or
        ``repeat_best`` > 1).
    """

    def __init__(self, files: OutputDir, save: Callable, *, maximize: bool, enabled: bool) -> None:
        self.files, self.save, self.enabled = files, save, enabled
        self.sign = 1.0 if maximize else -1.0
        self.weights: dict[int, Any] = {}  # this session's kept trials, by number

    def threshold(self, records: Sequence[TrialRecord]) -> float:
        """The signed score a trial must beat to be kept (``-inf`` while fewer are kept)."""
        scores = sorted((self.sign * r.target for r in ok_records(records)), reverse=True)
        return scores[recommend.TOP - 1] if len(scores) >= recommend.TOP else -math.inf

    def keep(self, record: TrialRecord, weights: Any, records: Sequence[TrialRecord]) -> None:
        """Keeps a just-told trial's weights if it ranks among the ``TOP`` (in memory on every
        worker, in ``kept/`` by the writer), and drops those of trials it pushed out
        (``records``: every finished trial, it included)."""
        if not self.enabled or record.status is not Status.OK:
            return
        top = sorted(ok_records(records), key=lambda r: (-self.sign * r.target, r.number))
        if record.number in {r.number for r in top[: recommend.TOP]}:
            self.weights[record.number] = weights
            if self.files.writer:
                self.save(record.params, weights, self.files.path(kept_name(record.number)))
        for r in top[recommend.TOP :]:
            self.weights.pop(r.number, None)
            self.files.remove(kept_name(r.number))

    def has(self, number: int) -> bool:
        """Whether trial ``number``'s weights are kept (this session's in memory, an earlier
        session's in ``kept/``, a file no one rewrites)."""
        return number in self.weights or self.files.exists(kept_name(number))

    def install(self, choice: Choice, extra: dict[str, Any]) -> None:
        """Makes ``best/`` hold the chosen trial (:meth:`has` it) and records the choice in
        ``best/trial.json`` (``extra``: the fields every ``trial.json`` has); writer only."""
        record = choice.record
        if record is None or not self.files.writer:
            return
        current = self.files.read_json(BEST_TRIAL) or {}
        if current.get("trial") != record.number:
            copy_file(self.files.path(kept_name(record.number)), self.files.path(BEST_WEIGHTS))
        trial = {**current, **extra}
        trial.update(trial=record.number, target=record.target, params=record.params)
        trial.update(best_epoch=record.best_epoch, selection=choice.info)
        self.files.write_json(BEST_TRIAL, trial)


def selection_lines(info: dict[str, Any], objective: str) -> list[str]:
    """The console's lines about the choice of the best trial."""
    if not info.get("best_observed"):
        return []
    observed = info["best_observed"]
    lines = [f"best observed: trial {observed['trial']} {objective} {observed['target']:.4f}"]
    top = info.get("best_posterior")
    if top:
        lines.append(
            f"best posterior mean: trial {top['trial']} {top['mean']:.4f} ± {top['std']:.4f} "
            f"(the GP's noise std {top['noise_std']:.4f})"
        )
    for group in info.get("repeats", []):
        runs = ", ".join(str(n) for n in group["trials"])
        lines.append(
            f"repeated: trials {runs}: mean {group['mean']:.4f} ± {group['std']:.4f} "
            f"(min {group['min']:.4f}, max {group['max']:.4f})"
        )
    chosen = info.get("selected_trial")
    line = f"selected by {info['selected_by']}: trial {chosen} (best/, load_best_model)"
    if "not_kept" in info:
        line += f"; trial {info['not_kept']} was chosen but its weights were not kept"
    return lines + [line]
