r"""Utilization of a pruned, packed study: pruned slots are refilled at once.

  python -m bench.refill                       # MNIST train[:10%], 16 trials, K=4, 3 epochs
  python -m bench.refill --prunes=median       # the pruned study only, no baseline
  python -m bench.refill --quick               # digits, 8 trials (a check that it runs)

The same study twice through ``tpu_bo.run_study``, as in ``bench/packing.py`` (the seed CNN on
``--train_split`` of the real MNIST in ``--data_dir``, scored on ``train[90%:]``, the model's
default space, the same seed), with K=4 trials packed into one program and 3 epochs per trial:
once with ``prune="none"`` as the baseline (first, as K=1 in ``bench/packing.py``), once with
``prune="median"`` (Optuna's MedianPruner after ``--prune_after`` finished trials, never
before epoch ``--min_epochs``), in one process. A pruned trial's slot takes the next trial at
once; slots only idle while a pack drains (a proposal of a different structure, or the end of
the budget). Reported per variant: the utilization
(``StudyResult.utilization``, useful over computed slot-epochs), the wall time and its ratio to
the baseline, the trials by status, the epochs trained, the traces, and the best validation
accuracy.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.common import default_out, fmt, peak_rss_mib, write_results
from bench.packing import run_one


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prunes", default="none,median", help="variants, in order")
    parser.add_argument("--k", type=int, default=4, help="trials per pack")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--init_points", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--prune_after", type=int, default=4)
    parser.add_argument("--min_epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_split", default="train[:10%]")
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "tfds"))
    parser.add_argument("--model", default="mnist_cnn", choices=["mnist_cnn", "mlp"])
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="digits, 8 trials, prune_after 2")
    parser.add_argument("--out", default="", help="default bench/results/refill[_quick].json")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.init_points, args.prune_after = 8, 2, 2
    return args


def print_table(rows: list[dict], base: dict | None) -> None:
    print(
        f"\n{'prune':<8} {'util':>6} {'wall s':>8} {'ratio':>6} {'ok':>4} {'pruned':>7} "
        f"{'failed':>7} {'epochs':>7} {'traces':>7} {'best val':>9}"
    )
    for r in rows:
        c = r["counts"]
        r["wall_ratio_vs_none"] = r["wall_seconds"] / base["wall_seconds"] if base else None
        print(
            f"{r['prune']:<8} {fmt(r['utilization'], '6.3f')} {r['wall_seconds']:>8.1f} "
            f"{fmt(r['wall_ratio_vs_none'], '6.2f')} {c.get('ok', 0):>4} "
            f"{c.get('pruned', 0):>7} {c.get('failed', 0):>7} {r['epochs_trained']:>7} "
            f"{r['traces']:>7} {fmt(r['best_val_accuracy'], '9.4f')}"
        )


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    rows = []
    for prune in [p for p in args.prunes.split(",") if p]:
        print(f"prune={prune}: {args.trials} trials, K={args.k}, {args.epochs} epochs...")
        row = run_one(
            args.k,
            args,
            epochs=args.epochs,
            prune=prune,
            prune_after=args.prune_after,
            min_epochs=args.min_epochs,
        )
        rows.append({"prune": prune, **row})
        print(f"  {row['wall_seconds']:.1f} s", flush=True)
    base = next((r for r in rows if r["prune"] == "none"), None)
    print_table(rows, base)
    peak = peak_rss_mib()
    out = write_results(
        args.out or default_out("refill", quick=args.quick),
        {
            "benchmark": "refill",
            "workload": "digits (quick)" if args.quick else f"mnist {args.train_split}",
            "model": args.model,
            "k": args.k,
            "epochs": args.epochs,
            "prune_after": args.prune_after,
            "min_epochs": args.min_epochs,
            "jit_compile": args.jit_compile,
            "rows": rows,
            "peak_rss_mib": peak,
            "total_seconds": time.perf_counter() - started,
        },
    )
    print(f"peak RSS {peak:.0f} MiB; wrote {out}")


if __name__ == "__main__":
    main()
