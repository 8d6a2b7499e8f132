"""The checks of ``python -m tpu_bo.smoke`` that run on the accelerator (they import TensorFlow).

Kept apart from :mod:`tpu_bo.smoke.checks`, which must not import TensorFlow before its child CLI
study has ended and released the accelerator.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf

from tpu_bo.config import Config
from tpu_bo.data.pipeline import load_datasets
from tpu_bo.data.sources import digits_source, synthetic_source
from tpu_bo.device.accelerator import accelerator_kind, describe, get_strategy
from tpu_bo.records import Outcome
from tpu_bo.smoke.report import Report
from tpu_bo.smoke.study import StudyChecks
from tpu_bo.train import models
from tpu_bo.train.models import load_model_weights
from tpu_bo.train.program import precision
from tpu_bo.train.trainer import Trainer
from tpu_bo.train.width import measure

POINTS = ({"dropout_2": 0.1, "learning_rate": 1e-3}, {"dropout_2": 0.4, "learning_rate": 3e-3})
SEEDS = (11, 12)
# Every trial sees the same ten batches in the same order (one whole pass, shuffle buffer 1),
# so two runs of one trial must agree wherever they run.
CHECK_DATA = {
    "dataset": "digits",
    "train_split": "train[:1280]",
    "eval_split": "train[1280:]",
    "test_split": "",
    "batch_size": 128,
    "shuffle_buffer": 1,
    "epochs": 1,
    "steps_per_execution": 10,
}


def run(report: Report, args: argparse.Namespace, workdir: str) -> None:
    """Adds the device checks to ``report``; stops after ``devices`` if no strategy is built."""
    tf.get_logger().setLevel("ERROR")  # retracing notes of the many small programs built here
    found: dict[str, Any] = {}

    def devices() -> tuple[bool, str]:
        strategy = get_strategy(args.accelerator, tpu=args.tpu)
        found["strategy"] = strategy
        physical = ", ".join(
            f"{kind} x{len(tf.config.list_physical_devices(kind))}"
            for kind in ("TPU", "GPU", "CPU")
            if tf.config.list_physical_devices(kind)
        )
        eager = tf.constant(0.0).device
        return True, f"{describe(strategy)}; physical: {physical}; eager ops on {eager}"

    report.add("devices", devices)
    strategy = found.get("strategy")
    if strategy is None:
        return
    kind = accelerator_kind(strategy)
    mixed = args.mixed_precision == "on" or (args.mixed_precision == "auto" and kind == "tpu")
    if "throughput" not in args.skip:
        report.add("throughput", lambda: throughput(strategy, kind, mixed))
    if kind != "tpu":
        # CPU and GPU kernels may reduce in any order; the equality checks need one order.
        tf.config.experimental.enable_op_determinism()
    runs = Runs(strategy, mixed=mixed, loose=mixed or kind == "tpu", workdir=workdir)
    report.add("pack = solo", runs.pack_equals_solo)
    report.add("no retrace", runs.no_retrace)
    report.add("reset", runs.reset)
    report.add("best weights", runs.best_weights)
    report.add("pbt exploit", runs.pbt_exploit)
    study = StudyChecks(runs)
    report.add("compiled head", study.compiled_head)
    report.add("checkpoint resume", study.checkpoint_resume)
    report.add("two structures", study.two_structures)
    report.add("final model", study.final_model)
    report.add("host fallback", study.host_fallback)
    report.add("round trips", study.round_trips)
    report.add("bfloat16", runs.bfloat16)


def throughput(strategy: tf.distribute.Strategy, kind: str, mixed: bool) -> tuple[None, str]:
    """``--parallel_trials=auto``'s table for the blog CNN (:func:`tpu_bo.train.width.measure`:
    K = 1, 2, 4, 8 until a doubling gains under 10%), and the K it would take."""
    steps = 32 if kind == "cpu" else 256
    config = Config(
        dataset="synthetic",
        train_split="train",
        eval_split="eval",
        test_split="",
        epochs=1,
        steps_per_execution=steps,
        mixed_precision=mixed,
        parallel_trials=1,
    ).validate()
    batch = config.batch_size
    source = synthetic_source(train=steps * batch, eval=batch)
    trainer = Trainer(config, strategy, load_datasets(config, strategy, source=source))
    measured = measure(trainer, POINTS[0], key="smoke", limit=8, steps=steps)
    table = ", ".join(f"K={k} {'out of memory' if r is None else f'{r:.1f}'}"
                      for k, r in measured.table.items())  # fmt: skip
    rates, one = [r for r in measured.table.values() if r is not None], measured.table[1]
    gain = f"{max(rates) / one:.2f}x" if one else "-"
    return None, (
        f"mnist_cnn, batch {batch}, {steps} steps: trial-steps/s {table}; best / K=1 = "
        f"{gain}; --parallel_trials=auto takes K={measured.chosen}"
    )


class Runs:
    """The trials the equality checks compare, trained once on first use."""

    def __init__(
        self, strategy: tf.distribute.Strategy, *, mixed: bool, loose: bool, workdir: str
    ) -> None:
        self.strategy = strategy
        self.mixed = mixed
        self.config = self.config_with()
        self.points, self.seeds = POINTS, SEEDS
        self.loose = loose
        self.workdir = workdir
        self.trained: dict[str, Any] | None = None

    def _train(self) -> dict[str, Any]:
        if self.trained is None:
            datasets = load_datasets(self.config, self.strategy)
            trainer = Trainer(self.config, self.strategy, datasets)
            packed = run_keeping_weights(trainer, list(POINTS), list(SEEDS), width=2)
            traces_pack = trainer.traces
            solo = [run_keeping_weights(trainer, [POINTS[0]], [SEEDS[0]], width=1)[0]]
            traces_before = trainer.traces
            solo.append(run_keeping_weights(trainer, [POINTS[1]], [SEEDS[1]], width=1)[0])
            self.trained = {
                "datasets": datasets,
                "trainer": trainer,
                "packed": packed,
                "solo": solo,
                "traces": (traces_pack, traces_before, trainer.traces),
            }
        return self.trained

    def config_with(self, **fields: Any) -> Config:
        """The checks' config (:data:`CHECK_DATA`, a pack of 2) with ``fields`` changed."""
        given = {**CHECK_DATA, "mixed_precision": self.mixed, "parallel_trials": 2, **fields}
        return Config(**given).validate()

    def trainer(self) -> Trainer:
        """The trainer of the trials compared (its programs of widths 2 and 1 are traced)."""
        return self._train()["trainer"]

    def datasets(self) -> Any:
        return self._train()["datasets"]

    def solo(self, k: int) -> Outcome:
        """Trial ``k`` (of :data:`POINTS`) trained alone."""
        return self._train()["solo"][k][0]

    def eval_digits(self) -> tuple[np.ndarray, np.ndarray]:
        """The eval split's images (scaled as the pipeline scales them) and labels."""
        return _digits(self.config.eval_split)

    def close(self, a: list[np.ndarray], b: list[np.ndarray]) -> bool:
        rtol, atol = (5e-2, 1e-2) if self.loose else (1e-4, 1e-5)
        return len(a) == len(b) and all(
            x.shape == y.shape and np.allclose(x, y, rtol=rtol, atol=atol)
            for x, y in zip(a, b, strict=True)
        )

    def same_score(self, a: float, b: float) -> bool:
        return abs(a - b) <= (0.02 if self.loose else 1e-6)

    def pack_equals_solo(self) -> tuple[bool, str]:
        t = self._train()
        details, ok = [], True
        for k, ((p_res, p_w), (s_res, s_w)) in enumerate(zip(t["packed"], t["solo"], strict=True)):
            gap = max(float(np.max(np.abs(a - b))) for a, b in zip(p_w, s_w, strict=True))
            acc_p, acc_s = p_res.history[-1]["val_accuracy"], s_res.history[-1]["val_accuracy"]
            same = p_res.status == s_res.status == "ok" and self.close(p_w, s_w)
            ok = ok and same and self.same_score(acc_p, acc_s)
            details.append(f"trial {k + 1}: val_accuracy {acc_p:.4f} vs {acc_s:.4f}, {gap:.1e}")
        tolerance = "bfloat16 tolerance" if self.loose else "float32 tolerance"
        return ok, f"pack of 2 vs alone ({tolerance}; max weight gap): " + "; ".join(details)

    def no_retrace(self) -> tuple[bool, str]:
        pack, before, after = self._train()["traces"]
        ok = pack == 2 and before == 4 and after == before
        return ok, (
            f"traces: {pack} after the pack (train + eval), {before} after a width-1 program, "
            f"{after} after a second trial on it"
        )

    def reset(self) -> tuple[bool, str]:
        t = self._train()
        fresh_trainer = Trainer(self.config, self.strategy, t["datasets"])
        fresh, _ = run_keeping_weights(fresh_trainer, [POINTS[1]], [SEEDS[1]], width=1)[0]
        reused = t["solo"][1][0]
        a, b = _history(reused), _history(fresh)
        ok = self.close([a], [b])
        trainer = t["trainer"]
        on_device = all(p.reset_fn is not None for p in trainer._programs.values())
        where = "on the device" if on_device else "on the HOST (the device reset did not trace)"
        return ok, (
            f"after another trial: loss {a[0, 0]:.5f}, val_accuracy {a[0, 2]:.4f}; on a fresh "
            f"program: loss {b[0, 0]:.5f}, val_accuracy {b[0, 2]:.4f}; weights redrawn {where}, "
            f"{trainer.reset_traces} reset trace(s) for {trainer.num_programs} program(s)"
        )

    def best_weights(self) -> tuple[bool, str]:
        t = self._train()
        trainer, datasets = t["trainer"], t["datasets"]
        result, weights = t["solo"][1]
        path = os.path.join(self.workdir, "best", "model.weights.h5")
        trainer.save_weights(POINTS[1], weights, path)
        program = trainer.evaluate_saved(POINTS[1], path, datasets.eval)["accuracy"]
        with precision(self.config.mixed_precision):
            model = models.build_model(
                models.get_builder(self.config.model),
                POINTS[1],
                datasets.input_shape,
                datasets.num_classes,
            )
        load_model_weights(model, path)
        images, labels = _digits(self.config.eval_split)
        logits = model.predict(images, batch_size=256, verbose=0)
        host = float(np.mean(np.argmax(logits, axis=-1) == labels))
        trained = result.history[-1]["val_accuracy"]
        ok = self.same_score(program, trained) and self.same_score(host, trained)
        return ok, (
            f"trained {trained:.4f}; saved and reloaded: {program:.4f} in the program, "
            f"{host:.4f} in a fresh Keras model"
        )

    def pbt_exploit(self) -> tuple[bool, str]:
        """PBT's exploit on this device: after one epoch, tower 0 takes tower 1's weights and
        optimizer state (all but its dropout RNG state), bit for bit, in one traced program."""
        from tpu_bo.train.reset import copied_variables

        config = dataclasses.replace(self.config, epochs=3)
        trainer = Trainer(config, self.strategy, self._train()["datasets"])
        pack = trainer.pack(POINTS[0], 2)
        for k in range(2):
            pack.load(k, POINTS[k], seed=SEEDS[k])
        pack.run_epoch()
        towers = pack._program.towers

        def moved(k: int) -> list[np.ndarray]:
            return [_replicas(v) for v in copied_variables(towers[k])]

        before = sum(not np.array_equal(a, b) for a, b in zip(moved(0), moved(1), strict=True))
        pack.exploit({0: 1})
        after = sum(not np.array_equal(a, b) for a, b in zip(moved(0), moved(1), strict=True))
        pack.run_epoch()
        pack.exploit({1: 0})
        live = [r.status for r in map(pack.result, range(2))] == ["running", "running"]
        ok = before > 0 and after == 0 and trainer.copy_traces == 1 and live
        return ok, (
            f"{before} of {len(moved(0))} variables differed before the copy, {after} after it "
            f"(every replica); {trainer.copy_traces} copy trace(s) for 2 exploits"
        )

    def bfloat16(self) -> tuple[bool | None, str]:
        if not self.config.mixed_precision:
            return None, "mixed precision off (--mixed_precision=on checks it here)"
        model = self._train()["trainer"].model(POINTS[0])
        layers = [layer for layer in model.layers if layer.trainable_weights]
        half = [layer.name for layer in layers if layer.compute_dtype == "bfloat16"]
        full = [layer.name for layer in layers if layer.compute_dtype != "bfloat16"]
        stores = sorted({v.dtype for v in model.trainable_variables})
        ok = len(half) >= len(full) and stores == ["float32"]
        return ok, (
            f"{len(half)} of {len(layers)} layers compute in bfloat16"
            + (f" (not: {', '.join(full)})" if full else "")
            + f"; variables in {', '.join(stores)}"
        )


def run_keeping_weights(
    trainer: Trainer,
    points: list[dict[str, Any]],
    seeds: list[int],
    *,
    width: int | None = None,
) -> list[tuple[Outcome, list[np.ndarray]]]:
    """Runs ``points`` in slots 0, 1... of one pack to the end; returns results and weights.

    A finished slot is frozen, so its weights at the end are those it finished with.
    """
    pack = trainer.pack(points[0], width)
    for k, (point, seed) in enumerate(zip(points, seeds, strict=True)):
        pack.load(k, point, seed=seed)
    while pack.active:
        pack.run_epoch()
    return [(pack.result(k), pack.weights(k)) for k in range(len(points))]


def _replicas(variable: Any) -> np.ndarray:
    """Every replica's copy of a Keras variable, stacked (one under the default strategy)."""
    value = variable.value
    return np.stack([np.array(v.numpy()) for v in getattr(value, "values", [value])])


def _history(result: Outcome) -> np.ndarray:
    return np.array([[h["loss"], h["val_loss"], h["val_accuracy"]] for h in result.history])


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    dataset, n = digits_source().load(split, "eval_split")
    images, labels = next(iter(dataset.batch(n)))
    return images.numpy().astype(np.float32) / 255.0, labels.numpy()
