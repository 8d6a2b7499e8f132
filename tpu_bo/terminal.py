"""What reaches a user's terminal: TensorFlow's start-up INFO lines kept off it, and our long
lines wrapped at word boundaries.

TensorFlow's C++ logging hides INFO lines under ``TF_CPP_MIN_LOG_LEVEL=1``, which
:func:`set_tf_log_level` sets (``setdefault``: a user's own value wins) before anything imports
TensorFlow. TF 2.21 writes two lines before it reads that variable, though, once per shared
library that carries them: absl's ``WARNING: All log messages before absl::InitializeLog() is
called are written to STDERR`` and the INFO line ``port.cc:153] oneDNN custom operations are
on...``. :func:`quiet_tensorflow_load` applies the level to them: a block that may import
TensorFlow first runs with file descriptor 2 sent to a temporary file, and every other line is
written back when the block ends. ``TF_ENABLE_ONEDNN_OPTS`` is left alone (it changes the
numerics).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from typing import TextIO

# TensorFlow's C++ level: 1 hides INFO; warnings and errors stay.
TF_LOG_LEVEL = "1"
# The lines TF's libraries write at load time, before they read TF_CPP_MIN_LOG_LEVEL.
_PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called"
_ABSL_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ")
CONTINUATION = "    "  # the indent of a wrapped line's continuation


def set_tf_log_level() -> None:
    """Hides TensorFlow's C++ INFO lines, unless ``TF_CPP_MIN_LOG_LEVEL`` is set already."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)


def _hides_info() -> bool:
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    return level.isdigit() and int(level) >= 1


def _kept(text: str) -> str:
    """``text`` without the load-time INFO lines and absl's pre-init notice."""
    lines = text.splitlines(keepends=True)
    return "".join(
        line for line in lines if not (line.startswith(_PRE_INIT) or _ABSL_INFO.match(line))
    )


@contextlib.contextmanager
def quiet_tensorflow_load() -> Iterator[None]:
    """Runs a block that may import TensorFlow first without TensorFlow's load-time INFO lines.

    Everything else written to file descriptor 2 meanwhile (TensorFlow's warnings and errors,
    another thread's output) is written back, in order, when the block ends. Does nothing when
    TensorFlow is imported already, when ``TF_CPP_MIN_LOG_LEVEL`` is 0 (the user asked for
    INFO), or when the process has no file descriptor 2.
    """
    if "tensorflow" in sys.modules or not _hides_info():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            rest = _kept(caught.read().decode("utf-8", "replace"))
            if rest:
                os.write(2, rest.encode())


def fit(text: str, stream: TextIO) -> str:
    """``text`` wrapped at word boundaries to the width of the terminal ``stream`` is, with
    each continuation indented; as it is when ``stream`` is not a terminal (a log file or a
    notebook keeps whole lines, and a notebook wraps them itself)."""
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    width = shutil.get_terminal_size().columns
    if not terminal or all(len(line) <= width for line in text.splitlines()):
        return text
    return "\n".join(
        textwrap.fill(
            line,
            width,
            subsequent_indent=CONTINUATION,
            break_long_words=False,
            break_on_hyphens=False,
        )
        if len(line) > width
        else line
        for line in text.splitlines()
    )
