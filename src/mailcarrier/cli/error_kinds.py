"""The exit status of a command that ends on a domain error, by the error's kind.

Each :class:`~mailcarrier.domain.errors.ErrorKind` maps to its own exit status of
:mod:`mailcarrier.cli.exit_codes` (not found 7, conflict 8, invalid input 9, unavailable
10, refused by policy 5), taken from the kind table the API's problem types come from too,
so a script can tell "no such mailing" from "already sent" from "retry later" without
reading standard error. :func:`run` applies it to any error a command lets escape, so a
command need not catch errors it cannot add anything to; a command that catches one to
word the message itself ends with :func:`exit_code_for` of it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType

from mailcarrier.cli.exit_codes import ExitCode
from mailcarrier.domain.errors import ErrorKind, MailcarrierError

__all__ = ["EXIT_CODES", "exit_code_for", "run"]

#: Each kind's exit status, from the kind table of ``domain/errors.py``.
EXIT_CODES: Mapping[ErrorKind, ExitCode] = MappingProxyType(
    {kind: ExitCode(kind.exit_status) for kind in ErrorKind})


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit status a command ends with on ``error``: its kind's for a domain error,
    ``FAILED`` for anything else a command chose to catch (an IMAP protocol error, say)."""
    if isinstance(error, MailcarrierError):
        return EXIT_CODES[error.kind]
    return ExitCode.FAILED


def run(command: Callable[[], object]) -> None:
    """Run ``command``; a domain error it lets escape ends the process with a one-line
    reason on standard error and the kind's exit status, not a traceback."""
    try:
        command()
    except MailcarrierError as error:
        print(f"error ({error.kind.value}): {error}", file=sys.stderr)
        raise SystemExit(int(exit_code_for(error))) from None
    except Exception as error:
        # A database that cannot be reached is a driver error, not a domain error (the
        # worker's loops retry on it); for a person it is one line and "unavailable".
        from mailcarrier.storage.engine import unreachable_database  # noqa: PLC0415 (only on failure)

        unreachable = unreachable_database(error)
        if unreachable is None:
            raise
        print(f"error ({unreachable.kind.value}): {unreachable}", file=sys.stderr)
        raise SystemExit(int(exit_code_for(unreachable))) from None
