"""The smoke check's report: one line per check, PASS, FAIL or INFO, printed as it ends.

A user pastes it into a bug report, perhaps only the lines that failed: so every FAIL line ends
with the versions (``[tensorflow-tpu 2.20.0, keras 3.15.1, ...]``), and the last line names
the checks that failed and the versions again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from tpu_bo.errors import ConfigError, first_line


@dataclasses.dataclass
class Check:
    """One line of the report: ``ok`` is True (PASS), False (FAIL) or None (INFO)."""

    name: str
    ok: bool | None
    detail: str
    versions: str = ""

    @property
    def mark(self) -> str:
        return {True: "PASS", False: "FAIL", None: "INFO"}[self.ok]

    def line(self) -> str:
        tail = f" [{self.versions}]" if self.ok is False and self.versions else ""
        return f"{self.mark}  {self.name:<17} {self.detail}{tail}"


class Report:
    """Collects checks and prints each as it ends, so a slow device shows progress."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.started = time.perf_counter()
        self.versions = ""  # the packages that matter, for each FAIL line (set by the caller)

    def add(self, name: str, run: Callable[[], tuple[bool | None, str]]) -> bool:
        """Runs one check; an exception is its FAIL line. Returns whether it did not fail."""
        try:
            ok, detail = run()
        except ConfigError as e:
            ok, detail = False, e.for_cli()
        except Exception as e:  # noqa: BLE001 - every failure is a report line, not a crash
            ok, detail = False, f"{type(e).__name__}: {first_line(e, 300)}"
        self.checks.append(Check(name, ok, detail, self.versions))
        print(self.checks[-1].line(), flush=True)
        return ok is not False

    def summary(self) -> str:
        counts = {mark: 0 for mark in ("PASS", "FAIL", "INFO")}
        for check in self.checks:
            counts[check.mark] += 1
        seconds = time.perf_counter() - self.started
        failed = [c.name for c in self.checks if c.ok is False]
        text = ", ".join(f"{n} {m}" for m, n in counts.items())
        text += f" ({', '.join(failed)})" if failed else ""
        text += f" in {seconds:.0f} s"
        return text + (f"; {self.versions}" if self.versions else "")

    def to_json(self) -> dict[str, Any]:
        return {"checks": [dataclasses.asdict(c) for c in self.checks], "summary": self.summary()}
