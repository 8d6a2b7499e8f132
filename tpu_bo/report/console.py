"""Console output: the live progress line and the per-trial table, as in the blog post.

:class:`Reporter` prints; :class:`Console` is the observer that feeds it.

The table has one row per finished trial: trial number, target, status, seconds, the
cumulative trace count, then one column per hyperparameter. A new best is marked with ``*``.
On a terminal the progress line is redrawn in place; in a log file or notebook it is printed at
most every ``progress_every`` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from tpu_bo.records import Trial, TrialRecord
from tpu_bo.report.observers import Observer
from tpu_bo.terminal import fit


def format_value(value: Any) -> str:
    """A compact, readable form of a hyperparameter or metric value."""
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


class Reporter:
    """Prints progress and the trial table.

    Args:
      names: The hyperparameter names, in column order.
      total: The study's budget, for the ``trial i/N`` label.
      stream: Where to print; stdout by default.
      progress_every: Minimum seconds between progress lines when not on a terminal.
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        total: int,
        stream: TextIO | None = None,
        progress_every: float = 15.0,
    ) -> None:
        self.names = list(names)
        self.total = total
        self.stream = stream or sys.stdout
        self.progress_every = progress_every
        # The fixed columns as narrow as their names: the blog's two-parameter table fits 80.
        self._widths = [5, 9, 7, 7, 6] + [max(len(n), 10) for n in self.names]
        self._header_printed = False
        self._last_progress = 0.0
        self._live = False
        self._label = "trial"

    def _print(self, text: str = "") -> None:
        self._clear_live()
        print(text, file=self.stream, flush=True)

    def _clear_live(self) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False

    def header(self) -> None:
        """Prints the table header (once)."""
        if self._header_printed:
            return
        cells = ["trial", "target", "status", "seconds", "traces"] + self.names
        self._print(self._row(cells))
        self._print("|" + "|".join("-" * (w + 2) for w in self._widths) + "|")
        self._header_printed = True

    def start_trial(self, trial: int | Sequence[int]) -> None:
        """Notes the trial (or the pack of trials) about to run, for the progress line."""
        trials = [trial] if isinstance(trial, int) else list(trial)
        if len(trials) == 1:
            self._label = f"trial {trials[0]} (budget {self.total})"
        elif trials == list(range(trials[0], trials[-1] + 1)):
            self._label = f"trials {trials[0]}-{trials[-1]} (budget {self.total})"
        else:
            self._label = f"trials {','.join(map(str, trials))} (budget {self.total})"
        self._last_progress = time.monotonic()

    def progress(self, step: int, steps: int, loss: float, rate: float) -> None:
        """Shows training progress of the running trial(s) within their current epoch."""
        text = f"  {self._label} step {step}/{steps} loss {loss:.4f} {rate:.1f} steps/s"
        if self.stream.isatty():
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._live = True
        elif time.monotonic() - self._last_progress >= self.progress_every:
            self._print(text)
            self._last_progress = time.monotonic()

    def trial(self, record: TrialRecord, *, new_best: bool) -> None:
        """Prints one finished trial's row."""
        self.header()
        target = record.target
        target_text = "-" if target is None else f"{target:.4f}" + ("*" if new_best else " ")
        cells = [
            str(record.number),
            target_text,
            record.status.value,
            f"{record.seconds:.1f}",
            str(record.traces),
        ] + [format_value(record.params.get(n)) for n in self.names]
        self._print(self._row(cells))
        if record.error:
            self._print(f"  trial {record.number} {record.status.value}: {record.error}")

    def line(self, text: str = "") -> None:
        """Prints a free-form line, clearing any live progress first; on a terminal a line
        wider than it wraps at word boundaries (:func:`tpu_bo.terminal.fit`)."""
        self._print(fit(text, self.stream))

    def _row(self, cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w)[:w] if i > 4 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, self._widths, strict=True))
            )
            + " |"
        )


class Console(Observer):
    """The trial table and the live progress line (:class:`tpu_bo.report.console.Reporter`)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._running: list[int] = []

    def on_trial_start(self, trial: Trial) -> None:
        self._running.append(trial.number)
        self.reporter.start_trial(sorted(self._running))

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None:
        self.reporter.progress(step, steps, loss, steps_per_second)

    def on_trial_end(self, record: TrialRecord, *, new_best: bool) -> None:
        if record.number in self._running:
            self._running.remove(record.number)
            if self._running:
                self.reporter.start_trial(sorted(self._running))
        self.reporter.trial(record, new_best=new_best)
