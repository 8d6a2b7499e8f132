"""The one frozen configuration of a study: its fields, their flags, and the rules between them.

Every field is a command-line flag of the same name (``space`` is set by ``--param``), so an error
about a field names the flag too. A field's metadata holds its flag's help text, choices and
lower bound, and the heading of ``--help`` it is listed under (:func:`flag_field`,
:data:`FLAG_GROUPS`); ``tpu_bo/main.py`` defines the absl flags from it, and
:func:`check_field` enforces the same choices and bound on a value set from Python.

A notebook builds a :class:`Config` directly (or passes keywords to :func:`tpu_bo.run_study`);
the CLI builds it from flags. Either way :meth:`Config.validate` checks it before any device or
data is touched: each field's choices and bound, then the rules that span fields (space vs space
file, objective and mode, ``--cpu_replicas`` vs accelerator and batch, pruning, the storage URL,
PBT) and those between the search space and the fields (fixed vs searched, optimizer choices,
domain reduction, numeric trainer parameters). Each raises one :class:`ConfigError` naming the
flag at fault.

Also here: :data:`OPTIMIZERS`, the model optimizers ``--optimizer`` names; :func:`import_function`,
which resolves a flag naming ``package.module:function`` (``--model``, ``--dataset``,
``--preprocess``, ``--augment``); and :func:`read_space_file` (``--space_file``).

This module imports neither TensorFlow (but to read a ``gs://`` space file) nor absl.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from tpu_bo.errors import ConfigError
from tpu_bo.objectives import infer_maximize
from tpu_bo.search.space import TRAINER_PARAMS, SearchSpace

ACCELERATORS = ("auto", "tpu", "gpu", "cpu")
ACQUISITIONS = ("auto", "ei", "logei", "ucb", "poi")
OBJECTIVE_MODES = ("auto", "max", "min")
PRUNERS = ("none", "median", "asha", "hyperband")
SCHEDULERS = ("fifo", "pbt")
SAMPLERS = ("bayes_opt", "tpe", "gp", "random")
SELECT_BEST = ("observed", "posterior")
# The model's optimizer (--optimizer): name -> (keras.optimizers class, default learning rate).
OPTIMIZERS: dict[str, tuple[str, float]] = {
    "rmsprop": ("RMSprop", 1e-3),
    "adam": ("Adam", 1e-3),
    "sgd": ("SGD", 1e-2),
    "adamw": ("AdamW", 1e-3),
}
# The optimizer of a model compiled without one, when --optimizer is not given.
DEFAULT_OPTIMIZER = "rmsprop"

# The blog post's study: its CNN's second dropout, learning rate (log scale). `dense_units` is
# structural and left out of the default so a default study compiles exactly one program.
DEFAULT_SPACES: dict[str, tuple[str, ...]] = {
    "mnist_cnn": ("dropout_2:float:0.1:0.5", "learning_rate:log:1e-4:1e-2"),
    "mlp": ("dropout:float:0.0:0.5", "learning_rate:log:1e-4:1e-2"),
}
# For a user's own model only the learning rate is known to exist.
FALLBACK_SPACE: tuple[str, ...] = ("learning_rate:log:1e-4:1e-2",)

# The headings of ``--help`` and of docs/flags.md, in their order; every field names one.
FLAG_GROUPS = (
    "data",
    "model and space",
    "budget and schedulers",
    "sampler",
    "device",
    "outputs and resume",
    "shared studies",
    "final model",
)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def flag_field(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: Collection[str] = (),
    lower_bound: int | None = None,
    flag: str | None = None,
    repeated: bool = False,
    group: str = "",
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field together with its command-line flag's metadata.

    Args:
      default: The field's default, and its flag's.
      help: The flag's help text (``--helpfull``).
      choices: The allowed values: the flag is an enum and :func:`check_field` checks them.
      lower_bound: The least allowed whole number, for the flag and for :func:`check_field`.
      flag: The flag's name when it differs from the field's (``space`` is set by ``--param``).
      repeated: The flag is a repeatable string (``--param``, ``--fixed``) whose values the CLI
        parses into the field.
      group: The heading, one of :data:`FLAG_GROUPS`, the flag is listed under in ``--help``
        and docs/flags.md.
      default_factory: As for :func:`dataclasses.field`.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices),
        "lower_bound": lower_bound,
        "flag": flag,
        "repeated": repeated,
        "group": group,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    """The name of the command-line flag that sets ``field`` (its own name but for ``space``)."""
    return field.metadata.get("flag") or field.name


def check_field(field: dataclasses.Field, value: Any) -> None:
    """Checks ``value`` against the choices and lower bound in ``field``'s metadata (``None``
    passes where it is the default).

    Raises:
      ConfigError: naming the field, for a value outside its choices or below its bound.
    """
    choices = field.metadata.get("choices")
    unset = value is None and field.default is None  # --optimizer: the compiled one
    if choices and value not in choices and not unset:
        raise ConfigError(field.name, f"{value!r} is not one of {', '.join(choices)}.")
    lower = field.metadata.get("lower_bound")
    if lower is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < lower:
        if lower == 1:
            raise ConfigError(field.name, f"must be a positive whole number, got {value!r}.")
        raise ConfigError(field.name, f"must be a whole number >= {lower}, got {value!r}.")


def import_function(spec: str, flag: str) -> Callable[..., Any]:
    """The function named by ``package.module:function``, or a ConfigError naming ``flag``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(flag, f"{spec!r} is not package.module:function.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(flag, f"cannot import module {module_name!r} ({e}).") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(flag, f"module {module_name!r} has no function {attr!r}.")
    return function


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a study needs; see ``python -m tpu_bo.main --help`` for each field.

    Each field is also a flag of ``python -m tpu_bo.main``: its metadata holds the flag's help
    text, choices and lower bound, and ``main.py`` defines the flags from it.
    """

    # Accelerator.
    accelerator: str = flag_field(
        "auto",
        "Where to train: auto tries TPU, then GPU, then CPU, and says which it picked.",
        choices=ACCELERATORS,
        group="device",
    )
    tpu: str = flag_field(
        "local",
        "TPU to connect to: 'local' on a TPU VM or Colab, else a TPU or pod-slice name.",
        group="device",
    )
    cpu_replicas: int = flag_field(
        1,
        "Split the CPU into this many logical devices under a MirroredStrategy (tests the "
        "multi-replica path without GPUs).",
        lower_bound=1,
        group="device",
    )
    # Data.
    dataset: str = flag_field(
        "digits",
        "'digits' (8x8 digits shipped with scikit-learn; no download), a TFDS dataset name "
        "(mnist, cifar10, any supervised one with --features/--label), or "
        "package.module:function returning tf.data.Datasets of (features, label) examples "
        "(see docs/data_and_models.md).",
        group="data",
    )
    features: str = flag_field(
        "",
        "Feature key(s) of the dataset's examples, comma-separated; several make a dict input "
        "(a multi-input model). Default: the dataset's supervised input.",
        group="data",
    )
    label: str = flag_field(
        "",
        "Label key of the dataset's examples. Default: the dataset's supervised label.",
        group="data",
    )
    preprocess: str = flag_field(
        "",
        "package.module:function mapping one example (features, label) -> (features, label), "
        "run once before the cache (tf ops only, static output shapes).",
        group="data",
    )
    augment: str = flag_field(
        "",
        "package.module:function mapping one training example (features, label) -> "
        "(features, label), run after the cache on every epoch, on the host pipeline (tf ops "
        "only, static output shapes).",
        group="data",
    )
    data_dir: str | None = flag_field(
        None,
        "TFDS data directory (local or gs://); default: TFDS's own.",
        group="data",
    )
    train_split: str = flag_field("train[:90%]", "Split trials train on.", group="data")
    eval_split: str = flag_field(
        "train[90%:]",
        "Held-out split that scores every trial (the objective).",
        group="data",
    )
    test_split: str = flag_field(
        "test", "Split scored once, for the best trial; '' to skip.", group="data"
    )
    batch_size: int = flag_field(
        128,
        "Global batch (all replicas together); must divide by the number of replicas.",
        lower_bound=1,
        group="data",
    )
    shuffle_buffer: int = flag_field(
        0,
        "Shuffle buffer in examples; 0 = the whole train split.",
        lower_bound=0,
        group="data",
    )
    download: bool = flag_field(
        True,
        "Let TFDS download and prepare a dataset missing from --data_dir.",
        group="data",
    )
    # Model and training. A Python caller may pass the builder function itself as `model`.
    model: str | Callable[..., Any] = flag_field(
        "mnist_cnn",
        "mnist_cnn, mlp, or package.module:function returning a keras.Model from "
        "(hp, input_shape, num_classes): uncompiled for the default classification loss, or "
        "compiled with its own loss and metrics.",
        group="model and space",
    )
    initial_weights: str = flag_field(
        "auto",
        "Where a trial's initial weights come from: auto (a variable the builder assigned "
        "after creating it, e.g. pretrained or loaded weights, keeps that value; the others "
        "are drawn from the trial's seed), seeded (every variable drawn from the seed) or "
        "as_built (every variable as the builder returned it).",
        choices=("auto", "seeded", "as_built"),
        group="model and space",
    )
    optimizer: str | None = flag_field(
        None,
        "The model's optimizer: by default the one the builder compiled the model with, else "
        "rmsprop; given (or searched as an optimizer choice param), it replaces the compiled one.",
        choices=OPTIMIZERS,
        group="model and space",
    )
    lr_schedule: str = flag_field(
        "constant",
        "The learning rate's shape over a trial's steps: constant, or cosine / linear decay to "
        "the runtime hyperparameter decay_floor (a fraction of the rate, default 0) by the last "
        "step of --epochs; any shape starts with a linear warmup over the runtime "
        "hyperparameter warmup_steps (default 0). Tune either with --param, in one program.",
        choices=("constant", "cosine", "linear"),
        group="model and space",
    )
    fixed: Mapping[str, Any] = flag_field(
        help="A hyperparameter held fixed for the whole study, NAME=VALUE "
        "(e.g. --fixed=dense_units=256). Repeatable.",
        repeated=True,
        default_factory=dict,
        group="model and space",
    )
    epochs: int = flag_field(5, "Epochs per trial.", lower_bound=1, group="budget and schedulers")
    steps_per_execution: int = flag_field(
        32,
        "Training steps per host call; more keeps a TPU fed.",
        lower_bound=1,
        group="device",
    )
    mixed_precision: bool = flag_field(
        False, "Compute in bfloat16 (the TPU's native type).", group="device"
    )
    jit_compile: bool = flag_field(
        False,
        "Compile steps with XLA on CPU/GPU; rejects dynamic shapes like a TPU. Ignored on a TPU, "
        "which compiles every program with XLA anyway.",
        group="device",
    )
    max_programs: int = flag_field(
        4,
        "Compiled programs (one per structure and pack width) kept at once; the oldest is dropped.",
        lower_bound=1,
        group="device",
    )
    parallel_trials: str | int = flag_field(
        "auto",
        "Trials of one structure trained side by side in one compiled program (a pack), to fill "
        "an accelerator that one small model leaves idle; a slot whose trial ends takes the next "
        "trial at once. auto: time a few steps at K = 1, 2, 4... before the study and take the "
        "smallest K within 10% of the most trial-steps per second (cached in the study); a "
        "number forces K.",
        group="device",
    )
    ramp: bool = flag_field(
        True,
        "With --parallel_trials=auto: start the study one trial at a time and double the "
        "trials a pack trains as trials are told (1, then 2 after 1, 4 after 3, 8 after 7...) "
        "up to the measured K, so the first scores come early and the sampler and pruners "
        "guide the wider packs; running trials move to the wider pack with their state. A "
        "number for --parallel_trials always trains that many; off with PBT.",
        group="device",
    )
    checkpoint_every: int = flag_field(
        1,
        "Save each running trial's state every N epochs (copied to the host, then written in "
        "a background thread); a killed study loses at most N epochs of each running trial.",
        lower_bound=1,
        group="outputs and resume",
    )
    # Study.
    space: SearchSpace | None = flag_field(
        None,
        "A searched hyperparameter: NAME:float:LOW:HIGH, NAME:log:LOW:HIGH, NAME:int:LOW:HIGH or "
        "NAME:choice:V1,V2,..., optionally ending in :runtime or :structural. Repeatable. "
        "Default: the model's own space (mnist_cnn: dropout_2:float:0.1:0.5 and "
        "learning_rate:log:1e-4:1e-2).",
        flag="param",
        repeated=True,
        group="model and space",
    )
    space_file: str = flag_field(
        "",
        'JSON file with the search space instead of --param: {"NAME": {"kind": "log", '
        '"low": 1e-4, "high": 1e-2}, ...} or a list of such objects with a "name".',
        group="model and space",
    )
    init_points: int = flag_field(
        5,
        "Random trials before the optimizer takes over.",
        lower_bound=1,
        group="budget and schedulers",
    )
    n_iter: int = flag_field(
        10,
        "Guided trials after the random ones; 0 runs only the --init_points random trials (with "
        "--scheduler=pbt, one population).",
        lower_bound=0,
        group="budget and schedulers",
    )
    seed: int = flag_field(
        0, "Seeds the optimizer, data order and trials.", lower_bound=0, group="sampler"
    )
    objective: str = flag_field(
        "val_accuracy",
        "Metric a trial is scored by, its best value over the trial's epochs: loss, val_loss or "
        "val_<metric> of any metric the model reports (val_accuracy by default; val_mae, "
        "val_auc... for a model compiled with them).",
        group="model and space",
    )
    objective_mode: str = flag_field(
        "auto",
        "Maximise or minimise the objective; auto takes it from the compiled metric object "
        "(R2Score, F-scores, AUC, IoU up; errors down), else from the Keras metric's name "
        "(losses and errors down, accuracy/AUC/precision/recall up), and otherwise asks.",
        choices=OBJECTIVE_MODES,
        group="model and space",
    )
    acquisition: str = flag_field(
        "auto",
        "Acquisition function: auto (ei while the GP finds the scores noise-free, ucb once it "
        "fits noise above 0.5% of their variance), ei (expected improvement), logei (its log, "
        "which keeps a gradient where EI is flat), ucb, poi.",
        choices=ACQUISITIONS,
        group="sampler",
    )
    xi: float = flag_field(
        0.0,
        "Exploration of ei and poi, in standard deviations of the scores so far; 0 (plain "
        "expected improvement) measured best in bench/RESULTS.md.",
        group="sampler",
    )
    kappa: float = flag_field(2.576, "Exploration of ucb.", group="sampler")
    domain_reduction: bool = flag_field(
        False,
        "Shrink the search bounds around the best point as the study goes (bayes_opt's "
        "SequentialDomainReductionTransformer); float and log parameters only.",
        group="sampler",
    )
    prune: str = flag_field(
        "none",
        "Stop hopeless trials early with Optuna's pruners: median (MedianPruner: below the "
        "median of earlier trials at the same epoch), asha (SuccessiveHalvingPruner) or "
        "hyperband (HyperbandPruner); a pruned slot takes the next trial at once.",
        choices=PRUNERS,
        group="budget and schedulers",
    )
    prune_after: int = flag_field(
        5,
        "Trials that must finish before the median rule prunes anything.",
        lower_bound=1,
        group="budget and schedulers",
    )
    min_epochs: int = flag_field(
        1,
        "Epochs every trial runs before it may be pruned (asha/hyperband: the minimum "
        "resource; median: warm-up epochs).",
        lower_bound=1,
        group="budget and schedulers",
    )
    reduction_factor: int = flag_field(
        3,
        "Pruning rate of asha and hyperband: 1 in reduction_factor trials goes on at each rung.",
        lower_bound=2,
        group="budget and schedulers",
    )
    patience: int = flag_field(
        0,
        "Early stopping, as keras.callbacks.EarlyStopping: a trial ends (as ok, scored by its "
        "best epoch) after this many epochs in a row in which --objective did not improve by "
        "more than --min_delta, and its slot takes the next trial; 0: never.",
        lower_bound=0,
        group="budget and schedulers",
    )
    min_delta: float = flag_field(
        0.0,
        "Early stopping: the least change of --objective that counts as an improvement.",
        group="budget and schedulers",
    )
    scheduler: str = flag_field(
        "fifo",
        "How trials spend their epochs: fifo (each runs to --epochs unless --prune stops it) or "
        "pbt (population-based training: the --parallel_trials slots of a pack are a "
        "population; every --pbt_interval epochs the worst --pbt_quantile take the weights "
        "of the best, on the device, and perturb their runtime hyperparameters).",
        choices=SCHEDULERS,
        group="budget and schedulers",
    )
    pbt_interval: int = flag_field(
        2,
        "PBT: epochs between exploit/explore steps.",
        lower_bound=1,
        group="budget and schedulers",
    )
    pbt_quantile: float = flag_field(
        0.25,
        "PBT: the fraction of the population that takes the weights of a member of the same "
        "fraction at the top (at least one when above 0); 0 turns exploit and explore off.",
        group="budget and schedulers",
    )
    pbt_resample: float = flag_field(
        0.25,
        "PBT: the chance that explore draws a runtime hyperparameter afresh from its range "
        "instead of multiplying it by 0.8 or 1.25.",
        group="budget and schedulers",
    )
    sampler: str = flag_field(
        "bayes_opt",
        "Which sampler proposes trials: bayes_opt (a Gaussian process from the "
        "bayesian-optimization package; the default), or Optuna's tpe, gp (needs PyTorch: "
        "pip install torch==2.13.0) or random.",
        choices=SAMPLERS,
        group="sampler",
    )
    output_dir: str = flag_field(
        "",
        "Where the journal and summary go (local or gs://); an existing study there is resumed. "
        "Default: runs/<dataset>-<model>.",
        group="outputs and resume",
    )
    tensorboard_dir: str = flag_field(
        "",
        "Where the TensorBoard events go (local or gs://); default <output_dir>/tensorboard. "
        "tpu_bo.keras_tuner sets it from a keras.callbacks.TensorBoard(log_dir=...).",
        group="outputs and resume",
    )
    storage: str = flag_field(
        "",
        "Optuna storage URL for the study's trials (sqlite:///study.db, postgresql://...); "
        "default: a journal file inside --output_dir.",
        group="shared studies",
    )
    study_name: str = flag_field(
        "",
        "Name of the study inside --storage; default: the last component of --output_dir.",
        group="shared studies",
    )
    wait_for_lock: bool = flag_field(
        False,
        "When another process is running this study, wait for it to finish instead of exiting.",
        group="outputs and resume",
    )
    heartbeat_interval: int = flag_field(
        10,
        "With a database --storage (many workers): seconds between the heartbeats a worker "
        "records for each of its running trials.",
        lower_bound=1,
        group="shared studies",
    )
    grace_period: int = flag_field(
        60,
        "With a database --storage: seconds without a heartbeat after which a running trial "
        "is taken over by another worker, from its last checkpoint in --output_dir.",
        lower_bound=1,
        group="shared studies",
    )
    storage_patience: int = flag_field(
        600,
        "With a database --storage: seconds to keep retrying, with backoff, a database that "
        "went away before the worker stops (the study stays in the database).",
        lower_bound=0,
        group="shared studies",
    )

    # After the study.
    final_epochs: int = flag_field(
        0,
        "After the study, retrain the best configuration from its seed for this many epochs, "
        "score the test split once, and export final/model.keras and final/saved_model; 0 skips.",
        lower_bound=0,
        group="final model",
    )
    final_on_train_and_val: bool = flag_field(
        False,
        "Train the final model on train + eval splits.",
        group="final model",
    )
    select_best: str = flag_field(
        "observed",
        "Which trial best/, load_best_model and --final_epochs use: observed (the best score) or "
        "posterior (of the 5 best scores, the best mean of the GP, which fits the scores' "
        "noise: better on smooth noisy objectives, worse next to a learning-rate cliff).",
        choices=SELECT_BEST,
        group="final model",
    )
    keep_top: bool = flag_field(
        False,
        "Keep the weights of the 5 best trials in kept/, not only the best one's in best/ "
        "(always so with --select_best=posterior or --repeat_best > 1); "
        "tpu_bo.keras_tuner's get_best_models(n) reads them.",
        group="final model",
    )
    repeat_best: int = flag_field(
        1,
        "Once the budget is spent, run the top candidates until each has N runs with different "
        "seeds (as many candidates as a pack's slots allow), and choose by their mean; 1: off.",
        lower_bound=1,
        group="final model",
    )
    executions_per_trial: int = flag_field(
        1,
        "Train every trial N times with different seeds, side by side in one pack, and score it "
        "by their mean, epoch by epoch (KerasTuner's executions_per_trial): a less noisy score "
        "for N times the compute. A pack holds --parallel_trials trials of N slots each.",
        lower_bound=1,
        group="budget and schedulers",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed", dict(self.fixed))
        k = self.parallel_trials
        if isinstance(k, str) and k.strip().isdigit():  # --parallel_trials=4
            object.__setattr__(self, "parallel_trials", int(k))
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
    def pack_width(self) -> int:
        """Slots of a pack: ``parallel_trials`` trials of ``executions_per_trial`` slots
        (``auto``, before ``run_study`` measured it, counts as one trial)."""
        return self.trials_per_pack * self.executions_per_trial

    @property
    def trials_per_pack(self) -> int:
        """``parallel_trials`` as a number (``auto`` before it is measured: 1)."""
        return 1 if self.parallel_trials == "auto" else int(self.parallel_trials)

    @property
    def total_trials(self) -> int:
        """The study's budget: random starting points plus guided iterations."""
        return self.init_points + self.n_iter

    @property
    def maximize(self) -> bool:
        """Whether a larger objective is better (``auto``: from its name, e.g. losses are
        minimised; a name that does not say needs :meth:`settle_direction` first).

        Raises:
          ConfigError: naming ``objective_mode``, under ``auto`` for a name that does not say.
        """
        if self.objective_mode != "auto":
            return self.objective_mode == "max"
        maximize = infer_maximize(self.objective)
        if maximize is None:
            raise _unknown_direction(self.objective)
        return maximize

    def settle_direction(self, declared: Mapping[str, bool]) -> Config:
        """This config with the objective's direction taken from its metric object.

        Under ``--objective_mode=auto``, the direction the reported metric's object declares
        (``declared``, from :func:`tpu_bo.train.heads.metric_directions`) decides over the
        name; the config is returned unchanged when the name already says the same, else
        with ``objective_mode`` ``max`` or ``min`` (so a resumed study, which settles it
        again, has the same identity).

        Raises:
          ConfigError: naming ``objective_mode`` when neither the object nor the name says.
        """
        if self.objective_mode != "auto":
            return self
        maximize = infer_maximize(self.objective, declared)
        if maximize is None:
            raise _unknown_direction(self.objective)
        if maximize is infer_maximize(self.objective):
            return self
        return dataclasses.replace(self, objective_mode="max" if maximize else "min")

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
        _check_rules(self)
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


# The rules that span fields.


def _check_rules(config: Config) -> None:
    """Every rule between fields, then those between the search space and the fields."""
    k = config.parallel_trials
    if k != "auto" and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ConfigError("parallel_trials", f"must be auto or a positive whole number, got {k!r}.")
    if config.space is not None and config.space_file:
        raise ConfigError("space_file", "give the space by --param or by --space_file, not both.")
    _check_objective(config)
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
    _check_scheduler(config)
    _check_space(config, config.resolved_space())


def _check_scheduler(config: Config) -> None:
    """The rules of ``--scheduler=pbt`` (:mod:`tpu_bo.session.pbt`)."""
    for name in ("pbt_quantile", "pbt_resample"):
        value, top = getattr(config, name), 0.5 if name == "pbt_quantile" else 1.0
        if not 0 <= value <= top:
            raise ConfigError(name, f"must lie in [0, {top}], got {value}.")
    if config.scheduler != "pbt":
        return
    if config.parallel_trials == "auto":
        raise ConfigError(
            "parallel_trials",
            "--scheduler=pbt needs a population of a fixed size, not auto: the pack's slots are "
            "the population, so set --parallel_trials to 4 or more.",
        )
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
        "patience": (config.patience > 0, "a PBT member stays in its population to the "
                     "end; use 0"),
        "executions_per_trial": (config.executions_per_trial > 1, "a member's score is its "
                                 "own schedule's, which no other seed follows; use 1"),
        "final_epochs": (config.final_epochs > 0, "PBT's result is the best member's "
                         "weights (best/); a retrain from scratch would not follow its "
                         "schedule; use 0"),
    }  # fmt: skip
    for flag, (clash, why) in clashes.items():
        if clash:
            raise ConfigError(flag, f"does not go with --scheduler=pbt: {why}.")


