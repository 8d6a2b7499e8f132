"""Observers: the multiplexer's order, the console, TensorBoard events and summary.png."""

from __future__ import annotations

import io
from types import SimpleNamespace

import tensorflow as tf

from tpu_bo.records import Status, Summary, TrialRecord
from tpu_bo.report import plots
from tpu_bo.report.console import Console, Reporter
from tpu_bo.report.observers import Observer, Observers
from tpu_bo.report.plots import SummaryPlot
from tpu_bo.report.tensorboard import TensorBoard
from tpu_bo.search.space import SearchSpace

SPACE = SearchSpace.from_value({"learning_rate": ("log", 1e-4, 1e-2)})


class Recorder(Observer):
    """Notes every hook called, in a log shared with other recorders."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def on_study_start(self, study):
        self.log.append((self.name, "study_start", study))

    def on_trial_start(self, trial):
        self.log.append((self.name, "trial_start", trial))

    def on_progress(self, step, steps, loss, steps_per_second):
        self.log.append((self.name, "progress", (step, steps, loss, steps_per_second)))

    def on_epoch(self, trial, metrics):
        self.log.append((self.name, "epoch", (trial, dict(metrics))))

    def on_trial_end(self, record, *, new_best):
        self.log.append((self.name, "trial_end", (record, new_best)))

    def on_study_end(self, summary):
        self.log.append((self.name, "study_end", summary.trials))


def summary(**fields):
    """A study's Summary with nothing in it but ``fields``."""
    empty = dict(
        best_trial=None, best_target=None, objective="val_accuracy (max, best epoch)",
        best_params={}, best_epoch=None, test=None, counts={}, trials=0, budget=1,
        training_steps=0, best_at_edge=[], utilization_this_session=None,
        seconds_this_session=0.0, time_this_session={},
    )  # fmt: skip
    return Summary(**{**empty, **fields})


def record(number, target=0.5, status=Status.OK):
    return TrialRecord(number=number, status=status, params={"learning_rate": 1e-3}, target=target)


def test_observers_call_every_hook_of_each_observer_in_order():
    log = []
    both = Observers([Recorder("a", log), Observer(), Recorder("b", log)])
    both.on_study_start("study")
    both.on_trial_start("trial")
    both.on_progress(1, 10, 0.5, 3.0)
    both.on_epoch("trial", {"epoch": 1})
    both.on_trial_end("record", new_best=True)
    both.on_study_end(summary(trials=1))
    calls = [
        ("study_start", "study"),
        ("trial_start", "trial"),
        ("progress", (1, 10, 0.5, 3.0)),
        ("epoch", ("trial", {"epoch": 1})),
        ("trial_end", ("record", True)),
        ("study_end", 1),
    ]
    assert log == [(name, *call) for call in calls for name in ("a", "b")]


def test_the_base_observer_does_nothing():
    o = Observer()
    assert o.on_study_start(None) is None and o.on_trial_end(None, new_best=False) is None


def test_the_console_prints_a_row_per_trial_and_names_the_running_trials():
    out = io.StringIO()
    console = Console(Reporter(["learning_rate"], total=5, stream=out, progress_every=0.0))
    console.on_trial_start(SimpleNamespace(number=3))
    console.on_trial_start(SimpleNamespace(number=2))
    console.on_progress(1, 4, 0.25, 2.0)
    console.on_trial_end(record(2, 0.75), new_best=True)
    console.on_progress(2, 4, 0.25, 2.0)
    console.on_trial_end(record(3, None, Status.FAILED), new_best=False)
    console.on_trial_end(record(0), new_best=False)  # a replayed trial, never started here
    lines = out.getvalue().splitlines()
    assert lines[0] == "  trials 2-3 (budget 5) step 1/4 loss 0.2500 2.0 steps/s"
    assert lines[3].split("|")[1:4] == ["     2 ", "   0.7500* ", "      ok "]
    assert lines[4] == "  trial 3 (budget 5) step 2/4 loss 0.2500 2.0 steps/s"
    assert [ln.split("|")[1].strip() for ln in lines[5:]] == ["3", "0"]


def scalars(directory):
    found = []
    for path in tf.io.gfile.glob(f"{directory}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name != "hparams":
                    found.append((v.tag, event.step, float(tf.make_ndarray(v.tensor))))
    return sorted(found)


def test_tensorboard_replays_a_resumed_history_then_logs_each_epoch(tmp_path):
    tb = TensorBoard(str(tmp_path), SPACE)
    params = {"learning_rate": 1e-3}
    resume = SimpleNamespace(history=[{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}])
    resumed = SimpleNamespace(number=4, params=params, resume=resume)
    fresh = SimpleNamespace(number=5, params=params, resume=None)
    tb.on_trial_start(resumed)
    tb.on_trial_start(fresh)
    tb.on_epoch(resumed, {"epoch": 3, "loss": 1.0})
    tb.on_epoch(fresh, {"epoch": 1, "loss": 3.0})
    tb.on_trial_end(record(4), new_best=False)
    tb.on_epoch(resumed, {"epoch": 4, "loss": 0.5})  # ended: not logged
    tb.on_study_end(summary())
    root = tmp_path / "tensorboard"
    assert scalars(root / "trial_0004") == [("loss", 1, 2.0), ("loss", 2, 1.5), ("loss", 3, 1.0)]
    assert scalars(root / "trial_0005") == [("loss", 1, 3.0)]
    assert tf.io.gfile.glob(f"{root}/events.out.tfevents.*")  # the HParams config


def test_the_summary_plot_is_written_at_the_end_only_when_a_trial_ended(tmp_path):
    path = tmp_path / "summary.png"
    plot = SummaryPlot(str(path), SPACE, objective="val_accuracy", maximize=True)
    plot.on_study_end(summary())
    assert not path.exists()
    plot.on_trial_end(record(1, 0.9), new_best=True)
    plot.on_trial_end(record(0, 0.4), new_best=False)
    assert not path.exists()
    plot.on_study_end(summary())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r.number for r in plot.records] == [1, 0]


def test_the_summary_plot_gets_every_record_as_a_dict_by_number(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(plots, "write_summary_plot", lambda *a, **k: calls.append((a, k)))
    plot = SummaryPlot("out.png", SPACE, objective="val_loss", maximize=False)
    for n in (2, 0, 1):
        plot.on_trial_end(record(n), new_best=False)
    plot.on_study_end(summary(pbt={"best": {"trial": 1}}))  # a PBT study's best member
    (((path, records, space), kwargs),) = calls
    expected = {"objective": "val_loss", "maximize": False, "pbt": {"trial": 1}}
    assert (path, space, kwargs) == ("out.png", SPACE, expected)
    assert [r["number"] for r in records] == [0, 1, 2] and records[0]["status"] == "ok"
