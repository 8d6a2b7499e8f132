"""Where a study's wall time goes: one clock of named categories (docs/DESIGN.md contract 15).

The trainer and the study loop add to one :class:`Clock`; ``summary.json`` and the console
report its split of the session's wall time:

* ``setup``: the strategy and the input pipeline, built once;
* ``trace``: building programs, and every train, eval or reset call that traced (its whole
  time, the first run of the traced program included);
* ``train`` / ``eval``: train- and eval-program calls that did not trace (``eval`` includes
  scoring the best trial on the test split at the end);
* ``reset``: loading trials into slots (the device reset, or a checkpoint copied in);
* ``suggest_wait``: the main thread waiting for the sampler: asks made when a slot frees,
  and the wait for the background asks to finish after an epoch (~0 when they hide);
* ``checkpoint``: copying in-flight trial states to the host (the files are written in a
  background thread);
* ``journal``: reporting epochs and telling trials to the storage;
* ``other``: the rest (observers, the console, TensorBoard, ``summary.png``, opening the study).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

CATEGORIES = ("setup", "trace", "train", "eval", "reset", "suggest_wait", "checkpoint", "journal")


class Clock:
    """Seconds spent per category (see the module docstring); used from one thread."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(CATEGORIES, 0.0)

    def add(self, category: str, seconds: float) -> None:
        self.seconds[category] += seconds

    @contextlib.contextmanager
    def measure(self, category: str) -> Iterator[None]:
        """Adds the time spent inside the block to ``category``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(category, time.perf_counter() - start)

    def split(self, wall: float) -> dict[str, float]:
        """Every category, ``other`` (the wall time not in any) and ``wall``, in seconds."""
        out = {name: round(value, 3) for name, value in self.seconds.items()}
        out["other"] = round(max(0.0, wall - sum(self.seconds.values())), 3)
        out["wall"] = round(wall, 3)
        return out


def split_line(split: Mapping[str, float]) -> str:
    """``time: train 9.1 s (49%), ...`` over the categories that show as 0.1 s or more, largest
    first (``summary.json`` keeps every one; a row of ``0.0 s (0%)`` only widened the line)."""
    wall = split["wall"] or 1e-9
    parts = sorted(((v, k) for k, v in split.items() if k != "wall" and v >= 0.05), reverse=True)
    shares = ", ".join(f"{k} {v:.1f} s ({v / wall:.0%})" for v, k in parts)
    return f"time: {shares} of {split['wall']:.1f} s"
