"""After the study: the best configuration retrained, scored once on the test split, exported.

``--final_epochs=N`` (``run_study(final_epochs=N)``) ends a study with one more run of its best
trial's configuration (:func:`train_final`, called by the study loop after ``summary.json``):

1. Retrain it from its own seed (fresh weights, the trial's hyperparameters, a fresh optimizer)
   for N epochs, in the program of its structure with one tower (no retrace when the study ran
   one trial per program). It trains on the train split and is validated on the eval split
   after every epoch, or with ``--final_on_train_and_val`` trains on both and is not validated.
2. Score the test split once, if there is one.
3. Export ``<output_dir>/final/model.keras`` (``keras.models.load_model`` or
   :func:`tpu_bo.results.load_final_model` reads it) and ``final/saved_model/``
   (``tf.saved_model.load(path).serve(x)``), from a fresh host model built with the trial's
   hyperparameters as plain numbers and holding the trained weights; then ``final/final.json``
   (trial, params, seed, epochs, trained_on, status, history, test metrics, paths). Keras
   writes local files only, so both are written to a temporary directory and copied through
   ``tf.io.gfile`` (``gs://`` works).

A rerun that finds ``final.json`` of the same trial, epochs and data, with its model, trains
nothing and returns it. A NaN/Inf loss (or out of memory, or a model Keras cannot export)
fails the final run in one sentence, recorded in ``final.json``; a rerun tries again. In a
lockstep study every worker trains (the steps are collective) and only the writer writes.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tpu_bo.config import Config
from tpu_bo.data.pipeline import Datasets, EvalData
from tpu_bo.errors import first_line
from tpu_bo.records import TrialRecord
from tpu_bo.report.console import Reporter
from tpu_bo.study.output_dir import (
    FINAL_DIR,
    FINAL_JSON,
    FINAL_MODEL,
    FINAL_SAVED_MODEL,
    OutputDir,
    copy_tree,
)
from tpu_bo.train.program import Program, out_of_memory
from tpu_bo.train.trainer import Trainer

__all__ = ["train_final"]


class FinalError(Exception):
    """The final run failed; the message is one sentence."""


def train_final(
    config: Config,
    trainer: Trainer,
    datasets: Datasets,
    record: TrialRecord,
    files: OutputDir,
    reporter: Reporter,
) -> dict[str, Any]:
    """Retrains ``record``'s configuration for ``config.final_epochs``, scores it, exports it.

    Args:
      config: The study's configuration (``final_epochs``, ``final_on_train_and_val``,
        ``steps_per_execution``, ``mixed_precision``, ``fixed``).
      trainer: The study's :class:`tpu_bo.train.trainer.Trainer`; no pack of it may run any more.
      datasets: The study's :class:`tpu_bo.data.pipeline.Datasets`.
      record: The best trial's :class:`tpu_bo.study.study.TrialRecord` (``params``, ``seed``).
      files: The study's output directory; only a writer writes.
      reporter: Gets one ``line(text)`` per epoch and per result.

    Returns:
      What ``final/final.json`` holds: ``trial``, ``params``, ``seed``, ``epochs``,
      ``trained_on`` (``train`` or ``train+eval``), ``status`` (``ok`` or ``failed``),
      ``error``, ``history`` (one dict per epoch), ``test`` (metrics, or ``None``),
      ``paths`` (``keras`` and ``saved_model``, when written) and ``seconds``.
    """
    epochs = config.final_epochs
    trained_on = "train+eval" if config.final_on_train_and_val else "train"
    previous = _previous(files, record.number, epochs, trained_on)
    if previous is not None:
        reporter.line(
            f"final: trial {record.number} was already retrained for {epochs} epoch(s) on "
            f"{trained_on}; not retraining ({_exported(previous['paths'])})."
        )
        return previous
    result: dict[str, Any] = {
        "trial": record.number,
        "params": dict(record.params),
        "seed": config.seed if record.seed is None else record.seed,
        "epochs": epochs,
        "trained_on": trained_on,
        "status": "ok",
        "error": None,
        "history": [],
        "test": None,
        "paths": {},
        "seconds": None,
    }
    reporter.line(
        f"final: retraining trial {record.number} from its seed for {epochs} epoch(s) on "
        f"{trained_on}"
    )
    start = time.perf_counter()
    try:
        _run(config, trainer, datasets, result, files, reporter)
    except FinalError as e:
        result.update(status="failed", error=str(e))
        reporter.line(f"final: {e}")
    result["seconds"] = round(time.perf_counter() - start, 3)
    files.write_json(FINAL_JSON, result)
    return result


def _previous(files: OutputDir, number: int, epochs: int, trained_on: str) -> dict[str, Any] | None:
    """``final.json`` of an earlier session that trained the same thing and exported it."""
    previous = files.read_json(FINAL_JSON)
    if not previous or previous.get("status") != "ok":
        return None
    key = (previous.get("trial"), previous.get("epochs"), previous.get("trained_on"))
    if key != (number, epochs, trained_on) or not files.exists(FINAL_MODEL):
        return None
    # Where the files are now, should the directory have moved since.
    return {**previous, "paths": _paths(files)}


def _run(
    config: Config,
    trainer: Trainer,
    datasets: Datasets,
    result: dict[str, Any],
    files: OutputDir,
    reporter: Reporter,
) -> None:
    """Trains, scores and exports into ``result``; raises :class:`FinalError` on failure."""
    params, tower = result["params"], None
    datasets = datasets.for_batch(params.get("batch_size"))  # the best trial's batch size
    try:
        program = trainer.program(params, 1)
        program.owner = None  # the study's packs are done: none may drive this program again
        tower = program.towers[0]
        # Fresh seeded weights, the fresh optimizer state, the runtime values.
        program.start(0, {**config.fixed, **params}, result["seed"])
        _train(config, program, datasets, result["history"], reporter)
        if datasets.test is not None:
            result["test"] = _score_test(program, datasets.test, reporter)
        values = tower.model_values()
    except tf.errors.ResourceExhaustedError as e:
        raise FinalError(f"the final training failed: {out_of_memory(e, 1)}") from None
    finally:
        if tower is not None:
            tower.freeze()
    if files.writer:
        result["paths"] = _export(config, trainer, params, values, files)
        reporter.line(f"final: {_exported(result['paths'])}")


def _train(
    config: Config,
    program: Program,
    datasets: Datasets,
    history: list[dict[str, float]],
    reporter: Reporter,
) -> None:
    """``config.final_epochs`` epochs, each validated on the eval split unless it is trained on."""
    validate = not config.final_on_train_and_val
    if validate:
        iterator, steps = datasets.train_iterator, datasets.steps_per_epoch
    else:
        iterator, steps = datasets.train_and_eval()
    epochs = config.final_epochs
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = _train_epoch(program, iterator, steps, config.steps_per_execution, epoch)
        rate = steps / max(time.perf_counter() - start, 1e-9)
        metrics = {"epoch": epoch, "loss": loss}
        if validate:
            scores = program.evaluate(datasets.eval)[0]
            metrics.update({f"val_{k}": float(v) for k, v in scores.items() if k != "examples"})
            if not math.isfinite(metrics["val_loss"]):
                raise FinalError(
                    f"the final training failed: validation loss became {metrics['val_loss']} "
                    f"in epoch {epoch}."
                )
        history.append({**metrics, "steps_per_second": rate})
        reporter.line(f"final: epoch {epoch}/{epochs} {_describe(metrics)}")


def _train_epoch(program: Program, iterator: Any, steps: int, per_call: int, epoch: int) -> float:
    """One epoch of ``steps`` steps, ``per_call`` per host call; its mean loss."""
    done, total = 0, 0.0
    while done < steps:
        n = min(per_call, steps - done)
        loss = float(program.train(iterator, n)[0])
        done += n
        if not math.isfinite(loss):
            raise FinalError(
                f"the final training failed: loss became {loss} in epoch {epoch}, step {done}."
            )
        total += loss
    return total / steps


def _score_test(program: Program, data: EvalData, reporter: Reporter) -> dict[str, Any]:
    """The test split scored once: ``split``, ``examples`` and the model's metrics."""
    scores = program.evaluate(data)[0]
    metrics = {k: float(v) for k, v in scores.items() if k != "examples"}
    reporter.line(f"final: test ({data.split}, {data.num_examples} examples): {_describe(metrics)}")
    return {"split": data.split, "examples": data.num_examples, **metrics}


