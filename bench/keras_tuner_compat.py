r"""KerasTuner's getting-started study run by ``keras_tuner`` itself and by ``tpu_bo.keras_tuner``.

  python -m bench.keras_tuner_compat            # 10 trials, 2 epochs, each tuner
  python -m bench.keras_tuner_compat --quick    # 3 trials, 1 epoch (Hyperband: max_epochs 2)
  python -m bench.keras_tuner_compat --tuners=BayesianOptimization --trials=20

The study is https://keras.io/keras_tuner/getting_started/'s ``build_model`` (``units`` Int
32-512 step 32, ``activation`` Choice relu/tanh, a Boolean-guarded ``Dropout(0.25)``, ``lr``
Float 1e-4-1e-2 log into ``Adam``; compiled with sparse categorical cross-entropy and accuracy;
``Flatten`` first, no ``Input``), the very same function for both: only the module it gets
``HyperParameters`` from differs (``import keras_tuner as kt`` or ``import tpu_bo.keras_tuner
as kt``). The data: scikit-learn's 8x8 digits, shuffled with seed 0, 1,400 images to train on
and 397 to score (``validation_data``), batch 32. Each tuner with the same arguments in both:

* ``BayesianOptimization(max_trials=T, num_initial_points=max(2, T // 3), seed)``;
* ``RandomSearch(max_trials=T, seed)``;
* ``Hyperband(max_epochs=M, factor=2, seed)``: M is 4 (``--quick``: 2); the configurations it
  starts are the same count in both (``tpu_bo.keras_tuner.tuners.hyperband_trials``), but
  KerasTuner counts each round of a configuration as a trial of its own.

``search(x, y, epochs=E, batch_size=32, validation_data=..., verbose=0)`` (``Hyperband``:
``max_epochs`` rules). Each method and tuner runs once, in a fresh subprocess (TensorFlow,
Keras and the tuner module imported before the clock starts, a temporary ``directory``), so
neither inherits the other's TensorFlow state. Reported per tuner:

* ``wall s``: building the tuner (KerasTuner's and tpu_bo's both build the model-building
  function to find the space) plus ``search``; ``ratio``: ``tpu_bo.keras_tuner`` / ``keras_tuner``.
* ``trials``: the tuner's ``oracle.trials``; ``best val_accuracy``: ``oracle.get_best_trials(1)``'s
  score (both: the best epoch's ``val_accuracy``); ``median``: the median trial score.

One run each on a shared 2-core machine: the wall times move by several percent between runs,
the scores by more (different draws of the same sampler family, and different trials).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import statistics
import tempfile
import time
from typing import Any

from bench.common import default_out, fmt, quiet, ratio, spawn, write_results

METHODS = ("keras_tuner", "tpu_bo.keras_tuner")
TUNERS = ("BayesianOptimization", "RandomSearch", "Hyperband")
BATCH = 32


def build_model(hp: Any) -> Any:
    """KerasTuner's getting-started model (its loss for integer labels)."""
    import keras
    from keras import layers

    model = keras.Sequential()
    model.add(layers.Flatten())
    model.add(
        layers.Dense(
            units=hp.Int("units", min_value=32, max_value=512, step=32),
            activation=hp.Choice("activation", ["relu", "tanh"]),
        )
    )
    if hp.Boolean("dropout"):
        model.add(layers.Dropout(rate=0.25))
    model.add(layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def digits() -> tuple[Any, Any, Any, Any]:
    """The 8x8 digits in [0, 1], shuffled with seed 0: 1,400 to train on, 397 to score."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x = (x[order] / 16).astype("float32").reshape(-1, 8, 8)
    y = y[order].astype("int32")
    return x[:1400], y[:1400], x[1400:], y[1400:]


def tuner_args(args: argparse.Namespace, tuner: str) -> dict[str, Any]:
    """The tuner's arguments, the same for both methods."""
    if tuner == "Hyperband":
        return {"max_epochs": 2 if args.quick else 4, "factor": 2}
    out: dict[str, Any] = {"max_trials": args.trials}
    if tuner == "BayesianOptimization":
        out["num_initial_points"] = max(2, args.trials // 3)
    return out


def child(args: argparse.Namespace) -> None:
    """Runs one method's study of one tuner in this process; writes its figures."""
    import keras
    import tensorflow as tf  # noqa: F401 - imported before the clock starts

    kt = importlib.import_module(args._child)
    x_train, y_train, x_val, y_val = digits()
    keras.utils.set_random_seed(args.seed)
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        with quiet():
            tuner = getattr(kt, args.tuner)(
                build_model, objective="val_accuracy", seed=args.seed, directory=directory,
                project_name="getting_started", overwrite=True, **tuner_args(args, args.tuner),
            )  # fmt: skip
            tuner.search(
                x_train, y_train, epochs=args.epochs, batch_size=BATCH,
                validation_data=(x_val, y_val), verbose=0,
            )  # fmt: skip
        wall = time.perf_counter() - started
        trials = list(tuner.oracle.trials.values())
        scores = [t.score for t in trials if t.score is not None]
        best = tuner.oracle.get_best_trials(1)[0]
        out = {
            "method": args._child,
            "tuner": args.tuner,
            "wall_seconds": wall,
            "trials": len(trials),
            "best_val_accuracy": best.score,
            "median_val_accuracy": statistics.median(scores) if scores else None,
            "best_hyperparameters": {k: v for k, v in best.hyperparameters.values.items()},
        }
    pathlib.Path(args._result).write_text(json.dumps(out, default=str))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuners", default=",".join(TUNERS))
    parser.add_argument("--trials", type=int, help="default 10 (--quick: 3)")
    parser.add_argument("--epochs", type=int, help="default 2 (--quick: 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 trials, 1 epoch")
    parser.add_argument("--out", default="")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--_result", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tuner", default="", help=argparse.SUPPRESS)  # a child's
    args = parser.parse_args()
    args._module = "bench.keras_tuner_compat"
    args.trials = args.trials or (3 if args.quick else 10)
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.out = args.out or default_out("keras_tuner_compat", quick=args.quick)
    return args


def main() -> None:
    args = parse_args()
    if args._child:
        child(args)
        return
    started = time.perf_counter()
    flags = [f"--trials={args.trials}", f"--epochs={args.epochs}", f"--seed={args.seed}"]
    flags += ["--quick"] * args.quick
    rows: list[dict[str, Any]] = []
    for tuner in [t for t in args.tuners.split(",") if t]:
        for method in METHODS:
            print(f"{tuner} / {method}: in a subprocess...", flush=True)
            rows.append(spawn(method, args, [*flags, f"--tuner={tuner}"]))
            print(f"  {rows[-1]['wall_seconds']:.1f} s", flush=True)
    print(
        f"\nKerasTuner's getting-started study on digits (1400 train, 397 validation), "
        f"{args.trials} trials, {args.epochs} epoch(s), batch {BATCH}, seed {args.seed}; "
        "ratio = tpu_bo.keras_tuner / keras_tuner"
    )
    print(
        f"{'tuner':<21} {'method':<19} {'wall s':>7} {'ratio':>6} {'trials':>7} "
        f"{'best val_accuracy':>18} {'median':>7}"
    )
    by = {(r["tuner"], r["method"]): r for r in rows}
    for r in rows:
        base = by.get((r["tuner"], "keras_tuner"))
        share = ratio(r["wall_seconds"], base["wall_seconds"]) if base else None
        print(
            f"{r['tuner']:<21} {r['method']:<19} {r['wall_seconds']:>7.1f} "
            f"{fmt(share, '6.3f')} {r['trials']:>7} {fmt(r['best_val_accuracy'], '18.4f')} "
            f"{fmt(r['median_val_accuracy'], '7.4f')}"
        )
        if base and r is not base:
            r["wall_ratio_vs_keras_tuner"] = share
    total = time.perf_counter() - started
    payload = {
        "benchmark": "keras_tuner_compat",
        "quick": args.quick,
        "settings": {
            "trials": args.trials,
            "epochs": args.epochs,
            "batch_size": BATCH,
            "seed": args.seed,
            "train": 1400,
            "validation": 397,
        },  # fmt: skip
        "rows": rows,
        "total_seconds": total,
    }
    out = write_results(args.out, payload)
    print(f"\n{total:.0f} s in all; wrote {out}")


if __name__ == "__main__":
    main()
