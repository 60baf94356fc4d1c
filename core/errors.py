"""One root for every error ArchScope raises on purpose.

A user-facing failure (bad input, a locked run folder, a diverged training) derives from
``ArchScopeError`` and carries the process exit code the command line returns for it. The CLI
runner (core/cli.py) prints ``error: <message>`` on one line and exits with that code; the
dashboard shows the message. Anything else is a bug and is allowed to show as one.

Exit codes (also in the README): 0 done, 1 failed, 2 invalid input, 3 locked,
130 interrupted (Ctrl-C), 143 cancelled (SIGTERM).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130
EXIT_CANCELLED = 143


class ArchScopeError(Exception):
    """Base of every deliberate ArchScope error; ``exit_code`` is what a CLI returns for it."""

    exit_code: int = EXIT_INVALID


class InvalidInputError(ArchScopeError, ValueError):
    """Input that cannot be used (a flag, a file, a device that is not there): exit 2."""

    exit_code = EXIT_INVALID


class FailedError(ArchScopeError, RuntimeError):
    """Valid input, but the work failed (training diverged, evaluation could not finish): exit 1."""

    exit_code = EXIT_FAILED
