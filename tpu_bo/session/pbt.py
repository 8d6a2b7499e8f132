"""Population-based training inside one compiled program (``--scheduler=pbt``).

docs/DESIGN.md contract 18. The population is the ``--parallel_trials`` slots of a pack: K
trials of one structure, asked from the sampler as usual (random, then guided), that train in
lockstep. Every ``--pbt_interval`` epochs (never at the last one) :class:`Population` ranks the
members by the objective of that epoch on the validation split, and each member of the bottom
``--pbt_quantile``:

* **exploit**: takes the weights and optimizer state of a member drawn from the top quantile,
  in one traced device call for the whole population (:meth:`tpu_bo.train.pack.Pack.exploit`,
  :func:`tpu_bo.train.reset.make_copy`): no host transfer, no file, no retrace;
* **explore**: perturbs the donor's runtime hyperparameters (:func:`explore`), assigned to the
  receiver's variables (:meth:`tpu_bo.train.pack.Pack.set_runtime`).

A member is one Optuna trial: its ``params`` are its first values, and its ``pbt_schedule``
attribute is journaled at once at every change: a list of ``{"after_epoch": e, "values": {...},
"from": donor trial or None}``, the values it trains with from epoch ``e + 1``. Structural
hyperparameters cannot change inside a program, so a space with structural ones runs one
population per structure. A population resumed after a kill continues from the members' last
checkpoints: a checkpoint is saved after the boundary's exploit, and schedule entries newer than
a member's checkpoint are dropped (:meth:`Population.join`). Members that stand at different
epochs (a kill between two members' checkpoint writes) are ranked only among the members at the
same epoch.

:func:`ancestry` follows the best member's lineage back through its donors: the hyperparameters
that produced its weights, epoch by epoch (``summary.json``'s ``pbt``, ``summary.png``,
TensorBoard).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tpu_bo.records import SCHEDULE
from tpu_bo.search.space import Param, SearchSpace


def explore(
    values: Mapping[str, Any],
    params: Sequence[Param],
    rng: np.random.Generator,
    resample: float,
) -> dict[str, Any]:
    """New values for ``params`` (runtime ones) from a donor's ``values``.

    Each one, with probability ``resample``, is drawn afresh from its range (log-uniform for
    ``log``); otherwise a ``float``, ``log`` or ``int`` value is multiplied by 0.8 or 1.25 and
    clipped to its range, and a ``choice`` moves to a neighbouring choice. Never outside the
    space.
    """
    out: dict[str, Any] = {}
    for p in params:
        value = values[p.name]
        if rng.random() < resample:
            out[p.name] = _draw(p, rng)
        elif p.kind == "choice":
            i = p.choices.index(value) + (1 if rng.random() < 0.5 else -1)
            out[p.name] = p.choices[min(max(i, 0), len(p.choices) - 1)]
        else:
            moved = min(max(value * (0.8 if rng.random() < 0.5 else 1.25), p.low), p.high)
            out[p.name] = int(round(moved)) if p.kind == "int" else float(moved)
    return out


def _draw(p: Param, rng: np.random.Generator) -> Any:
    if p.kind == "choice":
        return p.choices[int(rng.integers(len(p.choices)))]
    if p.kind == "int":
        return int(rng.integers(int(p.low), int(p.high) + 1))
    if p.kind == "log":
        return float(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
    return float(rng.uniform(p.low, p.high))


def cut(members: int, quantile: float) -> int:
    """How many members copy (and how many may give): ``quantile`` of them, at least one when
    ``quantile`` > 0, at most half."""
    if quantile <= 0 or members < 2:
        return 0
    return min(members // 2, max(1, int(members * quantile)))


class Population:
    """The PBT step of a study's packs (see the module docstring).

    Args:
      config: The study's configuration (``pbt_interval``, ``pbt_quantile``, ``pbt_resample``,
        ``objective``, ``seed``, ``epochs``).
      space: The search space; its runtime parameters are explored.
      study: The :class:`tpu_bo.study.study.Study`; schedules are journaled through ``note``.
    """

    def __init__(self, config: Any, space: SearchSpace, study: Any) -> None:
        self.config, self.study = config, study
        self.runtime = [p for p in space.params if p.resolved_role == "runtime"]
        self.schedules: dict[int, list[dict[str, Any]]] = {}

    def join(self, trial: Any) -> dict[str, Any]:
        """A member takes a slot: returns the values to load (its latest schedule entry, up to
        the epoch it resumes from) and journals its schedule."""
        epoch = trial.resume.epoch if trial.resume is not None else 0
        first = {"after_epoch": 0, "values": self._runtime(trial.params), "from": None}
        stored = self.study.note(trial).get(SCHEDULE)
        schedule = [e for e in stored or [first] if e["after_epoch"] <= epoch]
        self.schedules[trial.number] = schedule
        if schedule != stored:
            self.study.note(trial, **{SCHEDULE: schedule})
        return {**trial.params, **schedule[-1]["values"]}

    def leave(self, number: int) -> None:
        """A member was told; its schedule is in its record."""
        self.schedules.pop(number, None)

    def step(self, pack: Any, slots: Mapping[int, Any], results: Sequence[Any]) -> list[str]:
        """After an epoch: exploit and explore where members stand at a boundary; returns one
        console line per exploit."""
        interval, last = self.config.pbt_interval, self.config.epochs
        groups: dict[int, list[Any]] = {}
        for r in results:
            if r.metrics is not None and r.slot in pack.active and r.epoch < last:
                if r.epoch % interval == 0:
                    groups.setdefault(r.epoch, []).append(r)
        lines: list[str] = []
        for epoch, members in sorted(groups.items()):
            lines += self._exploit(pack, slots, epoch, members)
        return lines

    def _exploit(self, pack: Any, slots: Mapping[int, Any], epoch: int, members: list) -> list:
        sign = 1.0 if self.config.maximize else -1.0
        objective = self.config.objective
        ranked = sorted(members, key=lambda r: (-sign * r.metrics[objective], slots[r.slot].number))
        n = cut(len(ranked), self.config.pbt_quantile)
        if n == 0:
            return []
        top, donors, rngs = ranked[:n], {}, {}
        for r in ranked[-n:]:
            number = slots[r.slot].number
            rng = rngs[r.slot] = np.random.default_rng([self.config.seed, epoch, number])
            donors[r.slot] = top[int(rng.integers(len(top)))].slot
        pack.exploit(donors)
        lines = []
        for receiver, donor in donors.items():
            trial, giver = slots[receiver], slots[donor]
            current = self.schedules[giver.number][-1]["values"]
            values = explore(current, self.runtime, rngs[receiver], self.config.pbt_resample)
            pack.set_runtime(receiver, {**trial.params, **values})
            entry = {"after_epoch": epoch, "values": values, "from": giver.number}
            self.schedules[trial.number].append(entry)
            self.study.note(trial, **{SCHEDULE: self.schedules[trial.number]})
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()) or "no runtime values"
            lines.append(
                f"PBT after epoch {epoch}: trial {trial.number} takes trial {giver.number}'s "
                f"weights, with {shown}"
            )
        return lines

    def _runtime(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {p.name: params[p.name] for p in self.runtime}


def ancestry(
    number: int, schedules: Mapping[int, Sequence[Mapping[str, Any]]], end: int
) -> list[dict[str, Any]]:
    """How trial ``number``'s weights at epoch ``end`` were made: segments ``{"trial",
    "epochs": [first, last], "values"}`` from epoch 1 to ``end``, following each exploit back
    to its donor. ``schedules`` maps trial numbers to their ``pbt_schedule``."""
    segments: list[dict[str, Any]] = []
    seen = 0
    while end > 0 and seen < 10_000:
        entries = [e for e in schedules.get(number, ()) if e["after_epoch"] < end]
        if not entries:
            break
        for entry in reversed(entries):
            start = entry["after_epoch"]
            segment = {"trial": number, "epochs": [start + 1, end], "values": entry["values"]}
            segments.append(segment)
            end, seen = start, seen + 1
            if entry["from"] is not None:
                number = entry["from"]
                break
    return segments[::-1]


def per_epoch(segments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The values of every epoch of an :func:`ancestry`, from epoch 1: ``{"epoch", "trial",
    **values}``."""
    rows = []
    for segment in segments:
        first, last = segment["epochs"]
        for epoch in range(first, last + 1):
            rows.append({"epoch": epoch, "trial": segment["trial"], **segment["values"]})
    return rows


