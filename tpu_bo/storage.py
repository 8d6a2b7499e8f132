"""Every file of a study's ``--output_dir``, the one-writer lock, and the trials' Optuna storage.

Layout of ``<output_dir>`` (local disk, Drive or ``gs://``: all I/O goes through
``tf.io.gfile``):

* ``trials.journal``: the study's trials, an Optuna journal (one JSON operation per line, the
  format of ``optuna.storages.journal.JournalFileBackend``, so ``optuna-dashboard
  <output_dir>/trials.journal`` reads it). With ``--storage=URL`` the trials live there instead.
* ``writer.lock``: held by the one process that writes the study.
* ``inflight/trial_<n>.npz``: the last saved epoch of trial ``n`` while it runs; the trial's
  ``checkpoint`` attribute names it. Removed when the trial ends.
* ``config.json``, ``flags.txt``, ``summary.json``, ``summary.png``, ``best/`` (the best trial's
  ``model.weights.h5`` and ``trial.json``), ``tensorboard/``, and for a moment at the start of
  a multi-worker study ``workers.check``.
* ``final/`` (with ``--final_epochs``, see :mod:`tpu_bo.final`): the best configuration
  retrained, as ``model.keras`` and ``saved_model/``, and ``final.json``.

The journal is read once when the study opens and then kept in memory: this process is its
only writer, so nothing else can change it. A kill in the middle of an append can leave a torn
last line; the writer drops it when it opens the journal.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from optuna.storages.journal import BaseJournalBackend

from tpu_bo.errors import ConfigError

log = logging.getLogger("tpu_bo")

JOURNAL = "trials.journal"
LEGACY_JOURNAL = "trials.jsonl"
LOCK = "writer.lock"
INFLIGHT = "inflight"
CONFIG = "config.json"
SUMMARY = "summary.json"
PLOT = "summary.png"
BEST_DIR = "best"
BEST_WEIGHTS = os.path.join(BEST_DIR, "model.weights.h5")
BEST_TRIAL = os.path.join(BEST_DIR, "trial.json")
TENSORBOARD = "tensorboard"
FINAL_DIR = "final"
FINAL_MODEL = os.path.join(FINAL_DIR, "model.keras")
FINAL_SAVED_MODEL = os.path.join(FINAL_DIR, "saved_model")
FINAL_JSON = os.path.join(FINAL_DIR, "final.json")
WORKERS_CHECK = "workers.check"  # a multi-worker study's start-up token (workers.py)

# A lease on a filesystem without locks (gs://) is renewed this often and lapses after LEASE_TTL.
LEASE_RENEW = 20.0
LEASE_TTL = 60.0


def copy_file(source: str, target: str) -> None:
    """Copies a file (local or ``gs://``), replacing ``target``."""
    gfile = _gfile()
    gfile.makedirs(os.path.dirname(target) or ".")
    gfile.copy(source, target, overwrite=True)


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


class StudyDir:
    """The files of one study's output directory.

    Args:
      output_dir: The directory; created on the first write.
      writer: Whether this process writes. In a multi-worker study only the chief does; the
        others read the same directory and write nothing.
    """

    def __init__(self, output_dir: str, *, writer: bool = True) -> None:
        self.output_dir = output_dir
        self.writer = writer

    def path(self, name: str) -> str:
        """The full path of ``name`` inside the directory."""
        return os.path.join(self.output_dir, name)

    def exists(self, name: str) -> bool:
        path = self.path(name)
        if "://" not in path:
            return os.path.exists(path)  # no TensorFlow import for a local look
        return _gfile().exists(path)

    def read_json(self, name: str) -> Any:
        """``name`` parsed as JSON; ``None`` if it does not exist."""
        return read_json(self.path(name))

    def write_text(self, name: str, text: str | bytes) -> None:
        """Atomically (re)writes ``name``, if this process is the writer."""
        if self.writer:
            _gfile().makedirs(os.path.dirname(self.path(name)))
            write_atomic(self.path(name), text)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def save_checkpoint(self, number: int, meta: dict[str, Any], arrays: list[np.ndarray]) -> str:
        """Saves a running trial's state in one file; returns its name inside the directory.

        Written to a temporary name and renamed, so a kill leaves the old state or the new one.
        """
        name = self.checkpoint_name(number)
        buffer = io.BytesIO()
        encoded = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(buffer, __meta__=encoded, **{f"a{i}": a for i, a in enumerate(arrays)})
        self.write_text(name, buffer.getvalue())
        return name

    @staticmethod
    def checkpoint_name(number: int) -> str:
        """The saved-state file of running trial ``number``, inside the directory."""
        return os.path.join(INFLIGHT, f"trial_{number:04d}.npz")

    def checkpoints(self) -> list[str]:
        """Every saved-state file present, inside the directory."""
        pattern = os.path.join(self.output_dir, INFLIGHT, "trial_*.npz")
        return sorted(os.path.join(INFLIGHT, os.path.basename(p)) for p in _gfile().glob(pattern))

    def load_checkpoint(self, name: str) -> tuple[dict[str, Any], list[np.ndarray]] | None:
        """A state saved by :meth:`save_checkpoint`, or ``None`` if missing or unreadable."""
        path = self.path(name)
        try:
            with _gfile().GFile(path, "rb") as f:
                data = np.load(io.BytesIO(f.read()))
                meta = json.loads(data["__meta__"].tobytes().decode())
                arrays = [data[f"a{i}"] for i in range(len(data.files) - 1)]
        except Exception as e:  # noqa: BLE001 - missing or damaged: the trial starts again
            log.warning("cannot read the saved state %s (%s); its trial starts again", path, e)
            return None
        return meta, arrays

    def remove(self, name: str) -> None:
        """Deletes ``name`` if it exists (writer only)."""
        if self.writer and _gfile().exists(self.path(name)):
            _gfile().remove(self.path(name))

    def check_not_legacy(self) -> None:
        """Refuses a directory written by tpu_bo's first engine (``trials.jsonl``)."""
        if self.exists(LEGACY_JOURNAL) and not self.exists(JOURNAL):
            raise ConfigError(
                "output_dir",
                f"{self.output_dir} holds a study of tpu_bo's first version ({LEGACY_JOURNAL}); "
                "finish it with that version, or start this one in a new --output_dir.",
            )


class GFileJournal(BaseJournalBackend):
    """An Optuna journal backend over ``tf.io.gfile`` for a study with one writer.

    The file is read once; later reads come from memory. A non-writer (a multi-worker study's
    other workers) keeps its appends in memory only: it takes the same decisions as the chief,
    which writes them.
    """

    def __init__(self, path: str, *, writer: bool = True) -> None:
        self.path = path
        self.writer = writer
        self._logs: list[dict[str, Any]] = list(self._read(path, repair=writer))

    @staticmethod
    def _read(path: str, *, repair: bool) -> Iterator[dict[str, Any]]:
        gfile = _gfile()
        if not gfile.exists(path):
            return
        with gfile.GFile(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        complete = lines[:-1]  # the last piece is empty or a torn line with no newline
        for i, line in enumerate(complete):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(
                    "output_dir",
                    f"{path} line {i + 1} is not valid JSON; repair the file or use a new "
                    "--output_dir.",
                ) from None
        if lines[-1] and repair:
            log.warning("%s ended in a partly written line; dropping it.", path)
            write_atomic(path, b"".join(line + b"\n" for line in complete))

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self.writer:
            text = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs)
            gfile = _gfile()
            gfile.makedirs(os.path.dirname(self.path) or ".")
            with gfile.GFile(self.path, "a") as f:
                f.write(text)
                f.flush()
        self._logs.extend(logs)


class WriterLock:
    """The one-writer lock of an output directory.

    On a local filesystem an ``flock`` on ``writer.lock``: the kernel releases it when the
    holder dies, even by SIGKILL. Where there are no locks (``gs://``), a lease file that the
    holder renews every ``LEASE_RENEW`` seconds and that lapses ``LEASE_TTL`` seconds after
    the holder stops renewing it.

    Args:
      output_dir: The study's directory.
      wait: Wait for the holder to finish instead of failing at once.
    """

    def __init__(self, output_dir: str, *, wait: bool = False) -> None:
        self.path = os.path.join(output_dir, LOCK)
        self.wait = wait
        self._file: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._me = {"host": socket.gethostname(), "pid": os.getpid(), "token": os.urandom(8).hex()}

    def acquire(self) -> None:
        """Takes the lock, or raises ConfigError naming ``--output_dir`` (unless ``wait``)."""
        local = "://" not in self.path
        first = True
        while True:
            holder = self._try_local() if local else self._try_lease()
            if holder is None:
                return
            if not self.wait:
                raise self.refuse(holder)
            if first:
                log.warning("waiting for %s to finish the study", _describe(holder))
                first = False
            time.sleep(2.0 if local else LEASE_RENEW / 2)

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now, or ``None``; takes nothing and creates no file."""
        if "://" in self.path:
            held = read_json(self.path) if _gfile().exists(self.path) else None
            if held and time.time() - float(held.get("renewed", 0)) < LEASE_TTL:
                return held
            return None
        import fcntl

        try:
            f = open(self.path)  # noqa: SIM115 - closed below
        except OSError:
            return None  # no lock file: nobody has run a study here
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _parse(f.read())
        finally:
            f.close()  # closing releases a lock taken just now
        return None

    def refuse(self, holder: dict[str, Any]) -> ConfigError:
        """The one sentence for a study that another process runs."""
        return ConfigError(
            "output_dir",
            f"another process ({_describe(holder)}) is running the study in "
            f"{os.path.dirname(self.path)}; wait for it to end, pass --wait_for_lock, "
            "or use another --output_dir.",
        )

    def _try_local(self) -> dict[str, Any] | None:
        import fcntl

        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            f = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        except OSError as e:
            raise ConfigError(
                "output_dir",
                f"cannot write {os.path.dirname(self.path)} ({e.strerror}); check that this "
                "machine's account may write there, or pick another --output_dir.",
            ) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = _parse(f.read())
            f.close()
            return holder
        f.seek(0)
        f.truncate()
        f.write(json.dumps({**self._me, "since": time.time()}))
        f.flush()
        self._file = f
        return None

    def _try_lease(self) -> dict[str, Any] | None:
        holder = read_json(self.path) if _gfile().exists(self.path) else None
        if holder and holder.get("token") != self._me["token"]:
            if time.time() - float(holder.get("renewed", 0)) < LEASE_TTL:
                return holder
        self._renew()
        time.sleep(1.0)  # two starts at once: the later write wins, the other one sees it
        holder = read_json(self.path) or {}
        if holder.get("token") != self._me["token"]:
            return holder
        self._thread = threading.Thread(target=self._keep_renewing, daemon=True)
        self._thread.start()
        return None

    def _renew(self) -> None:
        _gfile().makedirs(os.path.dirname(self.path))
        write_atomic(self.path, json.dumps({**self._me, "renewed": time.time()}))

    def _keep_renewing(self) -> None:
        while not self._stop.wait(LEASE_RENEW):
            with contextlib.suppress(Exception):
                self._renew()

    def release(self) -> None:
        """Gives the lock up (also safe when it was never taken)."""
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            with contextlib.suppress(Exception):
                _gfile().remove(self.path)


def _parse(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "unknown"
    return f"pid {holder['pid']} on {holder.get('host', '?')}"


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename (the temporary name
    is this writer's own: the workers of a shared study write the same files)."""
    gfile = _gfile()
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(3).hex()}"
    with gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    gfile.rename(tmp, path, overwrite=True)


def read_json(path: str) -> Any:
    """Reads a JSON file through ``tf.io.gfile``; ``None`` if it does not exist."""
    gfile = _gfile()
    if not gfile.exists(path):
        return None
    with gfile.GFile(path, "r") as f:
        return json.loads(f.read())
