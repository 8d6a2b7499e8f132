r"""Trials per minute with K trials packed into one program, against K=1 in the same run.

  python -m bench.packing                      # MNIST train[:10%], 16 trials, K = 1, 2, 4, 8
  python -m bench.packing --jit_compile        # the same with XLA on CPU (a TPU's compile)
  python -m bench.packing --model=mlp          # the small MLP instead of the CNN
  python -m bench.packing --quick              # digits, 4 trials, K = 1, 2 (CI, under a minute)

Each K runs the same study through ``tpu_bo.run_study``: the seed CNN (``mnist_cnn``), one epoch
per trial on ``train[:10%]`` of the real MNIST in ``--data_dir`` (5,400 images, 42 steps of
128), scored on ``train[90%:]`` (6,000 images), over the model's default space (a dropout rate
and a log-scale learning rate), with the same seed and budget. Reported per K: the study's wall
time, trials per minute, its ratio to K=1 (above 1: packing is faster), the seconds of the first
pack (which includes tracing), the traces, the utilization (``StudyResult.utilization``: useful
over computed slot-epochs; below 1 when slots sit idle, e.g. while a pack drains at the end of
the budget), and the best and median validation accuracy, so a speed-up that costs search
quality would show. ``bench/refill.py`` runs the same kind of study with pruning, where freed
slots are refilled.

On a CPU the gain is bounded: one small model already keeps both cores busy, and packing only
removes per-step host overhead and shares the input pipeline. On a TPU a small tower leaves
most of the chip idle, so a larger gain is expected there (not measurable on this machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from bench.common import default_out, fmt, peak_rss_mib, quiet, write_results


def study_fields(k: int, args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields of one K's study (the model's default space: a dropout rate and a
    log-scale learning rate); ``--quick`` is the offline digits set."""
    fields: dict[str, Any] = dict(
        model=args.model,
        epochs=1,
        init_points=args.init_points,
        n_iter=args.trials - args.init_points,
        seed=args.seed,
        parallel_trials=k,
        jit_compile=args.jit_compile,
        accelerator="cpu",
    )
    if args.quick:
        fields.update(dataset="digits", batch_size=64)
    else:
        fields.update(
            dataset="mnist",
            data_dir=args.data_dir,
            download=False,
            train_split=args.train_split,
            eval_split="train[90%:]",
        )
    return fields


def run_one(k: int, args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """One study with pack width ``k`` (``overrides``: more Config fields); its figures."""
    from tpu_bo import run_study
    from tpu_bo.config import Config

    fields = {**study_fields(k, args), **overrides}
    with tempfile.TemporaryDirectory() as tmp, quiet():
        started = time.perf_counter()
        result = run_study(Config(**fields, output_dir=tmp))
        wall = time.perf_counter() - started
    records = sorted(result.trials, key=lambda r: r.number)
    first_pack = records[: min(k, len(records))]
    ok = [r.target for r in records if r.status.value == "ok" and r.target is not None]
    return {
        "k": k,
        "wall_seconds": wall,
        "trials": len(records),
        "trials_per_minute": 60 * len(records) / wall,
        "first_pack_seconds": max(r.seconds for r in first_pack),
        "traces": result.traces,
        "utilization": result.utilization,
        "counts": dict(result.counts),
        "epochs_trained": sum(len(r.history) for r in records),
        "best_val_accuracy": max(ok) if ok else None,
        "median_val_accuracy": statistics.median(ok) if ok else None,
        "failed": result.counts.get("failed", 0),
        "per_trial": [
            {
                "trial": r.number,
                "status": r.status.value,
                "epochs": len(r.history),
                "target": r.target,
                "seconds": r.seconds,
            }
            for r in records
        ],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'K':>3} {'wall s':>8} {'trials/min':>11} {'ratio':>6} {'1st pack s':>11} "
        f"{'traces':>7} {'util':>6} {'best val':>9} {'median val':>11} {'failed':>7}"
    )
    for r in rows:
        print(
            f"{r['k']:>3} {r['wall_seconds']:>8.1f} {r['trials_per_minute']:>11.2f} "
            f"{r['ratio_vs_k1']:>6.2f} {r['first_pack_seconds']:>11.1f} {r['traces']:>7} "
            f"{fmt(r['utilization'], '6.3f')} {fmt(r['best_val_accuracy'], '9.4f')} "
            f"{fmt(r['median_val_accuracy'], '11.4f')} {r['failed']:>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="1,2,4,8", help="pack widths to compare (K=1 first)")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--init_points", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_split", default="train[:10%]")
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "tfds"))
    parser.add_argument("--model", default="mnist_cnn", choices=["mnist_cnn", "mlp"])
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="digits, 4 trials, K = 1, 2")
    parser.add_argument("--out", default="", help="default bench/results/packing[_quick].json")
    args = parser.parse_args()
    if args.quick:
        args.ks, args.trials, args.init_points = "1,2", 4, 2
    ks = [int(k) for k in args.ks.split(",")]
    if ks[0] != 1:
        ks.insert(0, 1)
    rows = []
    for k in ks:
        print(f"K={k}: running {args.trials} trials...", flush=True)
        rows.append(run_one(k, args))
    for r in rows:
        r["ratio_vs_k1"] = r["trials_per_minute"] / rows[0]["trials_per_minute"]
    print_table(rows)
    peak = peak_rss_mib()
    out = write_results(
        args.out or default_out("packing", quick=args.quick),
        {
            "benchmark": "packing",
            "workload": "digits (quick)" if args.quick else f"mnist {args.train_split}",
            "model": args.model,
            "jit_compile": args.jit_compile,
            "rows": rows,
            "peak_rss_mib": peak,
        },
    )
    print(f"peak RSS {peak:.0f} MiB; wrote {out}")


if __name__ == "__main__":
    main()
