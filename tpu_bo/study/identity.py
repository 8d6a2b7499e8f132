"""Which study a configuration defines, and the one check that a journal is continued as itself.

A journal written under one identity must not be continued under another: that would mix two
studies in one sampler. The identity is the set of fields that define *what* is searched
(data, model, space, epochs, objective...); budget, output and device settings may change
between sessions. A study records its identity when it is created (:data:`ATTR`) and every
later session, or every other worker of a shared study, is checked against it by
:func:`check`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from tpu_bo.config import Config
from tpu_bo.errors import ConfigError

ATTR = "tpu_bo_identity"  # the study's user attribute holding it
_KEYS = (
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
# Later additions join the identity only when set, so older studies still match.
_WHEN_SET = ("features", "label", "preprocess", "augment")
# What a built-in dataset's name yields, where that changed after studies were journaled under
# it: a study from before scored its trials on other examples, so it must not be continued
# (tpu_bo.data.sources.digits_arrays).
_DATASET_VERSIONS = {"digits": "shuffled with seed 0 before its train/test split"}


def of(config: Config, *, shared: bool = False) -> dict[str, Any]:
    """The fields that define which study ``config`` runs, as JSON values.

    Args:
      config: The configuration.
      shared: A study shared by many workers: ``init_points`` joins, since every worker must
        count the same random trials.
    """
    d = config.to_dict()
    out = {k: d[k] for k in _KEYS}
    out.update({k: d[k] for k in _WHEN_SET if d[k]})
    if config.dataset in _DATASET_VERSIONS:
        out["dataset_version"] = _DATASET_VERSIONS[config.dataset]
    if config.scheduler != "fifo":
        out["scheduler"] = config.scheduler
    if config.patience:  # early stopping shortens trials, so it changes their scores
        out["early_stopping"] = [config.patience, config.min_delta]
    if config.executions_per_trial > 1:  # a trial's score is then a mean over seeds
        out["executions_per_trial"] = config.executions_per_trial
    if config.lr_schedule != "constant":
        out["lr_schedule"] = config.lr_schedule
    if config.initial_weights != "auto":
        out["initial_weights"] = config.initial_weights
    if shared:
        out["init_points"] = config.init_points
    return json.loads(json.dumps(out, sort_keys=True))


def check(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    place: str,
    flag: Callable[[str], str],
    remedy: str,
) -> None:
    """Refuses ``current`` unless it equals the ``stored`` identity, naming the first difference.

    Args:
      stored: The identity the study was created with.
      current: This run's (:func:`of`).
      place: Where the study lives, as the message names it.
      flag: The flag the error names, given the differing key.
      remedy: What the user can do, as the end of the sentence.

    Raises:
      ConfigError: ``{place} holds a different study: it was started with {key}=..., this run
        has ...; {remedy}.``, or, for a study of the same dataset journaled when the dataset's
        name yielded other examples (``dataset_version``), a sentence saying so.
    """
    same_dataset = stored.get("dataset") == current.get("dataset")
    for key in [*current, *(k for k in stored if k not in current)]:
        if stored.get(key) != current.get(key):
            if key == "dataset_version" and current.get(key) and same_dataset:
                name = current["dataset"]
                raise ConfigError(
                    flag("dataset"),
                    f"{place} holds a study of {name} from another version of tpu_bo, which "
                    f"split {name} differently (it is now {current[key]}), so its trials were "
                    "scored on other examples; start the study again in a new --output_dir "
                    "(or under a new --study_name).",
                )
            raise ConfigError(
                flag(key),
                f"{place} holds a different study: it was started with {key}="
                f"{stored.get(key)!r}, this run has {current.get(key)!r}; {remedy}.",
            )
