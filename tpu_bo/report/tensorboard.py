"""TensorBoard logs of a study: per-epoch scalars per trial and the HParams dashboard.

Layout under ``<output_dir>/tensorboard/``: the study root holds the HParams *config* (every
searched hyperparameter with its domain, and the metrics); ``trial_0001/``... each hold that
trial's hyperparameter values and its ``loss``, ``val_loss`` and ``val_<metric>`` per epoch.
``tensorboard --logdir <output_dir>`` then compares trials in its HParams tab. A PBT study
adds ``pbt_best/``: the best member's hyperparameters over epochs (:meth:`TensorBoardLog.schedule`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from tpu_bo.records import Summary, Trial, TrialRecord
from tpu_bo.report.observers import Observer
from tpu_bo.search.space import Param, SearchSpace
from tpu_bo.study.output_dir import TENSORBOARD

METRICS = ("val_accuracy", "val_loss", "loss")


FLUSH_MILLIS = 5_000  # a live TensorBoard lags at most this much


class TensorBoardLog:
    """Writes a study's TensorBoard events (only in the process that writes the study).

    Args:
      output_dir: The study's directory; events go to ``<output_dir>/tensorboard``...
      space: The search space, for the HParams domains.
      writer: Whether this process writes (the chief, in a lockstep study).
      metrics: The metrics a trial reports (the HParams dashboard's columns).
      logdir: ... or here (``--tensorboard_dir``).
    """

    def __init__(
        self,
        output_dir: str,
        space: SearchSpace,
        *,
        writer: bool = True,
        metrics: Sequence[str] = METRICS,
        logdir: str = "",
    ) -> None:
        self.logdir = logdir or os.path.join(output_dir, TENSORBOARD)
        self.writer = writer
        self._params = {p.name: _hparam(p) for p in space.params}
        self._writers: dict[int, Any] = {}
        self.metrics = tuple(metrics)
        if writer:
            with tf.summary.create_file_writer(self.logdir).as_default():
                hp.hparams_config(
                    hparams=list(self._params.values()),
                    metrics=[hp.Metric(m, display_name=m) for m in self.metrics],
                )

    def start_trial(self, trial: int, params: Mapping[str, Any]) -> None:
        """Opens the trial's run and records its hyperparameters (several may be open)."""
        if not self.writer:
            return
        self.close(trial)
        path = os.path.join(self.logdir, f"trial_{trial:04d}")
        writer = tf.summary.create_file_writer(path, flush_millis=FLUSH_MILLIS)
        self._writers[trial] = writer
        with writer.as_default():
            hp.hparams(
                {self._params[n]: _plain(v) for n, v in params.items() if n in self._params},
                trial_id=f"trial_{trial:04d}",
            )

    def epoch(self, trial: int, metrics: Mapping[str, float]) -> None:
        """Records one finished epoch's metrics of a running trial."""
        writer = self._writers.get(trial)
        if writer is None:
            return
        with writer.as_default():
            for name in self.metrics:
                if name in metrics:
                    tf.summary.scalar(name, metrics[name], step=int(metrics["epoch"]))
        # Leaving as_default() flushes the writer (TF's _SummaryContextManager.__exit__), so an
        # epoch is on disk when this returns, whatever ends the process next (the CLI ends an
        # interrupted study with os._exit). FLUSH_MILLIS bounds only writes made elsewhere.

    def schedule(self, best: Mapping[str, Any]) -> None:
        """Records a PBT study's best member (``summary.json``'s ``pbt.best``) under
        ``pbt_best/``: each runtime hyperparameter and the member whose values trained each
        epoch (``pbt/<name>``, ``pbt/trial``), and its ancestry as text."""
        if not self.writer:
            return
        with tf.summary.create_file_writer(os.path.join(self.logdir, "pbt_best")).as_default():
            for row in best["schedule"]:
                for name, value in row.items():
                    if name != "epoch" and isinstance(value, (int, float)):
                        tf.summary.scalar(f"pbt/{name}", value, step=row["epoch"])
            lines = [
                f"epochs {s['epochs'][0]}-{s['epochs'][1]}: trial {s['trial']}, {s['values']}"
                for s in best["ancestry"]
            ]
            tf.summary.text("pbt/ancestry", "\n\n".join(lines), step=best["best_epoch"])

    def close(self, trial: int | None = None) -> None:
        """Closes one trial's run, or every open one."""
        for t in [trial] if trial is not None else list(self._writers):
            writer = self._writers.pop(t, None)
            if writer is not None:
                writer.close()


class TensorBoard(Observer):
    """Per-epoch scalars and the HParams dashboard under ``<output_dir>/tensorboard`` (or
    ``logdir``, ``--tensorboard_dir``)."""

    def __init__(
        self,
        output_dir: str,
        space: SearchSpace,
        metrics: Sequence[str] | None = None,
        *,
        logdir: str = "",
    ) -> None:
        self.log = TensorBoardLog(output_dir, space, metrics=metrics or METRICS, logdir=logdir)

    def on_trial_start(self, trial: Trial) -> None:
        self.log.start_trial(trial.number, trial.params)
        for metrics in trial.resume.history if trial.resume is not None else []:
            self.log.epoch(trial.number, metrics)

    def on_epoch(self, trial: Trial, metrics: Mapping[str, float]) -> None:
        self.log.epoch(trial.number, metrics)

    def on_trial_end(self, record: TrialRecord, *, new_best: bool) -> None:
        self.log.close(record.number)

    def on_study_end(self, summary: Summary) -> None:
        self.log.close()
        best = (summary.pbt or {}).get("best")
        if best:
            self.log.schedule(best)


def _hparam(param: Param) -> Any:
    if param.kind == "choice":
        return hp.HParam(param.name, hp.Discrete([_plain(c) for c in param.choices]))
    if param.kind == "int":
        return hp.HParam(param.name, hp.IntInterval(int(param.low), int(param.high)))
    return hp.HParam(param.name, hp.RealInterval(float(param.low), float(param.high)))


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
