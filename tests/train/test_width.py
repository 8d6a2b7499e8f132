"""``--parallel_trials=auto`` (tpu_bo.train.width): K chosen from a measured table, recorded in
the header and summary.json, cached in the study so a resumed study does not measure again."""

from __future__ import annotations

import json

import pytest

from tpu_bo import Config, ConfigError, run_study
from tpu_bo.session import ramp
from tpu_bo.train.width import WIDTH_FILE, Measured, choose, measure

from ..session.test_loop import TINY


def test_the_smallest_k_within_ten_percent_of_the_best_rate_is_chosen():
    assert choose({1: 100.0, 2: 105.0, 4: 95.0}) == 1  # 100 >= 0.9 x 105
    assert choose({1: 100.0, 2: 190.0, 4: 200.0}) == 2
    assert choose({1: 100.0, 2: 300.0, 4: None}) == 2  # K=4 ran out of memory
    assert choose({1: None}) == 1
    measured = Measured(2, {1: 100.0, 2: 190.0}, key="k", seconds=1.5)
    assert measured.line() == (
        "parallel_trials=auto: K=2 (trial-steps/s: K=1 100, K=2 190; measured in 1.5 s)"
    )
    again = Measured.from_json(json.loads(json.dumps(measured.to_json())), "k")
    assert (again.chosen, again.table, again.cached) == (2, {1: 100.0, 2: 190.0}, True)
    assert Measured.from_json(measured.to_json(), "another structure") is None
    assert Measured.from_json({"key": "k"}, "k") is None  # damaged: measured again
    short = measure(None, {}, key="k", limit=1, steps=8)  # 2 or 3 trials: nothing to time
    assert (short.chosen, short.table, short.line()) == (
        1, {}, "parallel_trials=auto: K=1 (the study is too short to pack)"
    )  # fmt: skip


def test_auto_measures_records_and_a_resumed_study_reuses_it(tmp_path, capsys):
    fields = {**TINY, "parallel_trials": "auto", "n_iter": 2, "output_dir": str(tmp_path)}
    first = run_study(**fields)
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())["parallel_trials"]
    table = {int(k): v for k, v in summary["table"].items()}
    assert 1 in table and all(v > 0 for v in table.values()) and not summary["cached"]
    k = summary["chosen"]
    assert k == choose(table) and k in table
    assert f"parallel_trials=auto: K={k} (trial-steps/s: K=1 " in printed
    # The ramp (tests/session/test_ramp.py): trial 0 alone, then wider up to K, on the programs
    # the measurement kept. It traced a train function per measured width and an eval function
    # per kept one, so no trial traced.
    widths = {r.width for r in first.trials}
    assert min(first.trials, key=lambda r: r.number).width == 1 and widths <= set(ramp.widths(k))
    assert {r.traces for r in first.trials} == {len(table) + len(ramp.widths(k))}
    # A doubling that did not gain 10% stopped the measurement.
    ks = sorted(table)
    assert ks == [2**i for i in range(len(ks))]
    for a, b in zip(ks[:-2], ks[1:-1], strict=True):
        assert table[b] >= 1.1 * max(table[q] for q in ks if q <= a)

    cached = json.loads((tmp_path / WIDTH_FILE).read_text())
    assert cached["chosen"] == k
    again = run_study(**{**fields, "n_iter": 3})
    assert "cached in the study" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())["parallel_trials"]
    assert summary["cached"] and summary["chosen"] == k
    assert again.traces == 2  # no measuring: one train and one eval function, K's program
    # A number forces K, and nothing is measured.
    forced = run_study(**{**fields, "parallel_trials": 1, "output_dir": str(tmp_path / "one")})
    assert {r.width for r in forced.trials} == {1} and forced.traces == 2
    # The measurement trained on a stream of its own: trial 0, alone on the ramp, is the trial
    # a forced K=1 trains, on the same batches.
    zero = [min(s.trials, key=lambda r: r.number) for s in (first, forced)]
    assert zero[0].params == zero[1].params
    assert [h["val_loss"] for h in zero[0].history] == pytest.approx(
        [h["val_loss"] for h in zero[1].history], rel=1e-5
    )
    assert "parallel_trials" not in json.loads((tmp_path / "one" / "summary.json").read_text())


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"parallel_trials": 0}, "must be auto or a positive whole number, got 0."),
        ({"parallel_trials": "foo"}, "must be auto or a positive whole number, got 'foo'."),
        (
            {"parallel_trials": "auto", "scheduler": "pbt", "epochs": 4},
            "--scheduler=pbt needs a population of a fixed size, not auto",
        ),
    ],
)
def test_bad_parallel_trials_is_one_sentence_naming_the_flag(fields, needle):
    with pytest.raises(ConfigError) as e:
        Config(**fields).validate()
    assert e.value.flag == "parallel_trials" and needle in e.value.message
    assert e.value.message.count(". ") == 0


def test_a_number_given_as_text_is_that_number():
    assert Config(parallel_trials="4").parallel_trials == 4
    assert Config().parallel_trials == "auto" and Config().pack_width == 1
