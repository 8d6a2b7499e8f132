"""Optuna's pruners for --prune."""

from __future__ import annotations

import types

import optuna
import pytest

from tpu_bo.study.pruners import make_pruner


def settings(**fields):
    base = dict(prune="none", prune_after=2, min_epochs=1, reduction_factor=3, epochs=4)
    return types.SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(
    "prune, kind",
    [
        ("none", optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
        ("asha", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
    ],
)
def test_every_pruner(prune, kind):
    assert isinstance(make_pruner(settings(prune=prune)), kind)
