"""A study's identity: which fields define it, and the one check that refuses another study."""

from __future__ import annotations

import dataclasses

import pytest

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError
from tpu_bo.study import identity


def test_identity_ignores_budget_and_device_but_not_the_space():
    a = Config(dataset="mnist", epochs=1)
    assert identity.of(a) == identity.of(
        dataclasses.replace(a, n_iter=30, accelerator="tpu", output_dir="elsewhere")
    )
    assert identity.of(a) != identity.of(
        Config(dataset="mnist", epochs=1, space=["learning_rate:log:1e-5:1e-2"])
    )


def test_data_flags_join_the_identity_only_when_set():
    """Studies journaled before --features existed still match their own identity."""
    assert "features" not in identity.of(Config())
    ours = identity.of(Config(features="a,b", label="y", augment="m:f"))
    assert (ours["features"], ours["label"], ours["augment"]) == ("a,b", "y", "m:f")


def test_pbt_joins_the_identity_so_a_fifo_study_is_not_continued_as_pbt():
    assert "scheduler" not in identity.of(Config())  # older studies still match
    pbt = identity.of(Config(scheduler="pbt", parallel_trials=4))
    assert pbt["scheduler"] == "pbt"
    assert {k: v for k, v in pbt.items() if k != "scheduler"} == identity.of(Config())


def test_the_first_difference_is_named_in_one_sentence():
    stored = identity.of(Config(epochs=3))
    identity.check(
        stored, identity.of(Config(epochs=3, n_iter=40)), place="x", flag=str, remedy="r"
    )
    with pytest.raises(ConfigError) as e:
        current = identity.of(Config(epochs=4))
        identity.check(
            stored, current, place="/tmp/s", flag=lambda k: "output_dir", remedy="fix it"
        )
    assert e.value.flag == "output_dir"
    assert e.value.message == (
        "/tmp/s holds a different study: it was started with epochs=3, this run has 4; fix it."
    )


def test_a_digits_study_from_before_the_shuffled_split_is_refused_in_one_sentence():
    """digits is shuffled before its train/test split (tpu_bo.data.sources.digits_arrays): a
    study journaled with the old order scored its trials on other examples."""
    current = identity.of(Config(dataset="digits"))
    old = {k: v for k, v in current.items() if k != "dataset_version"}
    assert current["dataset_version"] and "dataset_version" not in identity.of(Config(dataset="x"))
    with pytest.raises(ConfigError) as e:
        identity.check(old, current, place="runs/d", flag=lambda k: "output_dir", remedy="r")
    assert e.value.flag == "output_dir"
    assert e.value.message == (
        "runs/d holds a study of digits from another version of tpu_bo, which split digits "
        "differently (it is now shuffled with seed 0 before its train/test split), so its "
        "trials were scored on other examples; start the study again in a new --output_dir "
        "(or under a new --study_name)."
    )
    other = identity.of(Config(dataset="mnist"))  # another dataset: the usual sentence
    with pytest.raises(ConfigError, match="started with dataset='mnist', this run has 'digits'"):
        identity.check(other, current, place="runs/d", flag=str, remedy="r")
