"""The one frozen configuration of a study.

Every field is a command-line flag of the same name (``space`` is set by ``--param``), so an error
about a field names the flag too. The field's metadata holds the flag's help text, choices and
lower bound (see :mod:`tpu_bo.flag_fields`); ``tpu_bo/main.py`` defines the absl flags from it.
A notebook builds a :class:`Config` directly (or passes keywords to :func:`tpu_bo.run_study`);
the CLI builds it from flags. Either way :meth:`Config.validate` checks it before any device or
data is touched. A ``--space_file`` is read by :mod:`tpu_bo.space_file`.

This module imports neither TensorFlow nor absl.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from tpu_bo.config_rules import OPTIMIZERS as OPTIMIZERS  # re-exported
from tpu_bo.config_rules import check_rules, identity
from tpu_bo.flag_fields import check_field
from tpu_bo.flag_fields import flag_field as _flag
from tpu_bo.flag_fields import flag_name as flag_name  # re-exported: main.py imports it here
from tpu_bo.objectives import infer_maximize
from tpu_bo.space import SearchSpace
from tpu_bo.space_file import read_space_file as read_space_file  # re-exported

ACCELERATORS = ("auto", "tpu", "gpu", "cpu")
# Optimizer name -> (keras.optimizers class, default learning rate).
ACQUISITIONS = ("auto", "ei", "ucb", "poi")
OBJECTIVE_MODES = ("auto", "max", "min")
PRUNERS = ("none", "median", "asha", "hyperband")
SCHEDULERS = ("fifo", "pbt")
SAMPLERS = ("bayes_opt", "tpe", "gp", "random")
SELECT_BEST = ("observed", "posterior")

# The blog post's study: its CNN's second dropout, learning rate (log scale). `dense_units` is
# structural and left out of the default so a default study compiles exactly one program.
DEFAULT_SPACES: dict[str, tuple[str, ...]] = {
    "mnist_cnn": ("dropout_2:float:0.1:0.5", "learning_rate:log:1e-4:1e-2"),
    "mlp": ("dropout:float:0.0:0.5", "learning_rate:log:1e-4:1e-2"),
}
# For a user's own model only the learning rate is known to exist.
FALLBACK_SPACE: tuple[str, ...] = ("learning_rate:log:1e-4:1e-2",)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a study needs; see ``python -m tpu_bo.main --helpfull`` for each field.

    Each field is also a flag of ``python -m tpu_bo.main``: its metadata holds the flag's help
    text, choices and lower bound, and ``main.py`` defines the flags from it.
    """

    # Accelerator.
    accelerator: str = _flag(
        "auto",
        "Where to train: auto tries TPU, then GPU, then CPU, and says which it picked.",
        choices=ACCELERATORS,
    )
    tpu: str = _flag(
        "local",
        "TPU to connect to: 'local' on a TPU VM or Colab, else a TPU or pod-slice name.",
    )
    cpu_replicas: int = _flag(
        1,
        "Split the CPU into this many logical devices under a MirroredStrategy (tests the "
        "multi-replica path without GPUs).",
        lower_bound=1,
    )
    # Data.
    dataset: str = _flag(
        "digits",
        "'digits' (8x8 digits shipped with scikit-learn; no download), a TFDS dataset name "
        "(mnist, cifar10, any supervised one with --features/--label), or "
        "package.module:function returning tf.data.Datasets of (features, label) examples "
        "(see the README's 'Your own data and model').",
    )
    features: str = _flag(
        "",
        "Feature key(s) of the dataset's examples, comma-separated; several make a dict input "
        "(a multi-input model). Default: the dataset's supervised input.",
    )
    label: str = _flag(
        "", "Label key of the dataset's examples. Default: the dataset's supervised label."
    )
    preprocess: str = _flag(
        "",
        "package.module:function mapping one example (features, label) -> (features, label), "
        "run once before the cache (tf ops only, static output shapes).",
    )
    augment: str = _flag(
        "",
        "package.module:function mapping one training example (features, label) -> "
        "(features, label), run after the cache on every epoch, on the host pipeline (tf ops "
        "only, static output shapes).",
    )
    data_dir: str | None = _flag(None, "TFDS data directory (local or gs://); default: TFDS's own.")
    train_split: str = _flag("train[:90%]", "Split trials train on.")
    eval_split: str = _flag(
        "train[90%:]", "Held-out split that scores every trial (the objective)."
    )
    test_split: str = _flag("test", "Split scored once, for the best trial; '' to skip.")
    batch_size: int = _flag(
        128,
        "Global batch (all replicas together); must divide by the number of replicas.",
        lower_bound=1,
    )
    shuffle_buffer: int = _flag(
        0, "Shuffle buffer in examples; 0 = the whole train split.", lower_bound=0
    )
    download: bool = _flag(True, "Let TFDS download and prepare a dataset missing from --data_dir.")
    # Model and training. A Python caller may pass the builder function itself as `model`.
    model: str | Callable[..., Any] = _flag(
        "mnist_cnn",
        "mnist_cnn, mlp, or package.module:function returning a keras.Model from "
        "(hp, input_shape, num_classes): uncompiled for the default classification loss, or "
        "compiled with its own loss and metrics.",
    )
    optimizer: str = _flag(
        "rmsprop", "Optimizer (searchable as a choice param).", choices=OPTIMIZERS
    )
    fixed: Mapping[str, Any] = _flag(
        help="A hyperparameter held fixed for the whole study, NAME=VALUE "
        "(e.g. --fixed=dense_units=256). Repeatable.",
        repeated=True,
        default_factory=dict,
    )
    epochs: int = _flag(5, "Epochs per trial.", lower_bound=1)
    steps_per_execution: int = _flag(
        32, "Training steps per host call; more keeps a TPU fed.", lower_bound=1
    )
    mixed_precision: bool = _flag(False, "Compute in bfloat16 (the TPU's native type).")
    jit_compile: bool = _flag(
        False,
        "Compile steps with XLA on CPU/GPU; rejects dynamic shapes like a TPU. Ignored on a TPU, "
        "which compiles every program with XLA anyway.",
    )
    max_programs: int = _flag(
        4,
        "Compiled programs (one per structure and pack width) kept at once; the oldest is dropped.",
        lower_bound=1,
    )
    parallel_trials: int = _flag(
        1,
        "Trials of one structure trained side by side in one compiled program (a pack), to fill "
        "an accelerator that one small model leaves idle; a slot whose trial ends takes the next "
        "trial at once.",
        lower_bound=1,
    )
    checkpoint_every: int = _flag(
        1,
        "Save each running trial's state every N epochs (copied to the host, then written in "
        "a background thread); a killed study loses at most N epochs of each running trial.",
        lower_bound=1,
    )
    # Study.
    space: SearchSpace | None = _flag(
        None,
        "A searched hyperparameter: NAME:float:LOW:HIGH, NAME:log:LOW:HIGH, NAME:int:LOW:HIGH or "
        "NAME:choice:V1,V2,..., optionally ending in :runtime or :structural. Repeatable. "
        "Default: the model's own space (mnist_cnn: dropout_2:float:0.1:0.5 and "
        "learning_rate:log:1e-4:1e-2).",
        flag="param",
        repeated=True,
    )
    space_file: str = _flag(
        "",
        'JSON file with the search space instead of --param: {"NAME": {"kind": "log", '
        '"low": 1e-4, "high": 1e-2}, ...} or a list of such objects with a "name".',
    )
    init_points: int = _flag(5, "Random trials before the optimizer takes over.", lower_bound=1)
    n_iter: int = _flag(10, "Guided trials after the random ones.", lower_bound=1)
    seed: int = _flag(0, "Seeds the optimizer, data order and trials.", lower_bound=0)
    objective: str = _flag(
        "val_accuracy",
        "Metric a trial is scored by, its best value over the trial's epochs: loss, val_loss or "
        "val_<metric> of any metric the model reports (val_accuracy by default; val_mae, "
        "val_auc... for a model compiled with them).",
    )
    objective_mode: str = _flag(
        "auto",
        "Maximise or minimise the objective; auto infers it from the Keras metric's name "
        "(losses and errors down, accuracy/AUC/precision/recall up) and otherwise asks.",
        choices=OBJECTIVE_MODES,
    )
    acquisition: str = _flag(
        "auto",
        "Acquisition function: auto (ei while the GP finds the scores noise-free, ucb once it "
        "fits noise above 0.5% of their variance), ei (expected improvement), ucb, poi.",
        choices=ACQUISITIONS,
    )
    xi: float = _flag(
        0.0,
        "Exploration of ei and poi, in standard deviations of the scores so far; 0 (plain "
        "expected improvement) measured best in bench/RESULTS.md.",
    )
    kappa: float = _flag(2.576, "Exploration of ucb.")
    domain_reduction: bool = _flag(
        False,
        "Shrink the search bounds around the best point as the study goes (bayes_opt's "
        "SequentialDomainReductionTransformer); float and log parameters only.",
    )
    prune: str = _flag(
        "none",
        "Stop hopeless trials early with Optuna's pruners: median (MedianPruner: below the "
        "median of earlier trials at the same epoch), asha (SuccessiveHalvingPruner) or "
        "hyperband (HyperbandPruner); a pruned slot takes the next trial at once.",
        choices=PRUNERS,
    )
    prune_after: int = _flag(
        5, "Trials that must finish before the median rule prunes anything.", lower_bound=1
    )
    min_epochs: int = _flag(
        1,
        "Epochs every trial runs before it may be pruned (asha/hyperband: the minimum "
        "resource; median: warm-up epochs).",
        lower_bound=1,
    )
    reduction_factor: int = _flag(
        3,
        "Pruning rate of asha and hyperband: 1 in reduction_factor trials goes on at each rung.",
        lower_bound=2,
    )
    scheduler: str = _flag(
        "fifo",
        "How trials spend their epochs: fifo (each runs to --epochs unless --prune stops it) or "
        "pbt (population-based training: the --parallel_trials slots of a pack are a "
        "population; every --pbt_interval epochs the worst --pbt_quantile take the weights "
        "of the best, on the device, and perturb their runtime hyperparameters).",
        choices=SCHEDULERS,
    )
    pbt_interval: int = _flag(2, "PBT: epochs between exploit/explore steps.", lower_bound=1)
    pbt_quantile: float = _flag(
        0.25,
        "PBT: the fraction of the population that takes the weights of a member of the same "
        "fraction at the top (at least one when above 0); 0 turns exploit and explore off.",
    )
    pbt_resample: float = _flag(
        0.25,
        "PBT: the chance that explore draws a runtime hyperparameter afresh from its range "
        "instead of multiplying it by 0.8 or 1.25.",
    )
    sampler: str = _flag(
        "bayes_opt",
        "Which sampler proposes trials: bayes_opt (a Gaussian process from the "
        "bayesian-optimization package; the default), or Optuna's tpe, gp (needs PyTorch: "
        "pip install torch==2.13.0) or random.",
        choices=SAMPLERS,
    )
    output_dir: str = _flag(
        "",
        "Where the journal and summary go (local or gs://); an existing study there is resumed. "
        "Default: runs/<dataset>-<model>.",
    )
    storage: str = _flag(
        "",
        "Optuna storage URL for the study's trials (sqlite:///study.db, postgresql://...); "
        "default: a journal file inside --output_dir.",
    )
    study_name: str = _flag(
        "",
        "Name of the study inside --storage; default: the last component of --output_dir.",
    )
    wait_for_lock: bool = _flag(
        False,
        "When another process is running this study, wait for it to finish instead of exiting.",
    )
    heartbeat_interval: int = _flag(
        10,
        "With a database --storage (many workers): seconds between the heartbeats a worker "
        "records for each of its running trials.",
        lower_bound=1,
    )
    grace_period: int = _flag(
        60,
        "With a database --storage: seconds without a heartbeat after which a running trial "
        "is taken over by another worker, from its last checkpoint in --output_dir.",
        lower_bound=1,
    )
    storage_patience: int = _flag(
        600,
        "With a database --storage: seconds to keep retrying, with backoff, a database that "
        "went away before the worker stops (the study stays in the database).",
        lower_bound=0,
    )

    # After the study.
    final_epochs: int = _flag(
        0,
        "After the study, retrain the best configuration from its seed for this many epochs, "
        "score the test split once, and export final/model.keras and final/saved_model; 0 skips.",
        lower_bound=0,
    )
    final_on_train_and_val: bool = _flag(False, "Train the final model on train + eval splits.")
    select_best: str = _flag(
        "observed",
        "Which trial best/, load_best_model and --final_epochs use: observed (the best score) or "
        "posterior (of the 5 best scores, the best mean of the GP, which fits the scores' "
        "noise: better on smooth noisy objectives, worse next to a learning-rate cliff).",
        choices=SELECT_BEST,
    )
    repeat_best: int = _flag(
        1,
        "Once the budget is spent, run the top candidates until each has N runs with different "
        "seeds (as many candidates as a pack's slots allow), and choose by their mean; 1: off.",
        lower_bound=1,
    )

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
    def resolved_study_name(self) -> str:
        """``study_name``, or the last component of ``output_dir`` (``gs://b/x/mnist``: mnist)."""
        if self.study_name:
            return self.study_name
        path = self.resolved_output_dir
        if _URL.match(path):
            return path.rstrip("/").rsplit("/", 1)[-1]
        return os.path.basename(os.path.abspath(path))

    @property
    def total_trials(self) -> int:
        """The study's budget: random starting points plus guided iterations."""
        return self.init_points + self.n_iter

    @property
    def maximize(self) -> bool:
        """Whether a larger objective is better (``auto``: losses are minimised)."""
        if self.objective_mode == "auto":
            return bool(infer_maximize(self.objective))
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
        for field in dataclasses.fields(self):
            check_field(field, getattr(self, field.name))
        check_rules(self)
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
        """The fields that define *which* study this is (:func:`config_rules.identity`)."""
        return identity(self)