def _unknown_direction(objective: str) -> ConfigError:
    return ConfigError(
        "objective_mode",
        f"cannot tell whether {objective} improves up or down from its metric or its name; "
        "pass --objective_mode=max or --objective_mode=min.",
    )


def _check_objective(config: Config) -> None:
    if config.objective != "loss" and not config.objective.startswith("val_"):
        raise ConfigError(
            "objective",
            f"{config.objective!r} is not a reported metric; use loss, val_loss or "
            "val_<metric> (e.g. val_accuracy, val_mae, val_auc).",
        )
    if config.final_on_train_and_val and not config.final_epochs:
        raise ConfigError("final_on_train_and_val", "needs --final_epochs > 0.")


def _check_space(config: Config, space: SearchSpace) -> None:
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
    if "batch_size" in config.fixed:
        raise ConfigError("fixed", "batch_size is set by --batch_size, not --fixed.")
    if "batch_size" in space.names:
        _check_batch_param(space["batch_size"])
    for name in TRAINER_PARAMS & set(space.names) - {"optimizer"}:
        if space[name].kind == "choice" and not all(
            isinstance(c, (int, float)) for c in space[name].choices
        ):
            raise ConfigError("param", f"{name} must take numeric values.")


def _check_batch_param(param: Any) -> None:
    """A searched ``batch_size``: whole positive numbers, structural (one program per size)."""
    if param.kind not in ("choice", "int"):
        raise ConfigError(
            "param", "batch_size must be a choice or an int, e.g. batch_size:choice:32,64,128."
        )
    values = param.choices if param.kind == "choice" else (param.low, param.high)
    if not all(isinstance(v, (int, float)) and v == int(v) and v >= 1 for v in values):
        raise ConfigError("param", "batch_size must take whole numbers of at least 1.")
    if param.resolved_role != "structural":
        raise ConfigError(
            "param", "batch_size is structural (a batch shape is compiled); drop ':runtime'."
        )


def _is_optimizer(value: Any) -> bool:
    return isinstance(value, str) and value in OPTIMIZERS


def read_space_file(path: str) -> SearchSpace:
    """Reads a search space from a JSON file (local or ``gs://``).

    The file holds either a mapping from name to a parameter (``{"learning_rate": {"kind":
    "log", "low": 1e-4, "high": 1e-2}, "dense_units": ["choice", [128, 256]]}``) or a list of
    parameters each with a ``name`` (the form ``config.json`` records).

    Raises:
      ConfigError: naming ``space_file``, for an unreadable file or an invalid space.
    """
    text = _read_text(path)
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


def _read_text(path: str) -> str:
    """The file's text; TensorFlow's file system for a URL such as ``gs://``."""
    try:
        if "://" in path:
            import tensorflow as tf

            with tf.io.gfile.GFile(path, "r") as f:
                return f.read()
        with open(path) as f:
            return f.read()
    except Exception as e:  # noqa: BLE001 - OSError locally, tf.errors on gs://
        raise ConfigError("space_file", f"cannot read {path}: {e}.") from None
