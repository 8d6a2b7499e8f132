r"""python -m tpu_bo.main [--flag=value ...]: tune a Keras model's hyperparameters.

Runs (or resumes) a Bayesian-optimization study. Each trial trains the model for
--epochs and is scored by its best --objective on a held-out split; a Gaussian
process proposes the next trial from the scores so far, and trials of one
structure share one compiled program. With no flags it runs the offline
default: the 8x8 digits set, the blog post's mnist_cnn, 15 trials, in under a
minute on a CPU. The trials, a summary and the best model go to --output_dir;
the same command again resumes the study.

examples:
  python -m tpu_bo.main
  python -m tpu_bo.main --dataset=mnist --epochs=2 --output_dir=runs/mnist \
      --param=learning_rate:log:1e-4:1e-2 --param=dense_units:choice:64,128,256
  python -m tpu_bo.main --flagfile=flags/mnist_blog_tpu.flags \
      --output_dir=gs://bucket/studies/mnist
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

from tpu_bo import terminal
from tpu_bo.config import FLAG_GROUPS, Config, flag_name
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
    _configure_logging()
    from tpu_bo.device import tpu_env

    stray = tpu_env.stray_tpu_build(tpu_env.ensure_configured())
    if stray:
        print(f"warning: {stray}.", file=sys.stderr, flush=True)
    changed = " ".join(flags.FLAGS[h.name].serialize() for h in _FLAGS.values() if h.present)
    py_logging.getLogger("tpu_bo").debug("config: %s", changed or "all defaults")
    import optuna

    # Optuna announces every study it creates or loads at INFO; the table says it all.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with terminal.quiet_tensorflow_load():
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


class _PlainFormatter(py_logging.Formatter):
    """A log line as ``tpu_bo: message`` (``tpu_bo: warning: message`` at WARNING and above):
    the logger's package, not absl's level letter, date, time, thread and ``file:line``. With
    ``detailed`` (``--verbosity=2`` or more), other packages' lines keep absl's format."""

    def __init__(self, detailed: py_logging.Formatter | None = None) -> None:
        super().__init__()
        self.detailed = detailed

    def format(self, record: py_logging.LogRecord) -> str:
        ours = record.name.partition(".")[0] == "tpu_bo"
        if self.detailed is not None and not ours:
            return self.detailed.format(record)
        return super().format(record)

    def formatMessage(self, record: py_logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        level = f"{record.levelname.lower()}: " if record.levelno >= py_logging.WARNING else ""
        return f"{record.name.partition('.')[0]}: {level}{record.message}"


def _configure_logging() -> None:
    """tpu_bo's lines at INFO and the other libraries' at WARNING, all plain; ``--verbosity``
    (absl's flag) sets tpu_bo's level (1: DEBUG, its detail lines: the flags given, each
    program built), and from 2 every library's, in absl's format."""
    verbosity = logging.get_verbosity() if flags.FLAGS["verbosity"].present else 0
    handler = logging.get_absl_handler()
    detailed = handler.python_handler.formatter if verbosity >= 2 else None
    handler.setFormatter(_PlainFormatter(detailed))
    py_logging.getLogger("tpu_bo").setLevel(logging.converter.absl_to_standard(verbosity))
    if verbosity < 2:
        # TensorFlow, TFDS and matplotlib log a lot at INFO and DEBUG; their warnings stay.
        logging.set_verbosity(logging.WARNING)


def help_text() -> str:
    """``--help``: what the command does, three examples, and every tpu_bo flag under its
    heading (:data:`tpu_bo.config.FLAG_GROUPS`, from each field's metadata)."""
    groups: dict[str, list[str]] = {group: [] for group in FLAG_GROUPS}
    for field in dataclasses.fields(Config):
        groups[field.metadata["group"]].append(_flag_help(flags.FLAGS[flag_name(field)]))
    parts = [__doc__.strip(), ""]
    for group, entries in groups.items():
        parts += [f"{group}:", *entries, ""]
    parts.append(
        flags.text_wrap(
            "absl's own flags work too: --flagfile=FILE reads flags from a file, one a line (a "
            "later flag overrides it); --verbosity=1 shows tpu_bo's detail lines, 2 every "
            "library's log; --helpfull lists every flag, absl's included. Every flag, with "
            "examples: docs/flags.md."
        )
    )
    return "\n".join(parts) + "\n"


def _flag_help(flag: flags.Flag) -> str:
    """One flag much as absl's ``--helpfull`` shows it: name and help, then its default."""
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flags.text_wrap(f"{name}: {flag.help}", indent="    ", firstline_indent="  ")
    shown = flag.default_as_str not in (None, "''")  # an empty string says nothing
    notes = [f"default: {flag.default_as_str}"] if shown else []
    if flag.parser.syntactic_help:
        notes.append(flag.parser.syntactic_help)
    if notes:
        text += "\n" + flags.text_wrap(f"({'; '.join(notes)})", indent="    ")
    return text


_HELP = {"-?", "-h", "-help", "--help", "-helpshort", "--helpshort"}


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, but ``--help`` (``-h``) prints :func:`help_text` and exits 0."""
    if _HELP.intersection(argv[1:]):
        print(help_text(), end="")
        sys.exit(0)
    return app.parse_flags_with_usage(argv)


def run() -> None:
    """Entry point for ``python -m tpu_bo.main``."""
    app.run(_exit_with(main), flags_parser=_parse_flags)


def _exit_with(main: Callable[[list[str]], int]) -> Callable[[list[str]], None]:
    """``main`` as absl's ``app.run`` calls it, ending the process with its status.

    An interrupted study (status 130) ends at once, without the interpreter's shutdown: by then
    ``run_study`` has closed the study (journal written, checkpoints waited for, lock released),
    and nothing is left to keep. The shutdown, on the other hand, tears TensorFlow's state down
    while its threads (tf.data's, the interrupted pack's iterators) may still be inside it: under
    CI's load about one ctrl-c test in four then ended with status -6 and a "Fatal Python error"
    dump after the resume line, instead of 130.
    """

    def call(argv: list[str]) -> None:
        try:
            status = main(argv)
        except KeyboardInterrupt:  # before the study began (flags, imports): nothing to keep
            status = 130
        if status == 130:
            sys.stdout.flush()
            sys.stderr.flush()
            py_logging.shutdown()
            os._exit(130)
        sys.exit(status)

    return call


if __name__ == "__main__":
    run()
