"""Errors that tell a user's mistake apart from a failed trial or a bug.

A :class:`ConfigError` is fatal and never counted as a failed trial: the study cannot run as
configured. It names the setting at fault; settings and command-line flags share their names,
so the CLI prints ``--<flag>`` and the Python API prints the keyword.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration mistake, stated in one sentence that names the setting.

    Attributes:
      flag: The name of the setting (and of the command-line flag) at fault.
      message: One sentence saying what is wrong and, where possible, what to do.
    """

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message

    def for_cli(self) -> str:
        """Returns the message as the CLI shows it, with the flag spelled ``--flag``."""
        return f"--{self.flag}: {self.message}"


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (or its type name), for a one-sentence error."""
    text = (str(e).strip() or type(e).__name__).splitlines()[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."
