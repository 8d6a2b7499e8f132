r"""Command line: run (or resume) a Bayesian-optimization study.

  python -m tpu_bo.main                       # offline default: digits, mnist_cnn, 15 trials
  python -m tpu_bo.main --dataset=mnist --data_dir=gs://bucket/tensorflow_datasets \
      --accelerator=tpu --epochs=1 --output_dir=gs://bucket/studies/mnist
  python -m tpu_bo.main --flagfile=flags/cpu_smoke.flags --n_iter=2

Every flag is a field of ``Config`` (``tpu_bo/config.py``), whose metadata holds the flag's help
text, choices and lower bound; the flags are defined here from those fields, in field order
(``space`` is set by ``--param``). The flags become one frozen ``Config``, which is validated
before any device or data is touched; a mistake exits with status 2 and one
sentence naming the flag. The resolved flags are written to ``<output_dir>/flags.txt``
(``--flagfile`` it to repeat the run).
"""

from __future__ import annotations

import dataclasses
import logging as py_logging
import os
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging

from tpu_bo.config import Config, flag_name
from tpu_bo.errors import ConfigError
from tpu_bo.search.space import SearchSpace, parse_fixed

# How the strings of a repeatable flag become its field's value.
_FROM_STRINGS: dict[str, Callable[[list[str] | None], Any]] = {
    "param": lambda specs: SearchSpace.parse(specs) if specs else None,
    "fixed": lambda specs: parse_fixed(specs or []),
}
_DEFINE: dict[type, Callable[..., flags.FlagHolder]] = {
    str: flags.DEFINE_string,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_boolean,
}


def _define_flag(field: dataclasses.Field, hint: Any) -> flags.FlagHolder:
    """Defines the absl flag for one :class:`Config` field from the field's metadata."""
    meta = field.metadata
    name, help_text = flag_name(field), meta["help"]
    if meta["repeated"]:
        if name not in _FROM_STRINGS:
            raise TypeError(f"Config.{field.name}: no parser for the strings of --{name}.")
        return flags.DEFINE_multi_string(name, None, help_text)
    if meta["choices"]:
        return flags.DEFINE_enum(name, field.default, list(meta["choices"]), help_text)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = typing.get_args(hint)[0]  # `str | None`, `str | Callable`: a string flag
    if hint not in _DEFINE:
        raise TypeError(f"Config.{field.name}: no flag type for {hint!r}.")
    bound = {} if meta["lower_bound"] is None else {"lower_bound": meta["lower_bound"]}
    return _DEFINE[hint](name, field.default, help_text, **bound)


def _define_flags() -> dict[str, flags.FlagHolder]:
    """One flag per :class:`Config` field, in field order, keyed by the field's name."""
    hints = typing.get_type_hints(Config)
    return {f.name: _define_flag(f, hints[f.name]) for f in dataclasses.fields(Config)}


_FLAGS = _define_flags()


def config_from_flags() -> Config:
    """Builds and validates the study's :class:`Config` from the parsed flags.

    Raises:
      ConfigError: naming the flag at fault.
    """
    values = {}
    for field in dataclasses.fields(Config):
        holder = _FLAGS[field.name]
        parse = _FROM_STRINGS[holder.name] if field.metadata["repeated"] else None
        values[field.name] = parse(holder.value) if parse else holder.value
    return Config(**values).validate()


def flags_text() -> str:
    """The resolved values of every tpu_bo flag, one per line, ready for ``--flagfile``."""
    lines = ["# Written by tpu_bo.main; rerun with --flagfile=<this file>."]
    for holder in _FLAGS.values():
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
    from tpu_bo.device import tpu_env

    stray = tpu_env.stray_tpu_build(tpu_env.ensure_configured())
    if stray:
        print(f"warning: {stray}.", file=sys.stderr, flush=True)
    changed = " ".join(flags.FLAGS[h.name].serialize() for h in _FLAGS.values() if h.present)
    py_logging.getLogger("tpu_bo").info("config: %s", changed or "all defaults")
    import optuna

    # Optuna announces every study it creates or loads at INFO; the table says it all.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from tpu_bo.session.run import run_study

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
    if type(e).__name__ == "KerasChanged":  # tpu_bo.train.keras_names: already one sentence
        return text, 2
    from tpu_bo.device.cluster import lockstep_workers

    if type(e).__name__ in ("UnavailableError", "CancelledError") and lockstep_workers() > 1:
        # A worker of a lockstep study died (killed, preempted): the collectives abort.
        lines = str(e).strip().splitlines() or [type(e).__name__]
        text = next((line for line in lines if "aborted" in line), lines[0])[:200]
        return (
            f"another lockstep worker of this study stopped ({text}); every finished trial "
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
