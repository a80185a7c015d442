"""Exceptions with one-line messages and the exit code the CLI uses for them."""

from __future__ import annotations

from pathlib import Path

#: Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


class BidsanonError(Exception):
    """Base error: printed as one line, no traceback, exit code 2.

    Parameters
    ----------
    message : str
        What is wrong and, where possible, what to do next.
    path : str | Path | None
        The file the problem is in.
    position : int | None
        Byte position in ``path`` the problem was found at.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, path: str | Path | None = None,
                 position: int | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.position = position
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.position is not None:
                where += f" (byte {self.position})"
            where += ": "
        return (where + self.message).replace("\n", " ")


class PolicyError(BidsanonError):
    """The policy file is invalid (unknown key, wrong type, out of range)."""


class InputError(BidsanonError):
    """An input file or folder is unreadable, corrupt or not what it claims."""


class UsageError(BidsanonError):
    """Command-line arguments or paths that cannot work together."""


class FindingsError(BidsanonError):
    """Identifying content was found (check) or a file failed (run): exit 1."""

    exit_code = EXIT_FINDINGS
