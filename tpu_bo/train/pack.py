"""The pack: the K slots of one compiled program, each holding one trial; its caller owns the loop.

Contract (docs/DESIGN.md contracts 4 and 5, and "Pack object (trainer side)"):

* :meth:`tpu_bo.train.trainer.Trainer.pack` makes a :class:`Pack` over the cached program of one
  (structure, width). The caller loads trials into free slots, calls :meth:`Pack.run_epoch`,
  reads one :class:`EpochResult` per slot, stops (prunes) slots, and loads new trials into free
  slots at any epoch boundary. Loading assigns variables (fresh seeded weights, fresh optimizer
  state, runtime hyperparameters), so nothing ever retraces.
* Every slot keeps its own epoch counter, history, step count and clock, so the slots may stand
  at different epochs; every tower reads the same batches.
* An idle slot (never loaded, finished, stopped or failed) is frozen: learning rate 0, so its
  tower computes but no longer moves, and its weights stay readable (:meth:`Pack.weights`).
* A slot whose train loss becomes NaN/Inf is frozen at once and reported failed; the others
  train on undisturbed, since each tower's gradients depend only on its own loss. Out of memory
  fails every running slot, drops the program from the trainer's cache and breaks the pack.
* A newer pack of the same (structure, width) takes the program; the older one refuses to run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from tpu_bo.data.pipeline import Datasets
from tpu_bo.records import Checkpoint, Outcome, Status
from tpu_bo.search.space import SearchSpace
from tpu_bo.timing import Clock
from tpu_bo.train.program import Program, out_of_memory


@dataclasses.dataclass(frozen=True)
class EpochResult:
    """What one slot did in one :meth:`Pack.run_epoch`.

    Attributes:
      slot: The slot index.
      epoch: The slot's own epoch number just run (1-based).
      metrics: ``epoch``, ``loss``, ``val_loss``, ``val_<metric>``..., ``steps_per_second``;
        ``None`` when the trial failed during the epoch's training (or ran out of memory).
      error: One sentence when the slot failed this epoch, else ``None``.
      done: The slot reached ``epochs`` or failed: it is now idle (frozen).
    """

    slot: int
    epoch: int
    metrics: dict[str, float] | None
    error: str | None
    done: bool


@dataclasses.dataclass(frozen=True)
class PackContext:
    """What a pack needs besides its program (:meth:`tpu_bo.train.Trainer.pack` makes it).

    Attributes:
      space: The search space (a pack's trials share its structural values).
      fixed: The study's fixed hyperparameters (``--fixed``).
      epochs: Epochs per trial.
      steps_per_execution: Training steps per host call.
      datasets: The study's datasets.
      clock: Where the pack's time goes (trace, train, eval, reset).
      forget: Drops a program that ran out of memory from the trainer's cache.
    """

    space: SearchSpace
    fixed: Mapping[str, Any]
    epochs: int
    steps_per_execution: int
    datasets: Datasets
    clock: Clock
    forget: Callable[[Program], None]


class Progress(Protocol):
    """Receives :meth:`Pack.run_epoch`'s progress after every host call."""

    def on_progress(self, step: int, steps: int, loss: float, steps_per_second: float) -> None: ...


class _Slot:
    """The bookkeeping of one trial in a slot."""

    def __init__(self, state: Checkpoint | None, optimizer: str | None) -> None:
        self.status, self.error, self.end = "running", None, None
        self.optimizer = optimizer  # its tower's optimizer class, for the trial's record
        self.epoch = state.epoch if state else 0
        self.history: list[dict[str, float]] = list(state.history) if state else []
        self.steps = state.steps if state else 0
        self.start = time.perf_counter() - (state.seconds if state else 0.0)
        self.resumed_from_epoch = state.epoch if state else None
        self.train_seconds = self.eval_seconds = self.loss_sum = 0.0
        # Host copies of an ended trial's model and optimizer values, taken before its frozen
        # tower runs again (its dropout RNG state and step count would move on).
        self.kept: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        # What the epoch in flight produced (the EpochResult's metrics and error).
        self.metrics: dict[str, float] | None = None
        self.epoch_error: str | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def seconds(self) -> float:
        return (self.end or time.perf_counter()) - self.start

    def begin_epoch(self) -> None:
        self.loss_sum, self.metrics, self.epoch_error = 0.0, None, None

    def finish(self, status: str, error: str | None = None) -> None:
        self.status, self.error, self.end = status, error, time.perf_counter()
        if error is not None:
            self.epoch_error = error

    def result(self) -> Outcome:
        return Outcome(
            Status(self.status),
            list(self.history),
            self.error,
            self.steps,
            self.seconds,
            self.resumed_from_epoch,
            self.train_seconds,
            self.eval_seconds,
            self.optimizer,
        )


class Pack:
    """``width`` slots of one program; made by :meth:`tpu_bo.train.Trainer.pack`.

    Args:
      program: The compiled program, or ``None`` when it ran out of memory while being built
        (``out_of_memory`` then says so, and every loaded trial fails at the first epoch).
      context: What the pack needs from the study (:class:`PackContext`).
      key: The structural values of the program.
      width: Number of slots.

    Attributes:
      width: Number of slots (towers of the program).
      computed_tower_epochs: ``width`` for every :meth:`run_epoch` that ran the program.
      useful_tower_epochs: The slots running at the start of every such :meth:`run_epoch`.
    """

    def __init__(
        self,
        program: Program | None,
        context: PackContext,
        key: tuple[Any, ...],
        width: int,
        *,
        out_of_memory: str | None = None,
    ) -> None:
        self.width, self.computed_tower_epochs, self.useful_tower_epochs = width, 0, 0
        self._program, self._context, self._key = program, context, key
        self._slots: list[_Slot | None] = [None] * width
        # Out of memory seen but not yet reported by run_epoch (e.g. while building).
        self._out_of_memory, self._broken = out_of_memory, False
        if program is not None:
            program.owner = self
            for slot in range(width):
                program.freeze(slot)

    @property
    def program(self) -> Program | None:
        """The program the slots run on (``None``: it ran out of memory while being built)."""
        return self._program

    @property
    def active(self) -> list[int]:
        """Indices of the slots whose trial is running."""
        return [k for k, s in enumerate(self._slots) if s is not None and s.running]

    @property
    def free(self) -> list[int]:
        """Indices of the idle slots (never loaded, finished, stopped or failed)."""
        return [k for k, s in enumerate(self._slots) if s is None or not s.running]

    @property
    def finishing(self) -> list[int]:
        """Running slots whose next epoch is their last: they free at the next boundary."""
        last = self._context.epochs
        return [k for k in self.active if self._slots[k].epoch + 1 >= last]

    @property
    def broken(self) -> bool:
        """Whether the pack ran out of memory; it then takes no more trials."""
        return self._broken

    def load(
        self, slot: int, params: Mapping[str, Any], *, seed: int, state: Checkpoint | None = None
    ) -> None:
        """Starts a trial in an idle slot, from fresh weights or from ``state``.

        Args:
          slot: An idle slot's index.
          params: A value for every parameter of the search space; its structural values
            must be the pack's.
          seed: Seeds the fresh weights and dropout draws (unused with ``state``).
          state: Continue this checkpoint instead (its epoch counter, history, steps, clock).

        Raises:
          ValueError: the slot is running, the structure differs, or ``state`` does not fit.
          RuntimeError: the pack is broken, or a newer pack took its program.
        """
        self._check_usable()
        self._check_index(slot)
        context = self._context
        if slot in self.active:
            raise ValueError(f"slot {slot} is running a trial; stop it before loading another")
        if context.space.structure_key(params) != self._key:
            raise ValueError("the trials of a pack must share their structural values")
        if state is not None and state.epoch >= context.epochs:
            raise ValueError(f"the trial state has already run all {state.epoch} epochs")
        if self._out_of_memory is None and self._program is not None:
            program, values = self._program, {**context.fixed, **params}
            traces, start = program.traces.reset_traces, time.perf_counter()
            try:
                if state is None:
                    program.start(slot, values, seed)
                else:
                    program.restore(slot, values, state)
            except tf.errors.ResourceExhaustedError as e:
                self._fail_memory(e)
            traced = traces != program.traces.reset_traces
            context.clock.add("trace" if traced else "reset", time.perf_counter() - start)
        program = self._program
        self._slots[slot] = _Slot(state, program.towers[slot].optimizer_class if program else None)

    def adopt(self, slot: int, params: Mapping[str, Any], donor: Pack, donor_slot: int) -> None:
        """Moves a running trial from ``donor``'s ``donor_slot`` (a narrower pack of the same
        structure, which the caller then closes) into this pack's idle ``slot``: its weights and
        optimizer state (one restore, as a checkpoint's), and its epoch, history, steps and
        clocks as they are, so the trial goes on as if it had not moved (the ramp,
        :mod:`tpu_bo.session.ramp`). ``params``: the trial's values."""
        record = donor._record(donor_slot)
        if not record.running:
            raise ValueError(f"slot {donor_slot} of the donor pack is not running a trial")
        self.load(slot, params, seed=0, state=donor.state(donor_slot))
        self._slots[slot] = record
        donor._slots[donor_slot] = None  # it is this pack's now

    def stop(self, slot: int, status: str = "pruned") -> Outcome:
        """Stops a running trial, ``pruned`` or ``ok`` (stopped early, complete with the epochs
        it ran): its tower is frozen and the slot becomes idle."""
        record = self._record(slot)
        if not record.running:
            raise ValueError(f"slot {slot} is not running a trial")
        if self._program is not None and self._program.owner is self:
            self._program.freeze(slot)
        record.finish(status)
        return record.result()

    def exploit(self, donors: Mapping[int, int]) -> None:
        """PBT's exploit: ``{receiver: donor}`` running slots; in one device call, each receiver
        takes its donor's weights and optimizer state (:meth:`Program.copy`). The receiver
        keeps its own dropout RNG state, history, epoch and runtime values."""
        self._check_usable()
        active = set(self.active)
        if not donors.keys() <= active or not set(donors.values()) <= active - donors.keys():
            raise ValueError(f"exploit needs distinct running receivers and donors: {donors}")
        program = self._program
        if program is None or not donors:
            return
        traces, start = program.traces.copy_traces, time.perf_counter()
        try:
            program.copy(donors)
        except tf.errors.ResourceExhaustedError as e:
            self._fail_memory(e)
        category = "trace" if traces != program.traces.copy_traces else "reset"
        self._context.clock.add(category, time.perf_counter() - start)

    def set_runtime(self, slot: int, values: Mapping[str, Any]) -> None:
        """PBT's explore: assigns a running slot's runtime hyperparameters (``values`` holds a
        value for every parameter; structural ones are ignored). No retrace."""
        if slot not in self.active:
            raise ValueError(f"slot {slot} is not running a trial")
        if self._program is None:
            return
        tower = self._program.towers[slot]
        tower.assign_row(tower.runtime_row({**self._context.fixed, **values}))

    def result(self, slot: int) -> Outcome:
        """The slot's trial so far (``running``) or final (``ok``, ``failed``, ``pruned``)."""
        return self._record(slot).result()

    def weights(self, slot: int) -> list[np.ndarray]:
        """Host copies of the slot's model variables (as ``Trainer.save_weights`` takes).

        For an ended trial, its values when it ended (at the end of that epoch, if it failed).
        """
        return self._values(slot, optimizer=False)[0]

    def state(self, slot: int) -> Checkpoint:
        """The slot's trial at its last epoch boundary, to continue it in another process."""
        record, (model, optimizer) = self._record(slot), self._values(slot)
        return Checkpoint(
            record.epoch, list(record.history), model, optimizer, record.steps, record.seconds
        )

    def run_epoch(self, progress: Progress | None = None) -> list[EpochResult]:
        """Trains every running slot one epoch, then evaluates them.

        Runs ``steps_per_epoch`` steps (fewer only when every slot fails first). A slot whose
        train loss becomes NaN/Inf is frozen at once and reported failed; a slot that reaches
        ``epochs`` is frozen and done. With no running slot it does nothing.

        Args:
          progress: Gets ``on_progress(step, steps, loss, steps_per_second)`` after every host
            call; ``loss`` is the mean over the running slots.

        Returns:
          One :class:`EpochResult` per slot running at the start, in slot order.
        """
        self._check_usable()
        running = {k: self._slots[k] for k in self.active}
        if not running:
            return []
        numbers = {k: s.epoch + 1 for k, s in running.items()}
        for k, record in enumerate(self._slots):
            ended = record is not None and not record.running and record.kept is None
            if ended and self._out_of_memory is None:
                record.kept = self._values(k)
        for record in running.values():
            record.begin_epoch()
        if self._out_of_memory is None:
            self.computed_tower_epochs += self.width
            self.useful_tower_epochs += len(running)
            try:
                train_seconds = self._train(running, numbers, progress)
                if any(s.running for s in running.values()):
                    self._evaluate(running, train_seconds)
            except tf.errors.ResourceExhaustedError as e:
                self._fail_memory(e)
        if self._out_of_memory is not None:
            for record in [r for r in running.values() if r.running]:
                record.finish("failed", self._out_of_memory)
            self._broken = True
        return [
            EpochResult(k, numbers[k], s.metrics, s.epoch_error, not s.running)
            for k, s in running.items()
        ]

    def _train(
        self, running: dict[int, Any], numbers: dict[int, int], progress: Progress | None
    ) -> float:
        context, program = self._context, self._program
        datasets, per_call = context.datasets, context.steps_per_execution
        steps, done, start = datasets.steps_per_epoch, 0, time.perf_counter()
        live = dict(running)
        while done < steps and live:
            n = min(per_call, steps - done)
            call_start, traces = time.perf_counter(), program.traces.traces
            losses = program.train(datasets.train_iterator, n)
            elapsed = time.perf_counter() - call_start
            context.clock.add("trace" if traces != program.traces.traces else "train", elapsed)
            done += n
            for k, record in list(live.items()):
                record.steps += n
                record.train_seconds += elapsed
                if math.isfinite(losses[k]):
                    record.loss_sum += float(losses[k])
                    continue
                program.freeze(k)
                record.finish(
                    "failed", f"loss became {losses[k]} in epoch {numbers[k]}, step {done}"
                )
                del live[k]
            if progress is not None and live:
                mean = sum(r.loss_sum for r in live.values()) / len(live) / done
                rate = done / max(time.perf_counter() - start, 1e-9)
                progress.on_progress(done, steps, mean, rate)
        return time.perf_counter() - start

    def _evaluate(self, running: dict[int, Any], train_seconds: float) -> None:
        context, program, start = self._context, self._program, time.perf_counter()
        traces = program.traces.traces
        scores, steps = program.evaluate(context.datasets.eval), context.datasets.steps_per_epoch
        elapsed = time.perf_counter() - start
        context.clock.add("trace" if traces != program.traces.traces else "eval", elapsed)
        for k, record in running.items():
            if not record.running:
                continue
            record.eval_seconds += elapsed
            record.epoch += 1
            measured = {k: v for k, v in scores[k].items() if k not in ("loss", "examples")}
            record.metrics = {
                "epoch": record.epoch,
                "loss": record.loss_sum / steps,
                "val_loss": scores[k]["loss"],
                **{f"val_{name}": value for name, value in measured.items()},
                "steps_per_second": steps / max(train_seconds, 1e-9),
            }
            record.history.append(record.metrics)
            if not math.isfinite(scores[k]["loss"]):
                error = f"validation loss became {scores[k]['loss']} in epoch {record.epoch}"
                record.finish("failed", error)
            elif record.epoch >= context.epochs:
                record.finish("ok")
            else:
                continue
            program.freeze(k)

    def _fail_memory(self, error: tf.errors.ResourceExhaustedError) -> None:
        # The program may hold fragmented memory; a later pack of this structure rebuilds it.
        self._out_of_memory = out_of_memory(error, self.width)
        if self._program is not None:
            self._context.forget(self._program)

    def _check_usable(self) -> None:
        if self._broken:
            raise RuntimeError("this pack ran out of memory; make a new one")
        if self._program is not None and self._program.owner is not self:
            raise RuntimeError("a newer pack of the same structure and width took this program")

    def _check_index(self, slot: int) -> None:
        if not 0 <= slot < self.width:
            raise ValueError(f"slot {slot} is not in a pack of {self.width}")

    def _record(self, slot: int) -> _Slot:
        self._check_index(slot)
        record = self._slots[slot]
        if record is None:
            raise ValueError(f"slot {slot} has held no trial")
        return record

    def _values(self, slot: int, optimizer: bool = True) -> tuple[list[Any], list[Any]]:
        """The slot's model and (if asked) optimizer values, from the tower or as kept."""
        self._check_index(slot)
        record = self._slots[slot]
        if record is not None and record.kept is not None:
            return [np.copy(v) for v in record.kept[0]], [np.copy(v) for v in record.kept[1]]
        if self._program is None or self._program.owner is not self:
            raise RuntimeError("this pack has no program (out of memory, or taken by a newer pack)")
        tower = self._program.towers[slot]
        return tower.model_values(), tower.optimizer_values() if optimizer else []
