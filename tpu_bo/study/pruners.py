"""Optuna's pruners for ``--prune``: every pruner is fed one value per epoch of a trial."""

from __future__ import annotations

import optuna

from tpu_bo.config import Config


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    """The pruner ``config.prune`` names; every pruner is fed one value per epoch."""
    if config.prune == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.prune_after, n_warmup_steps=config.min_epochs
        )
    if config.prune == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_epochs, reduction_factor=config.reduction_factor
        )
    if config.prune == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=config.min_epochs,
            max_resource=config.epochs,
            reduction_factor=config.reduction_factor,
        )
    return optuna.pruners.NopPruner()
