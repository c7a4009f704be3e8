"""The exit statuses of every ``mailcarrier`` command, defined once.

A script driving mailcarrier needs to tell "the command could not run" from "it ran and
found a problem" from "it did part of the work": each gets its own number, the same in
every command. ``mailcarrier --help`` prints :func:`describe_all`; a command that can end
with one of the rarer statuses says so in its own help with :func:`epilog`.

2 is what the command-line parser (Click, under Typer) already uses for a bad option or
argument, so it keeps that meaning and nothing else.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode", "describe_all", "epilog"]


class ExitCode(IntEnum):
    """Why a command ended; the value is the process exit status."""

    #: Done as asked.
    OK = 0
    #: The command could not do its job: an unknown account or mailing, a refused value, the
    #: database or a server unreachable. The reason is on standard error.
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


_SHORT = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "failed: the reason is on standard error",
    ExitCode.USAGE: "wrong command line (unknown option, bad argument)",
    ExitCode.CHECK_FAILED: "a check ran and found a problem",
    ExitCode.PARTIAL: "partly done: some input was rejected or unreadable, the rest was processed",
    ExitCode.REFUSED: "refused by policy (e.g. not eligible)",
    ExitCode.INCONSISTENT: "stored figures do not add up (please report it)",
}


def describe_all() -> str:
    """Every status with its meaning, one per line, for the top-level help."""
    return "Exit status:\n" + "\n".join(f"{int(code)}  {_SHORT[code]}" for code in ExitCode)


def epilog(*codes: ExitCode) -> str:
    """The statuses a command may end with besides 0, 1 and 2, for its own help."""
    return "Exit status: " + "; ".join(f"{int(code)} {_SHORT[code]}" for code in codes) + "."
