r"""What a suggestion of tpu_bo's default sampler costs, and a study's host overhead per trial.

  python -m bench.suggestion_cost           # 10/30/50/100/200 observations, 10 repeats, 205 trials
  python -m bench.suggestion_cost --quick   # 10/30/50/100, 3 repeats, 45 trials (CI, ~10 s)

Two measurements, no training and no accelerator:

* ``suggestion``: one ``study.ask`` of an Optuna study (in-memory storage) whose sampler is
  ``tpu_bo.search.sampler.make_sampler`` with tpu_bo's defaults (``BayesOptSampler``: bayes_opt's
  Gaussian process, expected improvement), after ``n`` completed trials at random points of a
  synthetic objective, on three spaces: ``5d`` (three floats, two log-scale), ``3d`` (a log
  learning rate and two floats) and ``mixed`` (log, float, int, choice: bayes_opt's typed
  parameters). ``warm``: the sampler that served the earlier asks, as in a running study; the
  asks at ``n``, ``n + 1``, ... are timed, each told before the next, so the refits that the
  schedule puts among them are counted. ``cold``: a fresh sampler for every ask, as the first
  ask of a resumed study (nothing memoised). Median and max seconds over the repeats.
* ``study``: ``tpu_bo.study.study.Study`` itself, the host path of a real study (``Study(config)
  .open()``, its journal in a temporary ``output_dir``, ``ask``, ``report`` per epoch, ``tell``
  with an ``Outcome``), ``init_points`` = 5 then ``--guided`` guided trials of 3 epochs on a
  3-parameter space (log learning rate, dropout, a width choice) with a synthetic accuracy.
  ``slots=1`` asks a trial when the previous one is told; ``slots=8`` keeps 8 trials running
  and tells them in a seeded random order (a pack's out-of-order finishes, whose running
  trials the sampler registers as pending points). Reported: the median host seconds per trial
  in a window of 10 trials around trials 10, 100 and 200 (``--quick``: 10 and 40), split into
  ``ask`` and ``report + tell``; the JSON keeps every trial's.

The script itself imports no TensorFlow (``write_results(..., tensorflow=False)``), but a study
directory's journal goes through ``tf.io.gfile`` (``tpu_bo.study.journal``), so ``study``
loads it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import optuna

from bench.common import default_out, write_results
from tpu_bo.search.space import SearchSpace

SPACES = {
    "5d": ["a:float:0:1", "b:float:-2:2", "c:log:1e-5:1e-1", "d:float:0:10", "e:log:1e-3:10"],
    "3d": ["lr:log:1e-4:1e-1", "dropout:float:0:0.6", "momentum:float:0.5:0.99"],
    "mixed": ["lr:log:1e-4:1e-1", "dropout:float:0:0.6", "layers:int:1:8", "act:choice:a,b,c"],
}
STUDY_SPACE = {
    "learning_rate": ("log", 1e-4, 1e-1),
    "dropout": ("float", 0.0, 0.6),
    "units": ("choice", [64, 128, 256]),
}


def score(params: dict[str, Any], rng: np.random.Generator) -> float:
    """A smooth synthetic score of any point (larger is better), with a little noise."""
    total = 0.0
    for name, value in sorted(params.items()):
        if isinstance(value, str):
            total -= 0.3 * (value != "b")
        elif name in ("lr", "c", "e", "learning_rate"):
            total -= (math.log10(value) + 2.5) ** 2 / 4
        else:
            total -= (float(value) - 0.3) ** 2 / 10
    return total + 0.01 * float(rng.standard_normal())


def filled_study(space: SearchSpace, n: int) -> tuple[optuna.Study, dict[str, Any]]:
    """A maximising study of tpu_bo's sampler with ``n`` completed trials at random points."""
    from tpu_bo.search.sampler import distributions
    from tpu_bo.search.suggester import Suggester

    wanted = distributions(space)
    study = optuna.create_study(direction="maximize", sampler=sampler(space))
    points, rng = Suggester(space, seed=0), np.random.default_rng(0)
    for _ in range(n):
        params = points.suggest(random=True)
        value = score(params, rng)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=wanted, value=value))
    return study, wanted


def sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """tpu_bo's default sampler (``bayes_opt``, expected improvement) for ``space``."""
    from tpu_bo.config import Config
    from tpu_bo.study.study import sampler_for

    return sampler_for(Config(space=space, init_points=5, seed=0).validate(), space)


def timed_asks(space: SearchSpace, n: int, repeats: int, *, cold: bool) -> list[float]:
    """Seconds of the asks at ``n``, ``n + 1``, ... observations, each told before the next."""
    study, wanted = filled_study(space, n if cold else n - 1)
    rng = np.random.default_rng(1)
    if not cold:  # a running study's sampler has served the ask before
        trial = study.ask(wanted)
        study.tell(trial, score(trial.params, rng))
    seconds = []
    for _ in range(repeats):
        if cold:
            study.sampler = sampler(space)
        start = time.perf_counter()
        trial = study.ask(wanted)
        seconds.append(time.perf_counter() - start)
        study.tell(trial, score(trial.params, rng))
    return seconds


