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
