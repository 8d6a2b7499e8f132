r"""Command line: run (or resume) a Bayesian-optimization study.

  python -m tpu_bo.main                       # offline default: digits, mnist_cnn, 15 trials
  python -m tpu_bo.main --dataset=mnist --data_dir=gs://bucket/tensorflow_datasets \
      --accelerator=tpu --epochs=1 --output_dir=gs://bucket/studies/mnist
  python -m tpu_bo.main --flagfile=flags/cpu_smoke.flags --n_iter=2

Every flag is defined here and nowhere else. The flags become one frozen ``Config``, which is
validated before any device or data is touched; a mistake exits with status 2 and one
sentence naming the flag. The resolved flags are written to ``<output_dir>/flags.txt``
(``--flagfile`` it to repeat the run).
"""

from __future__ import annotations

import logging as py_logging
import os
import sys

from absl import app, flags, logging

from tpu_bo.config import (
    ACCELERATORS,
    ACQUISITIONS,
    OBJECTIVE_MODES,
    OBJECTIVES,
    OPTIMIZERS,
    PRUNERS,
    Config,
)
from tpu_bo.errors import ConfigError
from tpu_bo.space import SearchSpace, parse_fixed

_D = Config()

# Accelerator.
_ACCELERATOR = flags.DEFINE_enum(
    "accelerator",
    _D.accelerator,
    list(ACCELERATORS),
    "Where to train: auto tries TPU, then GPU, then CPU, and says which it picked.",
)
_TPU = flags.DEFINE_string(
    "tpu", _D.tpu, "TPU to connect to: 'local' on a TPU VM or Colab, else a TPU or pod-slice name."
)
_CPU_REPLICAS = flags.DEFINE_integer(
    "cpu_replicas",
    _D.cpu_replicas,
    "Split the CPU into this many logical devices under a MirroredStrategy (tests the "
    "multi-replica path without GPUs).",
    lower_bound=1,
)

# Data.
_DATASET = flags.DEFINE_string(
    "dataset",
    _D.dataset,
    "'digits' (8x8 digits shipped with scikit-learn; no download) or a TFDS image "
    "classification dataset name such as mnist, fashion_mnist, cifar10.",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", _D.data_dir, "TFDS data directory (local or gs://); default: TFDS's own."
)
_TRAIN_SPLIT = flags.DEFINE_string("train_split", _D.train_split, "Split trials train on.")
_EVAL_SPLIT = flags.DEFINE_string(
    "eval_split", _D.eval_split, "Held-out split that scores every trial (the objective)."
)
_TEST_SPLIT = flags.DEFINE_string(
    "test_split", _D.test_split, "Split scored once, for the best trial; '' to skip."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size",
    _D.batch_size,
    "Global batch (all replicas together); must divide by the number of replicas.",
    lower_bound=1,
)
_SHUFFLE_BUFFER = flags.DEFINE_integer(
    "shuffle_buffer",
    _D.shuffle_buffer,
    "Shuffle buffer in examples; 0 = the whole train split.",
    lower_bound=0,
)
_DOWNLOAD = flags.DEFINE_boolean(
    "download", _D.download, "Let TFDS download and prepare a dataset missing from --data_dir."
)

# Model and training.
_MODEL = flags.DEFINE_string(
    "model",
    str(_D.model),
    "mnist_cnn, mlp, or package.module:function returning an uncompiled keras.Model from "
    "(hp, input_shape, num_classes).",
)
_OPTIMIZER = flags.DEFINE_enum(
    "optimizer", _D.optimizer, list(OPTIMIZERS), "Optimizer (searchable as a choice param)."
)
_FIXED = flags.DEFINE_multi_string(
    "fixed",
    None,
    "A hyperparameter held fixed for the whole study, NAME=VALUE "
    "(e.g. --fixed=dense_units=256). Repeatable.",
)
_EPOCHS = flags.DEFINE_integer("epochs", _D.epochs, "Epochs per trial.", lower_bound=1)
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution",
    _D.steps_per_execution,
    "Training steps per host call; more keeps a TPU fed.",
    lower_bound=1,
)
_MIXED_PRECISION = flags.DEFINE_boolean(
    "mixed_precision", _D.mixed_precision, "Compute in bfloat16 (the TPU's native type)."
)
_JIT_COMPILE = flags.DEFINE_boolean(
    "jit_compile",
    _D.jit_compile,
    "Compile steps with XLA on CPU/GPU; rejects dynamic shapes like a TPU. Ignored on a TPU, "
    "which compiles every program with XLA anyway.",
)
_MAX_PROGRAMS = flags.DEFINE_integer(
    "max_programs",
    _D.max_programs,
    "Compiled programs (one per structure and pack width) kept at once; the oldest is dropped.",
    lower_bound=1,
)
_PARALLEL_TRIALS = flags.DEFINE_integer(
    "parallel_trials",
    _D.parallel_trials,
    "Trials of one structure trained side by side in one compiled program (a pack), to fill "
    "an accelerator that one small model leaves idle; bayes_opt proposes each pack's points "
    "together.",
    lower_bound=1,
)

