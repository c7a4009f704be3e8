"""The exit statuses of every ``mailcarrier`` command, defined once.

A script driving mailcarrier needs to tell "the command could not run" from "it ran and
found a problem" from "it did part of the work": each gets its own number, the same in
every command. ``mailcarrier --help`` prints :func:`describe_all`; a command that can end
with one of the rarer statuses says so in its own help with :func:`epilog`.

2 is what the command-line parser (Click, under Typer) already uses for a bad option or
argument, so it keeps that meaning and nothing else.

A command that ends on a domain error ends with the status of the error's kind (not found,
conflict, invalid input, unavailable, refused by policy: 7, 8, 9, 10 and 5), the same
one-to-one mapping as the API's problem types; the numbers come from the kind table in
``domain/errors.py`` so the two cannot drift apart. 1 remains for failures outside the
error model (an IMAP server that answers with a protocol error, an unreadable file).
"""

from __future__ import annotations

from enum import IntEnum

from mailcarrier.domain.errors import ErrorKind

__all__ = ["ExitCode", "describe_all", "epilog"]


class ExitCode(IntEnum):
    """Why a command ended; the value is the process exit status."""

    #: Done as asked.
    OK = 0
    #: The command could not do its job for a reason outside the kinds below (7-10, 5). The
    #: reason is on standard error.
    FAILED = 1
    #: The command line itself is wrong: an unknown option, a missing or malformed argument.
    USAGE = 2
    #: A check ran and found a problem (domain hygiene, content check, a blocklist listing).
    CHECK_FAILED = 3
    #: Part of the input was processed, part was rejected or unreadable (the rest is stored).
    PARTIAL = 4
    #: The request was understood and refused by policy (e.g. a pool application that is not
    #: eligible).
    REFUSED = 5
    #: Stored figures do not add up (a report whose buckets do not reconcile): a bug to report.
    INCONSISTENT = 6
    #: The named record (account, mailing, contact, pool, key...) does not exist.
    NOT_FOUND = ErrorKind.NOT_FOUND.exit_status
    #: The request contradicts the stored state (a name taken, a mailing already sent).
    CONFLICT = ErrorKind.CONFLICT.exit_status
    #: A value given is malformed or not allowed: correct it and run again.
    INVALID_INPUT = ErrorKind.INVALID_INPUT.exit_status
    #: Something the command depends on failed (DNS, spamd, an IMAP or SMTP server): retry later.
    UNAVAILABLE = ErrorKind.UNAVAILABLE.exit_status


_SHORT = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "failed for another reason (not one of 5, 7-10); it is on standard error",
    ExitCode.USAGE: "wrong command line (unknown option, bad argument)",
    ExitCode.CHECK_FAILED: "a check ran and found a problem",
    ExitCode.PARTIAL: "partly done: some input was rejected or unreadable, the rest was processed",
    ExitCode.REFUSED: "refused by policy (e.g. not eligible)",
    ExitCode.INCONSISTENT: "stored figures do not add up (please report it)",
    ExitCode.NOT_FOUND: "not found: no such account, mailing, contact... (in this account)",
    ExitCode.CONFLICT: "conflict with the stored state (a name taken, a mailing already sent)",
    ExitCode.INVALID_INPUT: "invalid input: a value given is malformed or not allowed",
    ExitCode.UNAVAILABLE: "unavailable: a service it needs failed (DNS, spamd, an IMAP server); retry later",
}


def describe_all() -> str:
    """Every status with its meaning, one per line, for the top-level help."""
    return "Exit status:\n" + "\n".join(f"{int(code)}  {_SHORT[code]}" for code in ExitCode)


def epilog(*codes: ExitCode) -> str:
    """The statuses a command may end with besides 0, 1 and 2, for its own help."""
    return "Exit status: " + "; ".join(f"{int(code)} {_SHORT[code]}" for code in codes) + "."
