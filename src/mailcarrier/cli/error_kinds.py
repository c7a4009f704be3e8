"""The exit status of a command that ends on a domain error, by the error's kind.

Each :class:`~mailcarrier.domain.errors.ErrorKind` maps to one of the exit statuses of
:mod:`mailcarrier.cli.exit_codes`. Those distinguish what a script does next (give up, fix
the command line, accept a refusal), not every kind: not found, conflict, invalid input and
unavailable all end as ``FAILED`` with the reason on standard error, a refusal by policy as
``REFUSED``. :func:`run` applies it to any error a command lets escape, so a command need
not catch errors it cannot add anything to.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.domain.errors import ErrorKind, MailcarrierError

__all__ = ["EXIT_CODES", "exit_code_for", "run"]

EXIT_CODES: dict[ErrorKind, ExitCode] = {
    ErrorKind.NOT_FOUND: ExitCode.FAILED,
    ErrorKind.CONFLICT: ExitCode.FAILED,
    ErrorKind.INVALID_INPUT: ExitCode.FAILED,
    ErrorKind.UNAVAILABLE: ExitCode.FAILED,
    ErrorKind.REFUSED_BY_POLICY: ExitCode.REFUSED,
}


def exit_code_for(error: MailcarrierError) -> ExitCode:
    """The exit status a command ends with on ``error``."""
    return EXIT_CODES[error.kind]


def run(command: Callable[[], object]) -> None:
    """Run ``command``; a domain error it lets escape ends the process with a one-line
    reason on standard error and the kind's exit status, not a traceback."""
    try:
        command()
    except MailcarrierError as error:
        print(f"error ({error.kind.value}): {error}", file=sys.stderr)
        raise SystemExit(int(exit_code_for(error))) from None
