"""Which trial to recommend: the best *observed* score, or the best *posterior mean*.

A one-epoch validation score is one noisy draw: the same hyperparameters with another seed
score differently. The best observed trial is then partly the luckiest one. The posterior
rule asks the sampler's Gaussian process (with its fitted observation noise, see
:mod:`tpu_bo.search.suggester`) for the mean of every finished trial's objective and recommends the
best mean among the ``TOP`` best observed trials: a point that scored well *and* whose
neighbours and repeats agree. Only those ``TOP`` trials' weights need keeping.

Repeats (``--repeat_best``) are trials with the same hyperparameters as an earlier one and a
new seed; :func:`groups` gathers them, and the observed rule then ranks a group by its mean.

This module does not import TensorFlow.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

TOP = 5  # trials whose weights are kept, among which the posterior rule chooses
RULES = ("observed", "posterior")


def recommend(
    scores: Sequence[float], means: Sequence[float], *, maximize: bool, top: int = TOP
) -> int:
    """The index of the recommended observation: among the ``top`` best ``scores``, the one
    whose posterior mean (``means``) is best; the earlier among equals."""
    return order(scores, means, maximize=maximize, top=top)[0]


def order(
    scores: Sequence[float], means: Sequence[float | None], *, maximize: bool, top: int = TOP
) -> list[int]:
    """The indices of the ``top`` best ``scores``, best posterior mean first (a mean of
    ``None`` last; the earlier among equals): the posterior rule's ranking."""
    sign = 1.0 if maximize else -1.0
    best = sorted(range(len(scores)), key=lambda i: (-sign * scores[i], i))[:top]
    return sorted(best, key=lambda i: (means[i] is None, -sign * (means[i] or 0.0), i))


def key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Hyperparameters as a hashable key: repeats of a trial share it."""
    return tuple(sorted((k, _plain(v)) for k, v in params.items()))


def groups(records: Sequence[Any]) -> dict[tuple, list[Any]]:
    """Finished records with a target, by hyperparameters (a trial and its repeats)."""
    out: dict[tuple, list[Any]] = {}
    for r in records:
        if r.target is not None and math.isfinite(r.target):
            out.setdefault(key(r.params), []).append(r)
    return out


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, standard deviation (sample; 0 for one value), min and max of ``values``."""
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, float) else value
