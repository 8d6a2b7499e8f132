"""The console: value formatting, the trial table, the progress line on a terminal or a log."""

from __future__ import annotations

import io

import pytest

from tpu_bo.records import Status, TrialRecord
from tpu_bo.report.console import Reporter, format_value


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.001234, "0.001234"),
        (0.0001234, "1.234e-04"),
        (-0.0001234, "-1.234e-04"),
        (123456.0, "1.235e+05"),
        (99999.0, "1e+05"),  # four significant digits
        (1500.0, "1500"),
        (0.5, "0.5"),
        (0.0, "0"),
        (256, "256"),
        ("adam", "adam"),
        (None, "None"),
        (True, "True"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def record(number, target, status=Status.OK, params=None, **fields):
    params = params or {"learning_rate": 0.00025, "optimizer": "adam"}
    return TrialRecord(
        number=number, status=status, params=params, target=target, seconds=1.25, traces=2, **fields
    )


def rows(stream):
    return stream.getvalue().splitlines()


def test_the_table_has_one_header_and_a_row_per_trial_with_the_best_starred():
    out = io.StringIO()
    reporter = Reporter(["learning_rate", "optimizer"], total=4, stream=out)
    reporter.trial(record(0, 0.875), new_best=True)
    reporter.trial(record(1, 0.5), new_best=False)
    header, rule, first, second = rows(out)
    assert header.split("|")[1:-1] == [
        " trial ",
        "    target ",
        "  status ",
        " seconds ",
        " traces ",
        " learning_rate ",
        " optimizer  ",
    ]
    assert rule == "|" + "|".join("-" * n for n in (7, 11, 9, 9, 8, 15, 12)) + "|"
    cells = [c.strip() for c in first.split("|")[1:-1]]
    assert cells == ["0", "0.8750*", "ok", "1.2", "2", "2.500e-04", "adam"]
    assert [c.strip() for c in second.split("|")[1:-1]][1] == "0.5000"
    assert all(len(r) == len(header) for r in (rule, first, second))
    reporter.header()  # printed once only
    assert len(rows(out)) == 4


def test_a_failed_trial_shows_no_target_and_its_error_on_a_line_below():
    out = io.StringIO()
    reporter = Reporter(["learning_rate"], total=2, stream=out)
    reporter.trial(record(3, None, Status.FAILED, error="loss became nan"), new_best=False)
    row, error = rows(out)[2:]
    assert [c.strip() for c in row.split("|")[1:-1]][:3] == ["3", "-", "failed"]
    assert error == "  trial 3 failed: loss became nan"


def test_long_values_are_cut_to_their_column():
    out = io.StringIO()
    reporter = Reporter(["optimizer"], total=1, stream=out)
    long = TrialRecord(number=0, status=Status.OK, params={"optimizer": "x" * 30}, target=1.0)
    reporter.trial(long, new_best=False)
    assert rows(out)[2].endswith("| " + "x" * 10 + " |")


@pytest.mark.parametrize(
    ("trials", "label"),
    [
        (5, "trial 5 (budget 9)"),
        ([5], "trial 5 (budget 9)"),
        ([2, 3, 4], "trials 2-4 (budget 9)"),
        ([1, 3, 4], "trials 1,3,4 (budget 9)"),
    ],
)
def test_the_progress_line_names_the_running_trials(trials, label):
    out = io.StringIO()
    reporter = Reporter([], total=9, stream=out, progress_every=0.0)
    reporter.start_trial(trials)
    reporter.progress(3, 10, 0.12345, 4.56)
    assert rows(out) == [f"  {label} step 3/10 loss 0.1235 4.6 steps/s"]


def test_off_a_terminal_progress_is_printed_at_most_every_progress_every_seconds():
    out = io.StringIO()
    reporter = Reporter([], total=1, stream=out, progress_every=3600.0)
    reporter.start_trial(0)
    reporter.progress(1, 10, 1.0, 1.0)
    assert out.getvalue() == ""
    reporter.progress_every = 0.0
    reporter.progress(2, 10, 1.0, 1.0)
    reporter.progress(3, 10, 1.0, 1.0)
    assert len(rows(out)) == 2 and "\r" not in out.getvalue()


def test_on_a_terminal_progress_is_redrawn_in_place_and_cleared_before_a_line():
    out = Terminal()
    reporter = Reporter([], total=1, stream=out, progress_every=3600.0)
    reporter.start_trial(0)
    reporter.progress(1, 10, 1.0, 1.0)
    reporter.progress(2, 10, 1.0, 1.0)
    assert out.getvalue().count("\r\033[K") == 2 and "\n" not in out.getvalue()
    reporter.line("done")
    assert out.getvalue().endswith("step 2/10 loss 1.0000 1.0 steps/s\r\033[Kdone\n")
    reporter.line("again")  # nothing live to clear any more
    assert out.getvalue().endswith("\r\033[Kdone\nagain\n")


def test_the_default_studys_table_fits_80_columns():
    out = io.StringIO()
    Reporter(["dropout_2", "learning_rate"], total=15, stream=out).trial(
        record(14, 0.9733, params={"dropout_2": 0.1549, "learning_rate": 0.01}), new_best=True
    )
    assert max(len(r) for r in rows(out)) <= 80


def test_on_a_terminal_a_long_line_wraps_at_words_and_elsewhere_stays_whole(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    line = (
        "time: setup 3.5 s (53%), train 1.6 s (25%), trace 1.1 s (16%), eval 0.2 s (3%), "
        "suggest_wait 0.1 s (2%), checkpoint 0.1 s (2%) of 6.7 s"
    )
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        Reporter(["learning_rate"], total=1, stream=stream).line(line)
    wrapped = rows(terminal)
    assert len(wrapped) == 2 and all(len(r) <= 80 for r in wrapped)
    assert " ".join(r.strip() for r in wrapped) == line  # no word split
    assert wrapped[1].startswith("    ")
    assert rows(log) == [line]
