"""The rules of a :class:`tpu_bo.config.Config` that span fields, and the optimizer table.

:meth:`Config.validate` checks each field's choices and bound, then :func:`check_rules`. Each
rule raises a :class:`ConfigError` naming the flag at fault. This module imports neither
TensorFlow nor absl.
"""

from __future__ import annotations

import re
from typing import Any

from tpu_bo.errors import ConfigError
from tpu_bo.objectives import infer_maximize
from tpu_bo.space import TRAINER_PARAMS, SearchSpace

# Optimizer name -> (keras.optimizers class, default learning rate).
OPTIMIZERS: dict[str, tuple[str, float]] = {
    "rmsprop": ("RMSprop", 1e-3),
    "adam": ("Adam", 1e-3),
    "sgd": ("SGD", 1e-2),
    "adamw": ("AdamW", 1e-3),
}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_rules(config: Any) -> None:
    """Every rule between fields, then those between the search space and the fields."""
    if config.space is not None and config.space_file:
        raise ConfigError("space_file", "give the space by --param or by --space_file, not both.")
    check_objective(config)
    if config.xi < 0:
        raise ConfigError("xi", f"must be >= 0, got {config.xi}.")
    if config.kappa < 0:
        raise ConfigError("kappa", f"must be >= 0, got {config.kappa}.")
    for name in ("dataset", "train_split", "eval_split"):
        if not str(getattr(config, name)).strip():
            raise ConfigError(name, "must not be empty.")
    if config.cpu_replicas > 1 and config.accelerator not in ("cpu", "auto"):
        raise ConfigError(
            "cpu_replicas",
            f"only applies to --accelerator=cpu or auto, not {config.accelerator}.",
        )
    if config.cpu_replicas > 1 and config.batch_size % config.cpu_replicas:
        raise ConfigError(
            "batch_size",
            f"the global batch {config.batch_size} does not divide by the "
            f"{config.cpu_replicas} CPU replicas; use a multiple of {config.cpu_replicas}.",
        )
    if config.prune != "none" and config.min_epochs > config.epochs:
        raise ConfigError(
            "min_epochs",
            f"must not exceed --epochs={config.epochs} when pruning, got {config.min_epochs}.",
        )
    if config.storage and not _URL.match(config.storage):
        raise ConfigError(
            "storage",
            f"{config.storage!r} is not a storage URL; give one such as sqlite:///study.db "
            "or postgresql://user@host/db.",
        )
    if config.grace_period <= config.heartbeat_interval:
        raise ConfigError(
            "grace_period",
            f"must be longer than --heartbeat_interval={config.heartbeat_interval} s, or live "
            f"workers' trials would look abandoned; got {config.grace_period}.",
        )
    check_scheduler(config)
    check_space(config, config.resolved_space())


def check_scheduler(config: Any) -> None:
    """The rules of ``--scheduler=pbt`` (:mod:`tpu_bo.pbt`)."""
    for name in ("pbt_quantile", "pbt_resample"):
        value, top = getattr(config, name), 0.5 if name == "pbt_quantile" else 1.0
        if not 0 <= value <= top:
            raise ConfigError(name, f"must lie in [0, {top}], got {value}.")
    if config.scheduler != "pbt":
        return
    if config.parallel_trials < 4:
        raise ConfigError(
            "parallel_trials",
            "--scheduler=pbt needs a population of at least 4: the pack's slots are the "
            f"population, so set --parallel_trials to 4 or more (got {config.parallel_trials}).",
        )
    if config.pbt_interval >= config.epochs:
        raise ConfigError(
            "pbt_interval",
            f"must be below --epochs={config.epochs}, or PBT never exploits; got "
            f"{config.pbt_interval}.",
        )
    clashes = {
        "prune": (config.prune != "none", "PBT replaces pruning: its worst members take "
                  "the best ones' weights; use --prune=none"),
        "repeat_best": (config.repeat_best > 1, "a PBT member's result depends on its "
                        "population, so a repeat alone means nothing; use 1"),
        "select_best": (config.select_best != "observed", "the GP's posterior models a "
                        "trial's first values, not a PBT member's schedule; use observed"),
        "final_epochs": (config.final_epochs > 0, "PBT's result is the best member's "
                         "weights (best/); a retrain from scratch would not follow its "
                         "schedule; use 0"),
    }  # fmt: skip
    for flag, (clash, why) in clashes.items():
        if clash:
            raise ConfigError(flag, f"does not go with --scheduler=pbt: {why}.")


def identity(config: Any) -> dict[str, Any]:
    """The fields that define *which* study this is.

    A journal written under one identity must not be continued under another: that would mix
    two studies in one optimizer. Budget, output and device settings may change.
    """
    keys = (
        "dataset",
        "train_split",
        "eval_split",
        "batch_size",
        "model",
        "optimizer",
        "fixed",
        "epochs",
        "space",
        "mixed_precision",
        "objective",
        "objective_mode",
    )
    d = config.to_dict()
    out = {k: d[k] for k in keys}
    # Later additions join the identity only when set, so older studies still match.
    out.update({k: d[k] for k in ("features", "label", "preprocess", "augment") if d[k]})
    if config.scheduler != "fifo":
        out["scheduler"] = config.scheduler
    return out


def check_objective(config: Any) -> None:
    if config.objective != "loss" and not config.objective.startswith("val_"):
        raise ConfigError(
            "objective",
            f"{config.objective!r} is not a reported metric; use loss, val_loss or "
            "val_<metric> (e.g. val_accuracy, val_mae, val_auc).",
        )
    if config.objective_mode == "auto" and infer_maximize(config.objective) is None:
        raise ConfigError(
            "objective_mode",
            f"cannot tell whether {config.objective} improves up or down from its name; pass "
            "--objective_mode=max or --objective_mode=min.",
        )
    if config.final_on_train_and_val and not config.final_epochs:
        raise ConfigError("final_on_train_and_val", "needs --final_epochs > 0.")


def check_space(config: Any, space: SearchSpace) -> None:
    """The rules between the search space and the other fields."""
    clash = sorted(set(config.fixed) & set(space.names))
    if clash:
        raise ConfigError("fixed", f"{clash[0]!r} is both fixed and searched; drop one.")
    if "optimizer" in config.fixed and not _is_optimizer(config.fixed["optimizer"]):
        raise ConfigError("fixed", f"optimizer must be one of {', '.join(OPTIMIZERS)}.")
    if "optimizer" in space.names:
        bad = [c for c in space["optimizer"].choices if not _is_optimizer(c)]
        if space["optimizer"].kind != "choice" or bad:
            raise ConfigError("param", f"optimizer must be a choice among {', '.join(OPTIMIZERS)}.")
    if config.domain_reduction and any(p.kind not in ("float", "log") for p in space.params):
        raise ConfigError(
            "domain_reduction", "works only when every searched parameter is float or log."
        )
    for name in TRAINER_PARAMS & set(space.names) - {"optimizer"}:
        if space[name].kind == "choice" and not all(
            isinstance(c, (int, float)) for c in space[name].choices
        ):
            raise ConfigError("param", f"{name} must take numeric values.")


def _is_optimizer(value: Any) -> bool:
    return isinstance(value, str) and value in OPTIMIZERS
