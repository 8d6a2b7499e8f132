"""The ramp: a study's packs start one trial wide and widen to ``--parallel_trials=auto``'s K.

Packing pays in throughput, but a pack of K trials started together reports its first rung
only after K trials' worth of compute, and a sampler asked for K points at once guides none of
them by the others. Early in a study that is the wrong trade: nothing is known yet, so the
first scores should come as soon as possible, and the pruners need finished trials to compare
against. So, with ``--ramp`` (the default under ``--parallel_trials=auto``), a pack trains

    min(K, the largest power of two ≤ 1 + trials told)

trials side by side: one until a trial is told, then 2, then 4 after 3 are told, 8 after 7.
The widths are the ones ``--parallel_trials=auto`` measured (1, 2, 4, ... up to K), whose
programs it keeps for the ramp, so the ramp traces nothing new: one program per (structure,
width), and a width the ramp has passed is dropped. Widening happens at an epoch boundary:
the running trials move into the wider pack with their weights, optimizer state, history and
clock (:meth:`tpu_bo.train.pack.Pack.adopt`), and the free slots take new trials.

A number for ``--parallel_trials`` forces K from the first trial; PBT's population runs at
its fixed size; lockstep workers (one program over many hosts) do not ramp.
"""

from __future__ import annotations


def width(k: int, told: int) -> int:
    """Trials a pack trains once ``told`` trials are told, on the way to ``k``."""
    w = 1
    while w * 2 <= min(k, 1 + told):
        w *= 2
    return w


def widths(k: int) -> list[int]:
    """Every width the ramp to ``k`` passes through, ``k`` included."""
    out = [1]
    while out[-1] * 2 <= k:
        out.append(out[-1] * 2)
    return out if out[-1] == k else [*out, k]


def line(k: int) -> str:
    """The header's line for a ramp to ``k``."""
    steps = ", ".join(f"{w} once {w - 1} {'is' if w == 2 else 'are'} told" for w in widths(k)[1:])
    return f"ramp: packs train 1 trial at first, {steps} (K={k})"


def widened(width: int, told: int, moved: int = 0) -> str:
    """The console's line when the packs widen; ``moved``: running trials moved along."""
    trials = "1 trial" if told == 1 else f"{told} trials"
    along = ""
    if moved:
        along = (
            " (1 running trial moved with its state)"
            if moved == 1
            else (f" ({moved} running trials moved with their state)")
        )
    return f"ramp: {trials} told; packs now train {width} side by side{along}"
