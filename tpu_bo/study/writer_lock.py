"""The one-writer lock of an output directory (``writer.lock``).

One process writes a study's ``--output_dir`` at a time; a second one is refused in one
sentence naming ``--output_dir`` (or waits, with ``--wait_for_lock``). A study shared by many
workers through a database has a study lock in the database instead
(:class:`tpu_bo.study.shared.rdb.StudyLock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from tpu_bo.errors import ConfigError
from tpu_bo.study.output_dir import LOCK, read_json, tf_gfile, write_atomic

log = logging.getLogger("tpu_bo")

# A lease on a filesystem without locks (gs://) is renewed this often and lapses after LEASE_TTL.
LEASE_RENEW = 20.0
LEASE_TTL = 60.0


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
            held = read_json(self.path) if tf_gfile().exists(self.path) else None
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
        holder = read_json(self.path) if tf_gfile().exists(self.path) else None
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
        tf_gfile().makedirs(os.path.dirname(self.path))
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
                tf_gfile().remove(self.path)


def _parse(text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "unknown"
    return f"pid {holder['pid']} on {holder.get('host', '?')}"
