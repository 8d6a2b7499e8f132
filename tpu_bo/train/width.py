"""``--parallel_trials=auto``: how many trials a pack trains side by side, chosen by measurement.

Packing K trials into one program pays when one trial leaves the accelerator idle: on a TPU,
K towers cost about what one costs until the chip is full. On a CPU each tower costs its own
share, and K buys nothing. Which case holds depends on the model, the batch and the device, so
:func:`measure` times it before the study, on the first structure's programs:

* K = 1, 2, 4, ... (each a pack of K × ``executions_per_trial`` slots): every slot starts a
  trial at the study's first point, a call of one step warms the program up (the first call
  traces it; the step count is a tensor, so every count runs that trace), and the best of
  ``REPEATS`` timed calls of ``steps`` gives K's *trial-steps per second* (K × steps /
  seconds);
* the doubling stops once it gains less than ``GAIN`` (10%) over the best so far, runs out of
  memory, or passes ``MAX_K`` or half the study's trials (a width its budget fills twice; a
  study of fewer than 4 trials measures nothing and takes K=1);
* the choice is the smallest K within ``TOLERANCE`` (10%) of the best rate.

The chosen K's program is the one the study then runs (cached in the trainer, its eval function
traced too: no trial traces), and so are the narrower ones ``keep`` asks for (the ramp's,
:mod:`tpu_bo.session.ramp`); the others are dropped. The table is one line of the study's header
and a record in ``summary.json``, and the session caches it in the study's directory
(``parallel_trials.json``, by structure and device), so a resumed study does not measure again.
The steps it trains read a train stream of their own (``Datasets.other_stream``) and train no
trial: the study's stream and trials are what they would be with K forced.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import tensorflow as tf

from tpu_bo.train.trainer import Trainer

WIDTH_FILE = "parallel_trials.json"
MAX_K = 16
GAIN = 1.1  # a doubling of K must add this much to the best rate, or the doubling stops
TOLERANCE = 0.9  # the smallest K whose rate is within this of the best is chosen
REPEATS = 2
TIMED_STEPS = 8  # training steps per timed call (fewer when an epoch has fewer)


@dataclasses.dataclass
class Measured:
    """A measured choice of K.

    Attributes:
      chosen: The chosen K (trials per pack).
      table: Trial-steps per second by K (``None``: out of memory).
      key: What the measurement holds for: the structure, batch, executions and device.
      seconds: What measuring took (traces included).
      cached: Read from the study's directory instead of measured in this session.
    """

    chosen: int
    table: dict[int, float | None]
    key: str
    seconds: float = 0.0
    cached: bool = False

    def line(self) -> str:
        """One line for the study's header."""
        cells = ", ".join(
            f"K={k} {'out of memory' if rate is None else f'{rate:.0f}'}"
            for k, rate in self.table.items()
        )
        if not self.table:
            return f"parallel_trials=auto: K={self.chosen} (the study is too short to pack)"
        how = "cached in the study" if self.cached else f"measured in {self.seconds:.1f} s"
        return f"parallel_trials=auto: K={self.chosen} (trial-steps/s: {cells}; {how})"

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "table": {str(k): v for k, v in self.table.items()},
            "key": self.key,
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], key: str) -> Measured | None:
        """The cached measurement for ``key``, or ``None`` (another key, or unreadable)."""
        try:
            if data.get("key") != key:
                return None
            table = {int(k): (None if v is None else float(v)) for k, v in data["table"].items()}
            return cls(int(data["chosen"]), table, key, float(data["seconds"]), cached=True)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


def key_of(trainer: Trainer, params: Mapping[str, Any], device: str) -> str:
    """What a measurement holds for: ``params``'s structure, the batch, the executions per
    trial and the ``device`` (a resumed study on another chip measures again)."""
    config = trainer.config
    structure = dict(trainer.space.structure_key(params))
    batch = trainer.data(params).global_batch
    return f"{structure} batch={batch} executions={config.executions_per_trial} on {device}"


def choose(table: Mapping[int, float | None]) -> int:
    """The smallest K whose rate is within ``TOLERANCE`` of the best."""
    rates = {k: r for k, r in table.items() if r is not None}
    if not rates:
        return 1
    best = max(rates.values())
    return min(k for k, r in rates.items() if r >= TOLERANCE * best)


def measure(
    trainer: Trainer,
    params: Mapping[str, Any],
    *,
    key: str,
    limit: int,
    steps: int,
    agree: Callable[[float], float] | None = None,
    keep: Callable[[int], Collection[int]] = lambda chosen: (),
) -> Measured:
    """Times packs of K = 1, 2, 4, ... trials of ``params``'s structure (see the module
    docstring) and returns the table and the choice.

    Args:
      trainer: The study's trainer (its programs are cached there).
      params: A point of the study's first structure.
      key: :func:`key_of` the measurement.
      limit: The largest K worth measuring (the trials the study may run at once).
      steps: Training steps per timed call.
      agree: Makes every lockstep worker's rate one (their mean), so that all of them stop
        doubling at the same K; ``None`` in one process.
    """
    if limit < 2:  # a study too short to fill a pack of 2: nothing to choose between
        return Measured(1, {}, key, 0.0)
    start = time.perf_counter()
    executions = trainer.config.executions_per_trial
    table: dict[int, float | None] = {}
    k = 1
    stream = trainer.data(params).other_stream()
    while k <= min(MAX_K, max(1, limit)):
        try:  # in trial-steps: a trial's step is a step of each of its executions
            rate = _rate(trainer, params, k * executions, steps, stream) / executions
            table[k] = agree(rate) if agree is not None else rate
        except tf.errors.ResourceExhaustedError:
            table[k] = None
            trainer.drop_program(params, k * executions)
            break
        earlier = [r for q, r in table.items() if q < k and r is not None]
        if earlier and table[k] < GAIN * max(earlier):
            break
        k *= 2
    chosen = choose(table)
    kept = {chosen, *keep(chosen)}
    for q, rate in table.items():
        if q not in kept and rate is not None:
            trainer.drop_program(params, q * executions)
        elif rate is not None:  # its eval function too, so that no trial traces
            trainer.program(params, q * executions).trace_eval(trainer.data(params).eval)
    return Measured(chosen, table, key, time.perf_counter() - start)


def _rate(
    trainer: Trainer, params: Mapping[str, Any], width: int, steps: int, iterator: Any
) -> float:
    """Slot-steps per second of a program of ``width`` slots, all training on ``iterator``."""
    program = trainer.program(params, width)
    values = {**trainer.config.fixed, **params}
    for slot in range(width):
        program.start(slot, values, seed=slot)
    program.train(iterator, 1)  # the first call of a new program traces it (any step count)
    seconds = []
    for _ in range(REPEATS):
        begin = time.perf_counter()
        program.train(iterator, steps)
        seconds.append(time.perf_counter() - begin)
    for slot in range(width):
        program.freeze(slot)
    return width * steps / max(min(seconds), 1e-9)
