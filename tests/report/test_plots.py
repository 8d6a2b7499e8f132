"""summary.png: the progress panel, a panel per hyperparameter, the best trial starred."""

from __future__ import annotations

import numpy as np
import pytest

from tpu_bo.report.plots import summary_figure, write_summary_plot
from tpu_bo.search.space import SearchSpace

SPACE = SearchSpace.from_value(
    {
        "learning_rate": ("log", 1e-4, 1e-2),
        "dropout": ("float", 0.1, 0.5),
        "units": ("choice", [16, 32, 64]),
    }
)


def rec(number, status, target, lr=1e-3, dropout=0.2, units=32):
    params = {"learning_rate": lr, "dropout": dropout, "units": units}
    return {"number": number, "status": status, "target": target, "params": params}


RECORDS = [
    rec(0, "ok", 0.6, lr=1e-4),
    rec(1, "failed", None, lr=2e-4),
    rec(2, "ok", 0.9, lr=3e-3, dropout=0.4, units=64),
    rec(3, "pruned", 0.3, lr=5e-3),
    rec(4, "ok", 0.7, lr=1e-2, units=16),
]


def panels(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def line(ax, label):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return np.asarray(found.get_xdata(), float), np.asarray(found.get_ydata(), float)


def stars(ax):
    return [
        (float(np.ravel(ln.get_xdata())[0]), float(np.ravel(ln.get_ydata())[0]))
        for ln in ax.get_lines()
        if ln.get_marker() == "*"
    ]


def test_one_panel_for_progress_and_one_per_param_three_to_a_row():
    fig = summary_figure(RECORDS, SPACE, objective="val_accuracy", maximize=True)
    progress, lr, dropout, units = panels(fig)
    assert len(fig.axes) == 6  # two rows of three; the spares hidden
    assert progress.get_title() == "progress" and progress.get_xlabel() == "trial"
    assert [ax.get_xlabel() for ax in (lr, dropout, units)] == [
        "learning_rate (log)",
        "dropout (float)",
        "units (choice)",
    ]
    assert {ax.get_ylabel() for ax in panels(fig)} == {"val_accuracy"}
    assert lr.get_xscale() == "log" and dropout.get_xscale() == "linear"
    assert lr.get_xlim() == pytest.approx((1e-4 / 1.25, 1e-2 * 1.25))
    assert dropout.get_xlim() == pytest.approx((0.1 - 0.016, 0.5 + 0.016))
    assert [t.get_text() for t in units.get_xticklabels()] == ["16", "32", "64"]
    assert fig.get_suptitle() == "5 trials, 3 ok; best val_accuracy 0.9000 (trial 2)"


def test_progress_steps_up_to_each_new_best_and_dots_every_trial_by_status():
    progress = panels(summary_figure(RECORDS, SPACE, objective="val_accuracy", maximize=True))[0]
    xs, ys = line(progress, "best so far")
    assert list(xs) == [0, 1, 2, 3, 4, 4.5] and list(ys) == [0.6, 0.6, 0.9, 0.9, 0.9, 0.9]
    assert list(line(progress, "ok")[1]) == [0.6, 0.9, 0.7]
    assert list(line(progress, "pruned")[0]) == [3]
    # A failed trial has no score: it sits on the lowest score of the study.
    assert list(zip(*line(progress, "failed"), strict=True)) == [(1.0, 0.3)]


def test_the_best_trial_is_starred_at_its_values_and_minimizing_picks_the_lowest():
    fig = summary_figure(RECORDS, SPACE, objective="val_accuracy", maximize=True)
    _, lr, dropout, units = panels(fig)
    assert stars(lr) == [(pytest.approx(3e-3), 0.9)]
    assert stars(dropout) == [(pytest.approx(0.4), 0.9)]
    assert stars(units) == [(2.0, 0.9)]  # 64 is the third choice
    low = summary_figure(RECORDS, SPACE, objective="val_loss", maximize=False)
    assert stars(panels(low)[1]) == [(pytest.approx(1e-4), 0.6)]
    assert list(line(panels(low)[0], "best so far")[1]) == [0.6] * 6
    assert low.get_suptitle().endswith("best val_loss 0.6000 (trial 0)")


def test_without_a_successful_trial_there_is_no_best():
    failed = [rec(0, "failed", None), rec(1, "pruned", float("nan"))]
    fig = summary_figure(failed, SPACE, objective="val_accuracy", maximize=True)
    assert fig.get_suptitle() == "2 trials, 0 ok; best val_accuracy none"
    progress = panels(fig)[0]
    assert "best so far" not in [ln.get_label() for ln in progress.get_lines()]
    assert all(not stars(ax) for ax in panels(fig))


def test_a_single_param_gives_two_panels_in_one_row():
    space = SearchSpace.from_value({"learning_rate": ("log", 1e-4, 1e-2)})
    fig = summary_figure(RECORDS, space, objective="loss", maximize=False)
    assert len(fig.axes) == 2 and len(panels(fig)) == 2


def test_write_summary_plot_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "summary.png"
    path.parent.mkdir()
    write_summary_plot(str(path), RECORDS, SPACE, objective="val_accuracy", maximize=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p != path]  # written atomically
