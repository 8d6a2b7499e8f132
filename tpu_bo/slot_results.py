"""What a pack's slot hands back: a trial's result, its state at an epoch boundary, an epoch.

:mod:`tpu_bo.pack` produces them (and re-exports them); :mod:`tpu_bo.engine` saves and restores
:class:`TrialState` and tells :class:`TrialResult`. This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tpu_bo.records import best_epoch


@dataclasses.dataclass
class TrialResult:
    """What one trial produced.

    Attributes:
      status: ``ok`` (reached ``config.epochs``), ``failed`` (NaN/Inf loss, out of memory),
        ``pruned`` (stopped by the caller) or ``running``.
      history: One dict per finished epoch: ``epoch``, ``loss``, ``val_loss``,
        ``val_<metric>`` for each of the model's metrics (``val_accuracy`` by default) and
        ``steps_per_second``.
      error: For a failed trial, one sentence saying why.
      steps: Training steps run (including those before a resume).
      seconds: Wall time of the trial, including any trace and compile, and the time spent
        before a resume.
      train_seconds: Time inside train-program calls (this session).
      eval_seconds: Time inside eval-program calls (this session).
      resumed_from_epoch: The epoch a resumed trial continued after, else ``None``.
    """

    status: str
    history: list[dict[str, float]]
    error: str | None = None
    steps: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    resumed_from_epoch: int | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics of the epoch with the best validation accuracy (else validation loss)."""
        if not self.history:
            return {}
        accuracy = "val_accuracy" in self.history[0]
        metric = "val_accuracy" if accuracy else "val_loss"
        best = self.history[best_epoch(self.history, metric, maximize=accuracy) - 1]
        return {**best, "best_epoch": best["epoch"]}


@dataclasses.dataclass
class TrialState:
    """A trial caught at the end of an epoch, enough to continue it in another process.

    Attributes:
      epoch: Epochs finished.
      history: Their metrics.
      model: Values of ``model.variables`` (weights and dropout RNG state).
      optimizer: Values of ``optimizer.variables`` (step count and slots).
      steps: Training steps run so far.
      seconds: Wall time spent so far.
    """

    epoch: int
    history: list[dict[str, float]]
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    steps: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class EpochResult:
    """What one slot did in one :meth:`Pack.run_epoch`.

    Attributes:
      slot: The slot index.
      epoch: The slot's own epoch number just run (1-based).
      metrics: ``epoch``, ``loss``, ``val_loss``, ``val_<metric>``..., ``steps_per_second``;
        ``None`` when the trial failed during the epoch's training (or ran out of memory).
      error: One sentence when the slot failed this epoch, else ``None``.
      done: The slot reached ``config.epochs`` or failed: it is now idle (frozen).
    """

    slot: int
    epoch: int
    metrics: dict[str, float] | None
    error: str | None
    done: bool