def _paths(files: OutputDir) -> dict[str, str]:
    return {"keras": files.path(FINAL_MODEL), "saved_model": files.path(FINAL_SAVED_MODEL)}


def _exported(paths: Mapping[str, str]) -> str:
    return f"exported {paths.get('keras')} and {paths.get('saved_model')}"


def _describe(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")


def _export(
    config: Config,
    trainer: Trainer,
    params: Mapping[str, Any],
    values: list[Any],
    files: OutputDir,
) -> dict[str, str]:
    """Writes ``final/model.keras`` and ``final/saved_model/``; returns their paths."""
    # A fresh model outside every program, runtime values as plain numbers.
    model = trainer.host_model({**config.fixed, **params})
    for variable, value in zip(model.variables, values, strict=True):
        variable.assign(value)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        # A compiled model saves its optimizer: built, load_model finds the variables it expects.
        optimizer.build(model.trainable_variables)
    # A kill from here on must not leave an older final.json describing these files.
    files.remove(FINAL_JSON)
    paths = _paths(files)
    with tempfile.TemporaryDirectory() as tmp:
        local_model = os.path.join(tmp, "model.keras")
        local_saved = os.path.join(tmp, "saved_model")
        try:
            model.save(local_model)
            model.export(local_saved, format="tf_saved_model", verbose=False)
        except Exception as e:  # Keras raises many types for a model it cannot serialize
            raise FinalError(f"exporting the final model failed: {first_line(e)}.") from None
        tf.io.gfile.makedirs(files.path(FINAL_DIR))
        tf.io.gfile.copy(local_model, paths["keras"], overwrite=True)
        copy_tree(local_saved, paths["saved_model"])
    return paths
