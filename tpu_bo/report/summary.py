"""What a study says about itself: its header lines, its summary and the closing lines.

``summary.json`` is built here and nowhere else: :func:`summarize` makes the one typed
:class:`tpu_bo.records.Summary` of a session's end, which the session completes (selection,
PBT, final model) and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tpu_bo.config import Config
from tpu_bo.records import Summary, TrialRecord
from tpu_bo.report.console import format_value
from tpu_bo.search.space import SearchSpace
from tpu_bo.study.output_dir import JOURNAL
from tpu_bo.study.shared.rdb import where
from tpu_bo.timing import split_line

if TYPE_CHECKING:
    from tpu_bo.data.pipeline import Datasets
    from tpu_bo.study.study import Study


def _budget(config: Config) -> str:
    """``5 random + 10 guided by bayes_opt``; only random trials say so once."""
    if config.sampler == "random" or not config.n_iter:
        return f"{config.total_trials} random"
    return f"{config.init_points} random + {config.n_iter} guided by {config.sampler}"


def header_lines(config: Config, data: Datasets, study: Study) -> list[str]:
    """The lines printed when a study starts: what it searches, on which data, where."""
    lines = [
        f"study: {config.dataset} / {config.model_name}, {config.total_trials} trials "
        f"({_budget(config)}), "
        f"{config.epochs} epoch(s) each, objective {config.objective} "
        f"({'max' if config.maximize else 'min'}) -> {study.dir.output_dir}"
    ]
    lines += [f"  {p.describe()}" for p in study.space.params]
    if "batch_size" in study.space.names:  # steps per epoch follow the searched batch
        sizes = study.space["batch_size"].values()
        steps = ", ".join(f"{data.num_train // int(b)} of {int(b)}" for b in sizes)
        lines.append(
            f"data: {config.dataset} train={data.num_train} (steps per epoch follow the searched "
            f"batch_size: {steps}), eval={data.eval.num_examples}"
        )
    else:
        lines.append(
            f"data: {config.dataset} train={data.num_train} ({data.steps_per_epoch} steps of "
            f"{data.global_batch} per epoch), eval={data.eval.num_examples} "
            f"({data.eval.steps} steps)"
        )
    if config.executions_per_trial > 1:
        n = config.executions_per_trial
        lines.append(
            f"executions: each trial trains {n} times with different seeds, side by side "
            f"({config.pack_width} slots a pack), and scores their mean {config.objective}"
        )
    if config.patience:
        lines.append(
            f"early stopping: a trial ends after {config.patience} epoch(s) without "
            f"{config.objective} improving by more than {config.min_delta:g}"
        )
    if config.prune != "none":
        lines.append(f"pruning: {config.prune} after epoch {config.min_epochs}")
    if config.scheduler == "pbt":
        lines.append(
            f"PBT: populations of {config.parallel_trials}; every {config.pbt_interval} "
            f"epoch(s) the worst {config.pbt_quantile:.0%} take the best's weights, then "
            f"perturb (resample {config.pbt_resample:.0%})"
        )
    told = len(study.records())
    if told:
        lines.append(f"resuming: {told} trial(s) already in the study")
    return lines


def summarize(
    config: Config,
    study: Study,
    records: Sequence[TrialRecord],
    best: TrialRecord | None,
    test: dict[str, Any] | None,
    split: dict[str, float],
    utilization: float | None,
) -> tuple[Summary, list[str]]:
    """The session's :class:`Summary` and the closing lines of the console.

    ``split`` is the session's :meth:`tpu_bo.timing.Clock.split` (``wall`` its seconds).
    """
    seconds = split["wall"]
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    edges = study.space.at_edge(best.params) if best else []
    on_bound = guided_on_bound(study.space, records)
    mode = "max" if config.maximize else "min"
    summary = Summary(
        best_trial=best.number if best else None,
        best_target=best.target if best else None,
        objective=f"{config.objective} ({mode}, best epoch)",
        best_params=best.params if best else {},
        best_epoch=best.best_epoch if best else None,
        test=test,
        counts=counts,
        trials=len(records),
        budget=config.total_trials,
        training_steps=sum(r.steps for r in records),
        best_at_edge=edges,
        utilization_this_session=None if utilization is None else round(utilization, 4),
        seconds_this_session=round(seconds, 3),
        time_this_session=split,
        guided_on_bound=on_bound,
    )
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = ["", f"trials: {len(records)} ({status}); {seconds:.1f} s this session"]
    lines.append(split_line(split))
    if utilization is not None:
        lines.append(f"slot utilization: {utilization:.3f} (useful / computed slot-epochs)")
    if on_bound["guided"]:
        lines.append(
            f"guided trials on a bound: {on_bound['on_bound']} of {on_bound['guided']} (a "
            "parameter within 1% of its range's end)"
        )
    if best is None:
        lines.append("best: no trial succeeded.")
    else:
        params = " ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
        lines.append(f"best: trial {best.number} {config.objective} {best.target:.4f} {params}")
        if test:
            scores = [f"{k} {v:.4f}" for k, v in test.items() if k not in ("split", "examples")]
            lines.append(
                f"test ({test['split']}, {test['examples']} examples): " + ", ".join(scores)
            )
        if edges:
            lines.append(
                f"warning: the best point lies at the edge of the space for {', '.join(edges)}; "
                "consider widening those bounds."
            )
    lines.append(f"study: {study.dir.output_dir} (optuna-dashboard {dashboard_target(study)})")
    return summary, lines


def guided_on_bound(space: SearchSpace, records: Sequence[TrialRecord]) -> dict[str, Any]:
    """How many of the sampler's guided trials put a parameter on a bound (within 1% of its
    range, :meth:`SearchSpace.on_bound`), and which parameters how often."""
    guided = [r for r in records if r.source == "guided" and space.contains(r.params)]
    names: dict[str, int] = {}
    hits = 0
    for r in guided:
        edges = space.on_bound(r.params)
        hits += bool(edges)
        for name in edges:
            names[name] = names.get(name, 0) + 1
    fraction = round(hits / len(guided), 4) if guided else None
    return {"guided": len(guided), "on_bound": hits, "fraction": fraction, "by_param": names}


def dashboard_target(study: Study) -> str:
    """What to pass to ``optuna-dashboard`` to see this study."""
    if study.config.storage:
        return where(study.config.storage)  # the password is not printed
    return study.dir.path(JOURNAL)
