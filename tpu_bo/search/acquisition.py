"""Maximising an acquisition over a ``bayes_opt`` target space, with every step capped by a count.

:func:`maximise` scores ``CANDIDATES`` random points in one batch (fewer past
``CANDIDATE_CELLS`` candidates x points); one L-BFGS-B of ``POLISH_EVALUATIONS`` batched
posteriors moves the continuous coordinates of the best ``STARTS`` and of the best observation
together; ``DISCRETE_PASSES`` passes then try every int and choice value. :func:`capped_lbfgsb`
is the L-BFGS-B that stops after a number of evaluations, which kernel fits use too.

Nothing here reads the clock (see :mod:`tpu_bo.search.suggester`). No TensorFlow.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

CANDIDATES, MIN_CANDIDATES, CANDIDATE_CELLS = 2048, 256, 200_000
STARTS, POLISH_EVALUATIONS, STEP = 5, 40, 1e-6  # STEP: a finite difference, in unit coordinates
DISCRETE_PASSES, DISCRETE_VALUES = 2, 32  # DISCRETE_VALUES: of an int parameter, at most


class _OutOfBudget(Exception): ...


def log_h(z: np.ndarray) -> np.ndarray:
    """log(phi(z) + z Phi(z)), the log of expected improvement over one standard deviation,
    accurate where expected improvement itself underflows (Ament et al., 2023, "Unexpected
    improvements to expected improvement": log-EI). Expected improvement is
    ``std * exp(log_h((mean - best) / std))``."""
    from scipy.special import erfcx, ndtr

    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    upper = z > -1.0
    zu = z[upper]
    out[upper] = np.log(np.exp(-0.5 * zu * zu) / math.sqrt(2 * math.pi) + zu * ndtr(zu))
    t = -z[~upper]  # >= 1
    base = -0.5 * t * t - 0.5 * math.log(2 * math.pi)
    # h = phi(z) (1 - t sqrt(pi / 2) erfcx(t / sqrt 2)); w is the log of the subtracted term.
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.log(t * erfcx(t / math.sqrt(2.0))) + 0.5 * math.log(math.pi / 2)
        log1mexp = np.where(w > -math.log(2.0), np.log(-np.expm1(w)), np.log1p(-np.exp(w)))
    far = t > 1e4  # 1 - t sqrt(pi / 2) erfcx(...) ~ 1 / t**2, past float precision
    out[~upper] = np.where(far, base - 2 * np.log(t), base + log1mexp)
    return out


def capped_lbfgsb(fun: Callable, x0: np.ndarray, bounds: Any, *, cap: int) -> tuple:
    """L-BFGS-B on ``fun`` (value and gradient) stopped after ``cap`` evaluations: the best
    point evaluated, its value and the evaluations spent."""
    from scipy.optimize import minimize

    best: list[Any] = [np.asarray(x0, dtype=float), math.inf]
    calls = 0

    def counted(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        if calls >= cap:
            raise _OutOfBudget
        calls += 1
        value, gradient = fun(x)
        if float(value) < best[1]:
            best[:] = [np.array(x), float(value)]
        return value, gradient

    with contextlib.suppress(_OutOfBudget):
        minimize(counted, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    return best[0], best[1], calls


def maximise(acquisition: Callable, bo: Any) -> np.ndarray:
    """The point that minimises ``acquisition`` (see the module docstring for the budget)."""
    space = bo.space
    count = max(MIN_CANDIDATES, min(CANDIDATES, CANDIDATE_CELLS // len(space)))
    candidates = space.random_sample(count, random_state=bo._random_state)
    values = acquisition(candidates)
    starts = candidates[np.argsort(values, kind="stable")[:STARTS]]
    inside = space.mask
    if inside.any():  # the best observation so far: its neighbourhood is worth a look
        best = int(np.argmax(np.where(inside, space.target, -np.inf)))
        starts = np.vstack([starts, space.params[best]])
    x, value = candidates[int(np.argmin(values))], float(np.min(values))
    continuous = space.continuous_dimensions
    if continuous.any():
        polished, polished_value = _polish(acquisition, starts, continuous, space.bounds)
        if polished_value < value:
            x, value = polished, polished_value
    x = _discrete_passes(acquisition, x, value, space)
    if continuous.any() and x in space:  # the best observation itself: a flat acquisition
        x = candidates[int(np.argmin(values))]
    return np.clip(x, space.bounds[:, 0], space.bounds[:, 1])


def _polish(
    acquisition: Callable, starts: np.ndarray, continuous: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, float]:
    """One L-BFGS-B on the sum of the starts' acquisitions over their continuous coordinates
    (scaled to [0, 1]): one batched posterior gives it and its forward differences. Returns the
    best point any start reached, and its value."""
    low, width = bounds[continuous, 0], bounds[continuous, 1] - bounds[continuous, 0]
    k, d = len(starts), int(continuous.sum())
    best = [starts[0].copy(), math.inf]

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        unit = z.reshape(k, d)
        step = np.where(unit + STEP <= 1.0, STEP, -STEP)
        probes = np.repeat(unit[:, None, :], d + 1, axis=1)
        probes[:, np.arange(1, d + 1), np.arange(d)] += step
        points = np.repeat(starts[:, None, :], d + 1, axis=1)
        points[..., continuous] = low + probes * width
        values = acquisition(points.reshape(k * (d + 1), -1)).reshape(k, d + 1)
        i = int(np.argmin(values[:, 0]))
        if values[i, 0] < best[1]:
            best[:] = [points[i, 0].copy(), float(values[i, 0])]
        return float(values[:, 0].sum()), ((values[:, 1:] - values[:, :1]) / step).ravel()

    z0 = np.clip((starts[:, continuous] - low) / width, 0.0, 1.0).ravel()
    capped_lbfgsb(fun, z0, [(0.0, 1.0)] * (k * d), cap=POLISH_EVALUATIONS)
    return best[0], best[1]


def _discrete_passes(acquisition: Callable, x: np.ndarray, value: float, space: Any) -> np.ndarray:
    """Moves ``x`` to the best change of one int or choice value, while that improves it."""
    options = []  # per discrete parameter: its columns, and rows of values to put there
    for name, parameter in space.params_config.items():
        columns = space.masks[name]
        if parameter.dim > 1:  # a choice, one-hot
            options.append((columns, np.eye(parameter.dim)))
        elif not parameter.is_continuous:
            low, high = space.bounds[columns][0]
            grid = np.arange(math.ceil(low), math.floor(high) + 1, dtype=float)
            if len(grid) > DISCRETE_VALUES:
                grid = np.unique(np.round(np.linspace(low, high, DISCRETE_VALUES)))
            options.append((columns, grid[:, None]))
    for _ in range(DISCRETE_PASSES if options else 0):
        moves = np.vstack([np.repeat(x[None], len(rows), axis=0) for _, rows in options])
        start = 0
        for columns, rows in options:
            moves[start : start + len(rows), columns] = rows
            start += len(rows)
        scores = acquisition(moves)
        if not scores.min() < value:
            break
        x, value = moves[int(np.argmin(scores))], float(scores.min())
    return x
