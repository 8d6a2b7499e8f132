"""What a study does in background threads, so the chip does not wait for the host.

* :class:`Prefetch` asks the study's next trials while an epoch trains. The loop starts it
  right before :meth:`tpu_bo.train.pack.Pack.run_epoch`, after every write of the epoch
  boundary, and joins it right after, before the next write: the sampler then sees exactly the
  storage of that boundary (the slots still running count as pending points), so a study
  proposes the same points however long anything takes. TensorFlow releases the GIL inside
  its ops, and the sampler's numerical work releases it in NumPy and SciPy.
* :class:`Writes` writes files (in-flight checkpoints) in threads, one at a time per key: a new
  write of a key first waits for the previous one, so a kill loses at most the state being
  written, and the previous file stays (every write is a rename).

Both re-raise a failure in the main thread, at the next join, and both are joined on Ctrl-C
and on errors before the study's lock is released; the threads are daemons, so a join that
times out cannot hang the process's exit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tpu_bo")


class _Job:
    """One background thread running ``work``, with its error kept for the joiner."""

    def __init__(self, name: str, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = work()
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                self.error = e

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()

    def join(self, timeout: float | None = None) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"background {self.thread.name} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


class Prefetch:
    """Asks trials in the background while the chip trains.

    Args:
      ask: Asks one trial (``Study.ask``).
    """

    def __init__(self, ask: Callable[[], Any]) -> None:
        self._ask = ask
        self._job: _Job | None = None

    @property
    def running(self) -> bool:
        return self._job is not None

    def start(self, n: int) -> None:
        """Starts asking ``n`` trials; nothing may write to the storage until :meth:`join`."""
        if n <= 0:
            return
        if self._job is not None:
            raise RuntimeError("the previous background asks were not joined")
        self._job = _Job("tpu_bo-ask", lambda: [self._ask() for _ in range(n)])

    def join(self) -> list[Any]:
        """The trials asked since :meth:`start` (waits for them); re-raises the ask's error."""
        job, self._job = self._job, None
        return [] if job is None else job.join()

    def close(self, timeout: float = 120.0) -> None:
        """Waits for any asks in flight, ignoring their outcome (on Ctrl-C or an error): the
        trials they asked stay RUNNING in the storage and a resumed study continues them."""
        job, self._job = self._job, None
        if job is not None:
            _quiet_join(job, timeout)


class Writes:
    """File writes in background threads, one at a time per key."""

    def __init__(self) -> None:
        self._jobs: dict[Any, _Job] = {}

    def submit(self, key: Any, work: Callable[[], Any]) -> None:
        """Runs ``work`` in a thread once the previous write of ``key`` is done."""
        self.wait(key)
        self._jobs[key] = _Job(f"tpu_bo-write-{key}", work)

    def wait(self, key: Any) -> None:
        """Waits for the write of ``key`` in flight, if any; re-raises its error."""
        job = self._jobs.pop(key, None)
        if job is not None:
            job.join()

    def close(self, timeout: float = 120.0, *, quiet: bool = False) -> None:
        """Waits for every write (``quiet``: ignoring failures, on Ctrl-C or an error)."""
        jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            if quiet:
                _quiet_join(job, timeout)
            else:
                job.join(timeout)


def _quiet_join(job: _Job, timeout: float) -> None:
    try:
        job.join(timeout)
    except BaseException as e:  # noqa: BLE001 - already leaving; say why, go on
        log.warning("a background %s did not finish cleanly: %s", job.thread.name, e)