# Study.
_PARAM = flags.DEFINE_multi_string(
    "param",
    None,
    "A searched hyperparameter: NAME:float:LOW:HIGH, NAME:log:LOW:HIGH, NAME:int:LOW:HIGH or "
    "NAME:choice:V1,V2,..., optionally ending in :runtime or :structural. Repeatable. "
    "Default: the model's own space (mnist_cnn: dropout_2:float:0.1:0.5 and "
    "learning_rate:log:1e-4:1e-2).",
)
_SPACE_FILE = flags.DEFINE_string(
    "space_file",
    _D.space_file,
    'JSON file with the search space instead of --param: {"NAME": {"kind": "log", '
    '"low": 1e-4, "high": 1e-2}, ...} or a list of such objects with a "name".',
)
_INIT_POINTS = flags.DEFINE_integer(
    "init_points", _D.init_points, "Random trials before the optimizer takes over.", lower_bound=1
)
_N_ITER = flags.DEFINE_integer(
    "n_iter", _D.n_iter, "Guided trials after the random ones.", lower_bound=1
)
_SEED = flags.DEFINE_integer("seed", _D.seed, "Seeds the optimizer, data order and trials.")
_OBJECTIVE = flags.DEFINE_enum(
    "objective",
    _D.objective,
    list(OBJECTIVES),
    "Metric a trial is scored by: its best value over the trial's epochs.",
)
_OBJECTIVE_MODE = flags.DEFINE_enum(
    "objective_mode",
    _D.objective_mode,
    list(OBJECTIVE_MODES),
    "Maximise or minimise the objective; auto minimises losses and maximises the rest.",
)
_ACQUISITION = flags.DEFINE_enum(
    "acquisition",
    _D.acquisition,
    list(ACQUISITIONS),
    "Acquisition function: ei (expected improvement), ucb, poi.",
)
_XI = flags.DEFINE_float(
    "xi",
    _D.xi,
    "Exploration of ei and poi, in standard deviations of the scores so far; 0 (plain expected "
    "improvement) measured best in bench/RESULTS.md.",
)
_KAPPA = flags.DEFINE_float("kappa", _D.kappa, "Exploration of ucb.")
_DOMAIN_REDUCTION = flags.DEFINE_boolean(
    "domain_reduction",
    _D.domain_reduction,
    "Shrink the search bounds around the best point as the study goes (bayes_opt's "
    "SequentialDomainReductionTransformer); float and log parameters only.",
)
_PRUNE = flags.DEFINE_enum(
    "prune",
    _D.prune,
    list(PRUNERS),
    "Stop hopeless trials early: median stops a trial whose best score so far is below the "
    "median of finished trials at the same epoch (journaled as pruned).",
)
_PRUNE_AFTER = flags.DEFINE_integer(
    "prune_after",
    _D.prune_after,
    "Finished trials needed before the median rule prunes anything.",
    lower_bound=1,
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir",
    _D.output_dir,
    "Where the journal and summary go (local or gs://); an existing study there is resumed. "
    "Default: runs/<dataset>-<model>.",
)

