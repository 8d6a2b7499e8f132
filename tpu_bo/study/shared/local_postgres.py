"""A throw-away PostgreSQL server on this machine, for trying many workers and for the tests.

A study shared by many workers lives in a real database (``--storage=postgresql://...``, see
docs/many_machines.md). On GCP that is Cloud SQL; on one machine, this module
starts a private server from the PostgreSQL binaries already installed (``initdb``,
``pg_ctl``): its own data directory, listening only on 127.0.0.1 at a free port, trusting
local connections, owned by a non-root user (``postgres`` refuses to run as root, so a root
caller runs it as the ``postgres`` user, or ``nobody``)::

    python -m tpu_bo.study.shared.local_postgres /tmp/pg  # prints the URL; Ctrl-C stops it

    with LocalPostgres() as pg:
        run_study(storage=pg.url, study_name="mnist", ...)

The test suite and ``bench/workers.py`` use it; nothing is mocked.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app

USER = "tpu_bo"  # the database role initdb makes; trusted on 127.0.0.1 only
DATABASE = "postgres"


def binaries() -> str | None:
    """The directory of ``initdb`` and ``pg_ctl`` (on PATH, else the newest Debian install)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(found)
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(installed[-1]) if installed else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """A private PostgreSQL server: :meth:`start`, :attr:`url`, :meth:`stop`.

    Args:
      directory: Where its data directory goes (default: a new temporary directory, removed
        by :meth:`stop`).
      port: The TCP port on 127.0.0.1 (default: a free one).
    """

    def __init__(self, directory: str | None = None, port: int | None = None) -> None:
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed here (no initdb/pg_ctl found)")
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="tpu_bo_pg_")
        self.data = os.path.join(self.dir, "data")
        self.port = port or free_port()
        self._user = _server_user()

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [os.path.join(self.bin, args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, cwd="/")

    def start(self) -> LocalPostgres:
        """Creates the data directory on first use, then starts the server and waits for it.

        Raises:
          RuntimeError: in one sentence, when the server's user cannot reach the directory or
            PostgreSQL refuses to start (its log is named).
        """
        os.makedirs(self.dir, exist_ok=True)
        if self._user is not None:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, self._user)
            reach = subprocess.run(["runuser", "-u", self._user, "--", "test", "-w", self.dir])
            if reach.returncode:
                raise RuntimeError(
                    f"the user {self._user!r} that runs PostgreSQL cannot reach {self.dir} (a "
                    "parent directory is private); choose a directory such as /tmp/pg"
                )
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self._run("initdb", "-D", self.data, "-U", USER, "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k '' -c listen_addresses=127.0.0.1 -c max_connections=200"
        log = os.path.join(self.dir, "server.log")
        started = self._run(
            "pg_ctl", "-D", self.data, "-l", log, "-o", options, "-w", "-t", "60", "start",
            check=False,
        )  # fmt: skip
        if started.returncode:
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}; see {log}")
        return self

    def stop(self, *, remove: bool | None = None) -> None:
        """Stops the server at once (``-m fast``); removes its files if this object made them."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)
        if self._own_dir if remove is None else remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _server_user() -> str | None:
    """None when this process may run postgres itself, else the account to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, and there is no 'postgres' or 'nobody' user to run as")


def main(argv: list[str]) -> None:
    directory = argv[1] if len(argv) > 1 else None
    try:
        server = LocalPostgres(directory).start()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        print(
            f"tpu_bo.study.shared.local_postgres: {detail.strip().splitlines()[-1]}",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"PostgreSQL is up: --storage={server.url}", flush=True)
    print("Ctrl-C stops it" + ("" if directory else " and removes its files"), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
        sys.exit(0)


if __name__ == "__main__":
    app.run(main)
