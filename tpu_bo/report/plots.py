"""``summary.png``: how the study progressed and where the good points lie.

The first panel plots the best objective so far against the trial number (each trial's own
score as dots; failed trials as crosses on the axis, pruned ones hollow). Then one panel per
hyperparameter plots each trial's score against its value, on a log axis for ``log``
parameters, with the best trial starred. A PBT study adds the best member's schedule: its
runtime hyperparameters over the epochs that made its weights, and the members they came from.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tpu_bo.records import Summary, TrialRecord
from tpu_bo.report.observers import Observer
from tpu_bo.search.space import Param, SearchSpace

if TYPE_CHECKING:
    from tpu_bo.study.study import Study


def summary_figure(
    records: Sequence[dict[str, Any]],
    space: SearchSpace,
    *,
    objective: str,
    maximize: bool,
    pbt: Mapping[str, Any] | None = None,
) -> Any:
    """Builds the summary figure (a matplotlib ``Figure``) from journal records (``pbt``: a
    PBT study's best member, ``summary.json``'s ``pbt.best``, for one more panel)."""
    fig, axes = _figure(panels=1 + len(space.params) + bool(pbt))
    if pbt:
        _schedule_panel(axes[len(space.params) + 1], pbt, space)
    ok = [r for r in records if r["status"] == "ok" and _finite(r.get("target"))]
    better = max if maximize else min
    best = better(ok, key=lambda r: r["target"]) if ok else None

    _progress_panel(axes[0], records, objective=objective, maximize=maximize)
    for ax, param in zip(axes[1 : len(space.params) + 1], space.params, strict=True):
        _param_panel(ax, param, records, best, objective=objective)
        if pbt:  # a PBT member's params are its first values; its schedule is the last panel
            ax.set_xlabel(f"{param.name} ({param.kind}), first value")
    fig.suptitle(
        f"{len(records)} trials, {len(ok)} ok; best {objective} "
        + (f"{best['target']:.4f} (trial {best['number']})" if best else "none")
    )
    return fig


def _figure(panels: int) -> tuple[Any, Any]:
    """A figure with ``panels`` axes, at most three to a row; the axes flat, spares hidden."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes


def _progress_panel(
    ax: Any, records: Sequence[dict[str, Any]], *, objective: str, maximize: bool
) -> None:
    """The best objective so far against the trial number, over every trial's own score."""
    better = max if maximize else min
    running, xs, ys = None, [], []
    for r in records:
        if r["status"] == "ok" and _finite(r.get("target")):
            running = r["target"] if running is None else better(running, r["target"])
        if running is not None:
            xs.append(r["number"])
            ys.append(running)
    if xs:
        # One more half step, so that a best found by the last trial shows as a rise.
        ax.step([*xs, xs[-1] + 0.5], [*ys, ys[-1]], where="post", color="C0", label="best so far")
    _dots(ax, records, lambda r: r["number"])
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("progress")
    ax.legend(loc="lower right" if maximize else "upper right", fontsize="small")


def _param_panel(
    ax: Any,
    param: Param,
    records: Sequence[dict[str, Any]],
    best: dict[str, Any] | None,
    *,
    objective: str,
) -> None:
    """Every trial's score against its value of ``param``, the best trial starred."""
    if param.kind == "choice":
        position = {c: i for i, c in enumerate(param.choices)}
        ax.set_xticks(range(len(param.choices)), [str(c) for c in param.choices])
        _dots(ax, records, lambda r: position.get(r["params"].get(param.name)))
        if best is not None and best["params"].get(param.name) in position:
            ax.plot(
                position[best["params"][param.name]],
                best["target"],
                "*",
                color="C3",
                markersize=14,
            )
    else:
        _dots(ax, records, lambda r: r["params"].get(param.name))
        if best is not None:
            ax.plot(best["params"][param.name], best["target"], "*", color="C3", markersize=14)
        if param.kind == "log":
            ax.set_xscale("log")
            ax.set_xlim(param.low / 1.25, param.high * 1.25)
        else:
            pad = 0.04 * (param.high - param.low)
            ax.set_xlim(param.low - pad, param.high + pad)
    ax.set_xlabel(f"{param.name} ({param.kind})")
    ax.set_ylabel(objective)