_OURS = [
    _ACCELERATOR, _TPU, _CPU_REPLICAS,
    _DATASET, _DATA_DIR, _TRAIN_SPLIT, _EVAL_SPLIT, _TEST_SPLIT, _BATCH_SIZE, _SHUFFLE_BUFFER,
    _DOWNLOAD,
    _MODEL, _OPTIMIZER, _FIXED, _EPOCHS, _STEPS_PER_EXECUTION, _MIXED_PRECISION, _JIT_COMPILE,
    _MAX_PROGRAMS, _PARALLEL_TRIALS,
    _PARAM, _SPACE_FILE, _INIT_POINTS, _N_ITER, _SEED, _OBJECTIVE, _OBJECTIVE_MODE, _ACQUISITION,
    _XI, _KAPPA, _DOMAIN_REDUCTION, _PRUNE, _PRUNE_AFTER, _OUTPUT_DIR,
]  # fmt: skip


def config_from_flags() -> Config:
    """Builds and validates the study's :class:`Config` from the parsed flags.

    Raises:
      ConfigError: naming the flag at fault.
    """
    values = {
        holder.name: holder.value for holder in _OURS if holder.name not in ("param", "fixed")
    }
    space = SearchSpace.parse(_PARAM.value) if _PARAM.value else None
    fixed = parse_fixed(_FIXED.value or [])
    return Config(**values, space=space, fixed=fixed).validate()


def flags_text() -> str:
    """The resolved values of every tpu_bo flag, one per line, ready for ``--flagfile``."""
    lines = ["# Written by tpu_bo.main; rerun with --flagfile=<this file>."]
    for holder in _OURS:
        serialized = flags.FLAGS[holder.name].serialize()
        if serialized:
            lines.extend(serialized.splitlines())
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Runs the study described by the flags; returns the process exit status."""
    if len(argv) > 1:
        print(
            f"error: unexpected arguments {argv[1:]}; every setting is a --flag.", file=sys.stderr
        )
        return 2
    try:
        config = config_from_flags()
    except ConfigError as e:
        print(f"error: {e.for_cli()}", file=sys.stderr)
        return 2
    if not flags.FLAGS["verbosity"].present:
        # TensorFlow and TFDS log a lot at INFO; keep tpu_bo's own INFO lines visible.
        logging.set_verbosity(logging.WARNING)
        py_logging.getLogger("tpu_bo").setLevel(py_logging.INFO)
    from tpu_bo import tpu_env

    stray = tpu_env.stray_tpu_build(tpu_env.ensure_configured())
    if stray:
        print(f"warning: {stray}.", file=sys.stderr, flush=True)
    changed = " ".join(flags.FLAGS[h.name].serialize() for h in _OURS if h.present)
    py_logging.getLogger("tpu_bo").info("config: %s", changed or "all defaults")
    from tpu_bo.study import run_study

    try:
        run_study(config, extra_files={"flags.txt": flags_text()})
    except ConfigError as e:
        print(f"error: {e.for_cli()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        known = _known_failure(e, config)
        if known is None:
            raise
        print(f"error: {known[0]}", file=sys.stderr)
        return known[1]
    return 0


def _known_failure(e: Exception, config: Config) -> tuple[str, int] | None:
    """The one sentence and exit status for a failure with one known fix, else ``None``."""
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    if type(e).__name__ in ("PermissionDeniedError", "UnauthenticatedError"):
        # Storage that refuses us (a gs:// bucket without rights, a read-only path) is a setup
        # problem with one fix, not a bug: say which flag's path it is and what to check.
        flag = "data_dir" if config.data_dir and config.data_dir in text else "output_dir"
        return (
            f"--{flag}: permission denied ({text}); check that this machine's account "
            "may read and write there (for gs://, e.g. roles/storage.objectAdmin on the bucket "
            "for the VM's service account, or `gcloud auth application-default login`).",
            2,
        )
    from tpu_bo.accelerator import num_workers

    if type(e).__name__ in ("UnavailableError", "CancelledError") and num_workers() > 1:
        # A worker of a lockstep study died (killed, preempted): the collectives abort.
        lines = str(e).strip().splitlines() or [type(e).__name__]
        text = next((line for line in lines if "aborted" in line), lines[0])[:200]
        return (
            f"another worker of this multi-worker study stopped ({text}); every finished trial "
            f"is in {config.resolved_output_dir} and the running ones continue from their last "
            "finished epoch: start every worker again with the same command.",
            1,
        )
    return None


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) drowns the study's table.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run() -> None:
    """Entry point for ``python -m tpu_bo.main``."""
    _quiet_tensorflow()
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