def pbt_summary(best: Any, records: Sequence[Any], copy_traces: int) -> dict[str, Any]:
    """``summary.json``'s ``pbt``: the study's exploits, the copy programs traced, and the best
    member's ``ancestry`` to its best epoch with its values per epoch (``best``: ``None`` when
    no member has a score)."""
    schedules = {r.number: r.schedule for r in records if r.schedule}
    out: dict[str, Any] = {
        "exploits": sum(len(s) - 1 for s in schedules.values()),
        "copy_traces": copy_traces,
        "best": None,
    }
    if best is not None and best.number in schedules and best.best_epoch:
        segments = ancestry(best.number, schedules, best.best_epoch)
        out["best"] = {
            "trial": best.number,
            "best_epoch": best.best_epoch,
            "ancestry": segments,
            "schedule": per_epoch(segments),
        }
    return out


def pbt_lines(summary: Mapping[str, Any]) -> list[str]:
    """The console's lines about :func:`pbt_summary`."""
    lineage = summary["best"]
    if lineage is None:
        return [f"PBT: {summary['exploits']} exploit(s) in the study"]
    chain = ", then ".join(
        f"trial {s['trial']} (epochs {s['epochs'][0]}-{s['epochs'][1]})"
        for s in lineage["ancestry"]
    )
    last = lineage["ancestry"][-1]["values"]
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in last.items())
    return [
        f"PBT: {summary['exploits']} exploit(s) in the study; the best weights (trial "
        f"{lineage['trial']}, epoch {lineage['best_epoch']}) were trained by {chain}"
        + (f"; last values {shown}" if shown else "")
    ]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