def _schedule_panel(ax: Any, pbt: Mapping[str, Any], space: SearchSpace) -> None:
    """A PBT member's runtime hyperparameters over the epochs that made its best weights, each
    as its position in its range (log ranges on a log scale), the donors marked."""
    rows = pbt["schedule"]
    epochs = [row["epoch"] for row in rows]
    for param in space.params:
        if param.kind == "choice" or param.name not in rows[0]:
            continue
        values = [float(row[param.name]) for row in rows]
        if param.kind == "log":
            low, high = math.log(param.low), math.log(param.high)
            values = [math.log(v) for v in values]
        else:
            low, high = float(param.low), float(param.high)
        position = [(v - low) / (high - low) for v in values]
        ax.step(epochs, position, where="mid", label=param.name)
    for segment in pbt["ancestry"]:
        first = segment["epochs"][0]
        ax.axvline(first - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.text(first - 0.4, 1.02, f"trial {segment['trial']}", fontsize="x-small")
    ax.set_ylim(-0.05, 1.12)
    ax.set_xlabel("epoch")
    ax.set_ylabel("position in its range")
    ax.set_title(f"PBT: trial {pbt['trial']}'s schedule")
    ax.legend(loc="lower right", fontsize="x-small")


def write_summary_plot(
    path: str,
    records: Sequence[dict[str, Any]],
    space: SearchSpace,
    *,
    objective: str,
    maximize: bool,
    pbt: Mapping[str, Any] | None = None,
) -> None:
    """Renders :func:`summary_figure` as PNG to ``path`` (local or ``gs://``)."""
    from tpu_bo.study.output_dir import write_atomic

    fig = summary_figure(records, space, objective=objective, maximize=maximize, pbt=pbt)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_atomic(path, buffer.getvalue())


class SummaryPlot(Observer):
    """Writes ``summary.png`` from every finished trial when the study ends."""

    def __init__(self, path: str, space: SearchSpace, *, objective: str, maximize: bool) -> None:
        self.path = path
        self.space = space
        self.objective = objective
        self.maximize = maximize
        self.records: list[TrialRecord] = []
        self.study: Study | None = None

    def on_study_start(self, study: Study) -> None:
        self.study = study  # a shared study's plot shows every worker's trials
        # Matplotlib takes about a second to import: do it while the study trains.
        threading.Thread(target=_import_plots, name="matplotlib-import", daemon=True).start()

    def on_trial_end(self, record: TrialRecord, *, new_best: bool) -> None:
        self.records.append(record)

    def on_study_end(self, summary: Summary) -> None:
        records = self.records
        if self.study is not None and self.study.shared:
            records = self.study.records()
        if not records:
            return
        write_summary_plot(
            self.path,
            [r.to_dict() for r in sorted(records, key=lambda r: r.number)],
            self.space,
            objective=self.objective,
            maximize=self.maximize,
            pbt=(summary.pbt or {}).get("best"),
        )


def _import_plots() -> None:
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except Exception:  # noqa: BLE001, S110 - only a head start; the plot imports it again
        pass


def _dots(ax: Any, records: Sequence[dict[str, Any]], x_of: Any) -> None:
    floor = min((r["target"] for r in records if _finite(r.get("target"))), default=0.0)
    for status, style in (
        ("ok", dict(marker="o", color="C0")),
        ("pruned", dict(marker="o", mfc="none", color="C1")),
        ("failed", dict(marker="x", color="C3")),
    ):
        points = [(x_of(r), r.get("target")) for r in records if r["status"] == status]
        points = [(x, y if _finite(y) else floor) for x, y in points if x is not None]
        if points:
            ax.plot(*zip(*points, strict=True), linestyle="none", label=status, **style)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
