"""The one frozen configuration of a study.

Every field has the same name as its command-line flag in ``tpu_bo/main.py``, so an error about
a field names the flag too. A notebook builds a :class:`Config` directly (or passes keywords to
:func:`tpu_bo.run_study`); the CLI builds it from flags. Either way :meth:`Config.validate`
checks it before any device or data is touched.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from tpu_bo.errors import ConfigError
from tpu_bo.space import TRAINER_PARAMS, SearchSpace

ACCELERATORS = ("auto", "tpu", "gpu", "cpu")
OPTIMIZERS = ("rmsprop", "adam", "sgd", "adamw")
ACQUISITIONS = ("ei", "ucb", "poi")
OBJECTIVES = ("val_accuracy", "val_loss", "loss")
OBJECTIVE_MODES = ("auto", "max", "min")
PRUNERS = ("none", "median")

# The blog post's study: its CNN's second dropout, learning rate (log scale). `dense_units` is
# structural and left out of the default so a default study compiles exactly one program.
DEFAULT_SPACES: dict[str, tuple[str, ...]] = {
    "mnist_cnn": ("dropout_2:float:0.1:0.5", "learning_rate:log:1e-4:1e-2"),
    "mlp": ("dropout:float:0.0:0.5", "learning_rate:log:1e-4:1e-2"),
}
# For a user's own model only the learning rate is known to exist.
FALLBACK_SPACE: tuple[str, ...] = ("learning_rate:log:1e-4:1e-2",)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a study needs; see ``python -m tpu_bo.main --helpfull`` for each field."""

    # Accelerator.
    accelerator: str = "auto"
    tpu: str = "local"
    cpu_replicas: int = 1
    # Data.
    dataset: str = "digits"
    data_dir: str | None = None
    train_split: str = "train[:90%]"
    eval_split: str = "train[90%:]"
    test_split: str = "test"
    batch_size: int = 128
    shuffle_buffer: int = 0
    download: bool = True
    # Model and training.
    model: str | Callable[..., Any] = "mnist_cnn"
    optimizer: str = "rmsprop"
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 5
    steps_per_execution: int = 32
    mixed_precision: bool = False
    jit_compile: bool = False
    max_programs: int = 4
    parallel_trials: int = 1
    # Study.
    space: SearchSpace | None = None
    space_file: str = ""
    init_points: int = 5
    n_iter: int = 10
    seed: int = 0
    objective: str = "val_accuracy"
    objective_mode: str = "auto"
    acquisition: str = "ei"
    xi: float = 0.0
    kappa: float = 2.576
    domain_reduction: bool = False
    prune: str = "none"
    prune_after: int = 5
    output_dir: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed", dict(self.fixed))
        if self.space is not None and not isinstance(self.space, SearchSpace):
            object.__setattr__(self, "space", SearchSpace.from_value(self.space))

    @property
    def model_name(self) -> str:
        """The model as a string: a built-in name or ``module:function``."""
        if callable(self.model):
            return f"{self.model.__module__}:{self.model.__qualname__}"
        return self.model

    @property
    def resolved_output_dir(self) -> str:
        """``output_dir``, or ``runs/<dataset>-<model>`` when it is empty."""
        if self.output_dir:
            return self.output_dir
        model = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model_name)
        return os.path.join("runs", f"{self.dataset}-{model}")

    @property
    def total_trials(self) -> int:
        """The study's budget: random starting points plus guided iterations."""
        return self.init_points + self.n_iter

    @property
    def maximize(self) -> bool:
        """Whether a larger objective is better (``auto``: losses are minimised)."""
        if self.objective_mode == "auto":
            return not self.objective.endswith("loss")
        return self.objective_mode == "max"

    def resolved_space(self) -> SearchSpace:
        """The search space: the given one, the ``space_file``'s, or the model's default."""
        if self.space is not None:
            return self.space
        if self.space_file:
            return read_space_file(self.space_file)
        return SearchSpace.parse(DEFAULT_SPACES.get(self.model_name, FALLBACK_SPACE))

    def validate(self) -> Config:
        """Checks every field and the rules that span fields.

        Returns:
          ``self``, so calls can be chained.

        Raises:
          ConfigError: naming the first field at fault.
        """
        _choice("accelerator", self.accelerator, ACCELERATORS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("acquisition", self.acquisition, ACQUISITIONS)
        _choice("objective", self.objective, OBJECTIVES)
        _choice("objective_mode", self.objective_mode, OBJECTIVE_MODES)
        _choice("prune", self.prune, PRUNERS)
        _positive("prune_after", self.prune_after)
        if self.space is not None and self.space_file:
            raise ConfigError(
                "space_file", "give the space by --param or by --space_file, not both."
            )
        for name in (
            "cpu_replicas",
            "batch_size",
            "epochs",
            "steps_per_execution",
            "max_programs",
            "parallel_trials",
        ):
            _positive(name, getattr(self, name))
        _positive("n_iter", self.n_iter)
        if self.init_points < 1:
            raise ConfigError("init_points", f"must be at least 1, got {self.init_points}.")
        if self.shuffle_buffer < 0:
            raise ConfigError(
                "shuffle_buffer", f"must be >= 0 (0 = whole split), got {self.shuffle_buffer}."
            )
        if self.xi < 0:
            raise ConfigError("xi", f"must be >= 0, got {self.xi}.")
        if self.kappa < 0:
            raise ConfigError("kappa", f"must be >= 0, got {self.kappa}.")
        for name in ("dataset", "train_split", "eval_split"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(name, "must not be empty.")
        if self.cpu_replicas > 1 and self.accelerator not in ("cpu", "auto"):
            raise ConfigError(
                "cpu_replicas",
                f"only applies to --accelerator=cpu or auto, not {self.accelerator}.",
            )
        if self.cpu_replicas > 1 and self.batch_size % self.cpu_replicas:
            raise ConfigError(
                "batch_size",
                f"the global batch {self.batch_size} does not divide by the "
                f"{self.cpu_replicas} CPU replicas; use a multiple of {self.cpu_replicas}.",
            )
        space = self.resolved_space()
        clash = sorted(set(self.fixed) & set(space.names))
        if clash:
            raise ConfigError("fixed", f"{clash[0]!r} is both fixed and searched; drop one.")
        if "optimizer" in self.fixed and self.fixed["optimizer"] not in OPTIMIZERS:
            raise ConfigError("fixed", f"optimizer must be one of {', '.join(OPTIMIZERS)}.")
        if "optimizer" in space.names:
            bad = [c for c in space["optimizer"].choices if c not in OPTIMIZERS]
            if space["optimizer"].kind != "choice" or bad:
                raise ConfigError(
                    "param", f"optimizer must be a choice among {', '.join(OPTIMIZERS)}."
                )
        if self.domain_reduction and any(p.kind not in ("float", "log") for p in space.params):
            raise ConfigError(
                "domain_reduction", "works only when every searched parameter is float or log."
            )
        for name in TRAINER_PARAMS & set(space.names) - {"optimizer"}:
            if space[name].kind == "choice" and not all(
                isinstance(c, (int, float)) for c in space[name].choices
            ):
                raise ConfigError("param", f"{name} must take numeric values.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the configuration, with the space resolved."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["model"] = self.model_name
        out["space"] = self.resolved_space().to_list()
        out["fixed"] = dict(self.fixed)
        return out

    def to_json(self) -> str:
        """The configuration as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def study_identity(self) -> dict[str, Any]:
        """The fields that define *which* study this is.

        A journal written under one identity must not be continued under another: that
        would mix two studies in one optimizer. Budget, output and device settings may change.
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
        d = self.to_dict()
        return {k: d[k] for k in keys}


def read_space_file(path: str) -> SearchSpace:
    """Reads a search space from a JSON file (local or ``gs://``).

    The file holds either a mapping from name to a parameter (``{"learning_rate": {"kind":
    "log", "low": 1e-4, "high": 1e-2}, "dense_units": ["choice", [128, 256]]}``) or a list of
    parameters each with a ``name`` (the form ``config.json`` records).

    Raises:
      ConfigError: naming ``space_file``, for an unreadable file or an invalid space.
    """
    try:
        if "://" in path:
            import tensorflow as tf

            with tf.io.gfile.GFile(path, "r") as f:
                text = f.read()
        else:
            with open(path) as f:
                text = f.read()
    except Exception as e:  # noqa: BLE001 - OSError locally, tf.errors on gs://
        raise ConfigError("space_file", f"cannot read {path}: {e}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError("space_file", f"{path} is not valid JSON ({e}).") from None
    try:
        if isinstance(data, list):
            if not all(isinstance(d, Mapping) and "name" in d for d in data):
                raise ConfigError("param", "every entry of a list needs a 'name'.")
            return SearchSpace.from_list(data)
        if isinstance(data, Mapping):
            return SearchSpace.from_value(data)
    except ConfigError as e:
        raise ConfigError("space_file", f"{path}: {e.message}") from None
    raise ConfigError("space_file", f"{path} must hold a JSON object or list of parameters.")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(allowed)}.")


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(name, f"must be a positive whole number, got {value!r}.")
