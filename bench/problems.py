"""The test problems of ``bench/optimizer_quality.py``: functions with known minima, each as a
tpu_bo search space (``space``), bayes_opt bounds (``plain``), the objective ``f`` of a point,
its ``minimum`` and, for the noisy ones, the ``noise`` (the standard deviation of the
Gaussian noise added to every observation; regret is always measured on the noise-free value)
and a ``failed_value``. See ``bench/optimizer_quality.py``'s docstring for what each one models.

The first five are the original problems; the ``_nXXX`` ones are noisier copies of three of
them (``n003``: noise 0.003, ``n01``: 0.1...), the same function and minimum: see
:data:`NOISY`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def branin(x1: float, x2: float) -> float:
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def hartmann6(*x: float) -> float:
    v = np.asarray(x)
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (v - _H_P) ** 2, axis=1))))


def _log_branin(lr: float, x2: int, scale: float) -> float:
    x1 = -5 + 5 * (math.log10(lr) + 4) / 4
    return scale * branin(x1, x2)


def log_branin_minimum() -> float:
    x1 = np.linspace(-5, 0, 100_001)
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    best = min(
        float(np.min(a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * np.cos(x1) + s))
        for x2 in range(16)
    )
    return 0.5 * best


def _accuracy(lr: float, dropout: float, units: int) -> float:
    """A smooth stand-in for validation accuracy: best 0.985 at lr=2e-3, dropout 0.25, 256."""
    return (
        0.985
        - 0.006 * (math.log10(lr) + 2.7) ** 2
        - 0.03 * (dropout - 0.25) ** 2
        - 0.002 * (units != 256)
    )


def _cliff(lr: float, dropout: float) -> float:
    """Accuracy rising with log(lr) to a cliff at 0.05 (dead above it, NaN above 1)."""
    if lr > 1.0:
        return math.nan
    if lr > 0.05:
        return 0.1
    rise = 1.0 / (1.0 + math.exp(-3.0 * (math.log10(lr) + 3.3)))
    return 0.1 + 0.885 * rise - 0.03 * (dropout - 0.25) ** 2


PROBLEMS: dict[str, dict[str, Any]] = {
    "branin": {
        "space": ["x1:float:-5:10", "x2:float:0:15"],
        "plain": {"x1": (-5, 10), "x2": (0, 15)},
        "f": lambda v: branin(v["x1"], v["x2"]),
        "minimum": 0.397887,
    },
    "hartmann6": {
        "space": [f"x{i}:float:0:1" for i in range(6)],
        "plain": {f"x{i}": (0, 1) for i in range(6)},
        "f": lambda v: hartmann6(*(v[f"x{i}"] for i in range(6))),
        "minimum": -3.32237,
    },
    "log_branin": {
        "space": ["lr:log:1e-4:1", "x2:int:0:15", "scale:choice:0.5,1,2"],
        "plain": {"lr": (1e-4, 1), "x2": (0, 15, int), "scale": [0.5, 1, 2]},
        "f": lambda v: _log_branin(v["lr"], int(v["x2"]), float(v["scale"])),
        "minimum": None,  # computed on first use
    },
    "accuracy_like": {
        "space": ["lr:log:1e-4:1e-1", "dropout:float:0:0.6", "units:choice:128,256,384"],
        "plain": {"lr": (1e-4, 1e-1), "dropout": (0, 0.6), "units": [128, 256, 384]},
        # Minimised as an error rate, so every problem reads the same way.
        "f": lambda v: 1.0 - _accuracy(v["lr"], v["dropout"], int(v["units"])),
        "noise": 0.0015,
        "minimum": 1.0 - 0.985,
    },
    "lr_cliff": {
        "space": ["lr:log:1e-4:10", "dropout:float:0:0.6"],
        "plain": {"lr": (1e-4, 10), "dropout": (0, 0.6)},
        "f": lambda v: 1.0 - _cliff(v["lr"], v["dropout"]),
        "noise": 0.0015,
        "failed_value": 0.9,  # a diverged run: chance accuracy
        "minimum": 1.0 - _cliff(0.05, 0.25),
    },
}

# Noisier copies: name -> (the problem copied, the noise's standard deviation).
NOISY: dict[str, tuple[str, float]] = {
    "accuracy_like_n003": ("accuracy_like", 0.003),
    "accuracy_like_n006": ("accuracy_like", 0.006),
    "lr_cliff_n004": ("lr_cliff", 0.004),
    "hartmann6_n01": ("hartmann6", 0.1),
    "hartmann6_n03": ("hartmann6", 0.3),
}
PROBLEMS.update({name: {**PROBLEMS[base], "noise": sd} for name, (base, sd) in NOISY.items()})
QUICK_PROBLEMS = ("branin", "hartmann6", "log_branin", "accuracy_like", "lr_cliff")
QUICK_PROBLEMS += ("accuracy_like_n006", "hartmann6_n03")  # --quick: the noisiest two added


def set_minima() -> None:
    """Fills in the minima computed on first use (log_branin's, by brute force)."""
    if PROBLEMS["log_branin"]["minimum"] is None:
        PROBLEMS["log_branin"]["minimum"] = log_branin_minimum()
