"""The figures of ``bench/schedulers.py``, from a run's records: pure functions, no study.

A record is ``[compute, wall seconds, val accuracy, best so far]`` (``RECORD_FIELDS`` of
``bench/schedulers.py``), in the order the epochs happened.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

Record = list[float]


def with_best(events: Sequence[Sequence[float]]) -> list[Record]:
    """(compute, wall, accuracy) events as records with the best accuracy so far appended."""
    best, out = -math.inf, []
    for compute, wall, accuracy in events:
        best = max(best, accuracy)
        out.append([compute, wall, accuracy, best])
    return out


def truncate(records: Sequence[Record], budget: float) -> list[Record]:
    """The records made within ``budget`` tower-epochs."""
    return [list(r) for r in records if r[0] <= budget]


def best_at(records: Sequence[Record], compute: float) -> float | None:
    """The best accuracy of the epochs done by ``compute`` tower-epochs; ``None`` before any."""
    seen = [r[2] for r in records if r[0] <= compute]
    return max(seen) if seen else None


def time_to_target(records: Sequence[Record], target: float) -> tuple[float | None, float | None]:
    """(compute, wall seconds) of the first epoch at or above ``target``; ``None``s if none."""
    hit = next((r for r in records if r[2] >= target), None)
    return (None, None) if hit is None else (hit[0], hit[1])


def censored_median(values: Sequence[float | None], missing: float = math.inf) -> float | None:
    """The median with ``None`` counted as ``missing`` (infinite: a target never reached);
    ``None`` when the median is a missing one."""
    if not values:
        return None
    median = statistics.median([missing if v is None else v for v in values])
    return None if math.isinf(median) else median


def median_curve(curves: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Pointwise median of best-so-far curves on one grid (a seed with no epoch yet, ``None``,
    counts as the worst)."""
    return [censored_median(c, missing=-math.inf) for c in zip(*curves, strict=True)]


def run_figures(records: Sequence[Record], budget: float, target: float) -> dict[str, Any]:
    """One run's reported figures from its records, truncated at ``budget``."""
    kept = truncate(records, budget)
    compute, wall = time_to_target(kept, target)
    return {
        "best_at_budget": best_at(kept, budget),
        "compute_to_target": compute,
        "wall_to_target": wall,
        "wall_seconds": kept[-1][1] if kept else None,  # when the budget was spent
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A method's medians over its seeds' runs (``run_figures`` plus utilization and wall)."""
    best = [r["best_at_budget"] for r in runs if r["best_at_budget"] is not None]
    return {
        "best_at_budget": statistics.median(best) if best else None,
        "compute_to_target": censored_median([r["compute_to_target"] for r in runs]),
        "wall_to_target": censored_median([r["wall_to_target"] for r in runs]),
        "reached_target": sum(r["compute_to_target"] is not None for r in runs),
        "utilization": statistics.median(r["utilization"] for r in runs),
        "wall_seconds": censored_median([r["wall_seconds"] for r in runs]),
    }


def best_by_wall(runs: Sequence[dict[str, Any]], seconds: float) -> float | None:
    """The median over runs of the best accuracy of the epochs done by ``seconds`` of wall
    time (a run with none yet counts as the worst)."""
    return censored_median(
        [max((r[2] for r in run["records"] if r[1] <= seconds), default=None) for run in runs],
        missing=-math.inf,
    )


def resummarise(methods: dict[str, Any], budget: float, target: float) -> dict[str, Any]:
    """A written JSON's ``methods`` with every run's figures (and the medians) recomputed from
    its records for another ``target``."""
    out = {}
    for method, entry in methods.items():
        if entry.get("available"):
            runs = [{**r, **run_figures(r["records"], budget, target)} for r in entry["runs"]]
            entry = {**entry, "runs": runs, "summary": summarise(runs)}
        out[method] = entry
    return out