def suggestion_costs(counts: list[int], repeats: int, spaces: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in spaces:
        space = SearchSpace.parse(SPACES[name])
        out[name] = {}
        for n in counts:
            row = {}
            for mode in ("warm", "cold"):
                s = timed_asks(space, n, repeats, cold=mode == "cold")
                row[mode] = {"median": statistics.median(s), "max": max(s), "seconds": s}
            out[name][str(n)] = row
            print(
                f"  {name:>5} n={n:<4} warm median {row['warm']['median']:.3f} s "
                f"max {row['warm']['max']:.3f} s | cold median {row['cold']['median']:.3f} s "
                f"max {row['cold']['max']:.3f} s",
                flush=True,
            )
    return out


def engine_study(guided: int, slots: int, output_dir: str) -> dict[str, list[float]]:
    """Host seconds per trial number: ``ask`` and ``report`` + ``tell``."""
    from tpu_bo.config import Config
    from tpu_bo.records import Outcome
    from tpu_bo.study.study import Study

    space = SearchSpace.from_value(STUDY_SPACE)
    config = Config(space=space, init_points=5, n_iter=guided, epochs=3, output_dir=output_dir)
    study = Study(config.validate()).open()
    rng = np.random.default_rng(0)
    order = np.random.default_rng(1)
    ask: dict[int, float] = {}
    tell: dict[int, float] = {}
    running: list[Any] = []
    try:
        while study.remaining or running:
            while study.remaining and len(running) < slots:
                start = time.perf_counter()
                running.append(study.ask())
                ask[running[-1].number] = time.perf_counter() - start
            trial = running.pop(int(order.integers(len(running))))
            final = 0.9 + 0.085 * math.exp(score(trial.params, rng))
            history = [{"epoch": e, "val_accuracy": final - 0.02 * (3 - e)} for e in (1, 2, 3)]
            start = time.perf_counter()
            for metrics in history:
                study.report(trial, metrics)
            study.tell(trial, Outcome("ok", history, seconds=1.0))
            tell[trial.number] = time.perf_counter() - start
    finally:
        study.close()
    total = len(ask)
    return {"ask": [ask[i] for i in range(total)], "report_tell": [tell[i] for i in range(total)]}


def windows(per_trial: dict[str, list[float]], centres: list[int]) -> dict[str, Any]:
    out = {}
    for centre in centres:
        lo = max(0, min(centre - 5, len(per_trial["ask"]) - 10))
        out[str(centre)] = {
            part: statistics.median(values[lo : lo + 10]) for part, values in per_trial.items()
        }
        out[str(centre)]["trials"] = [lo, lo + 9]
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer counts, repeats and trials")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--guided", type=int, default=200, help="guided trials of the study")
    parser.add_argument("--spaces", default="5d,3d,mixed")
    parser.add_argument("--skip_study", action="store_true", help="only the suggestion costs")
    parser.add_argument("--out", default="", help="default bench/results/suggestion_cost.json")
    args = parser.parse_args()
    args.counts = [10, 30, 50, 100, 200]
    if args.quick:
        args.counts, args.repeats, args.guided = [10, 30, 50, 100], 3, 40
    return args


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning
    started = time.perf_counter()
    print("suggestion cost (seconds per ask):", flush=True)
    costs = suggestion_costs(args.counts, args.repeats, args.spaces.split(","))
    studies: dict[str, Any] = {}
    centres = sorted({min(c, 5 + args.guided - 5) for c in (10, 100, 200)})
    for slots in () if args.skip_study else (1, 8):
        with tempfile.TemporaryDirectory() as tmp:
            per_trial = engine_study(args.guided, slots, tmp)
        studies[f"slots={slots}"] = {"windows": windows(per_trial, centres), **per_trial}
        for centre, row in studies[f"slots={slots}"]["windows"].items():
            print(
                f"  study slots={slots} around trial {centre}: ask {row['ask'] * 1e3:.1f} ms, "
                f"report + tell {row['report_tell'] * 1e3:.1f} ms",
                flush=True,
            )
    total = time.perf_counter() - started
    print(f"done in {total:.0f} s")
    out = write_results(
        args.out or default_out("suggestion_cost", quick=args.quick),
        {
            "benchmark": "suggestion_cost",
            "counts": args.counts,
            "repeats": args.repeats,
            "suggestion_seconds": costs,
            "guided_trials": args.guided,
            "study_seconds": studies,
            "wall_seconds": total,
        },
        tensorflow=False,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
