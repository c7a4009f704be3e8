"""The project's exception tree.

Every exception mailcarrier raises on purpose derives from :class:`MailcarrierError`.
Subclasses also inherit the builtin they resemble, so callers that only know the
builtin still catch them::

    MailcarrierError                        kind
    ├── InvalidInputError(ValueError)       invalid-input      a value the caller gave is refused
    │   ├── ParseError                      invalid-input      input is applicable but malformed
    │   ├── RuleFileError                   invalid-input      a shipped or user rule file is invalid
    │   └── ConfigurationError              invalid-input      a setting is missing or contradictory
    ├── NotFoundError(LookupError)          not-found          a named record does not exist (in this account)
    ├── ConflictError                       conflict           the request contradicts stored state
    ├── RefusedByPolicyError                refused-by-policy  understood, and refused by a rule of the house
    └── UnavailableError                    unavailable        a service or resource we depend on failed
        └── DeliveryError                   unavailable        infrastructure failure while sending
            ├── DeliveryTimeoutError(TimeoutError)
            └── DeliveryDisconnectedError(ConnectionError)

Each error has one :class:`ErrorKind` (``error.kind``), and each kind its own API problem
type and status and its own CLI exit status, all in one table here (:data:`KIND_OUTCOMES`,
read through ``kind.problem_type``, ``kind.http_status`` and ``kind.exit_status``) that
``api/problems.py`` and ``cli/error_kinds.py`` both apply, so a script and an API client
learn the same thing from a failure, and a new error class needs no handler anywhere: it
is a subclass of the kind it is. A subclass
of the root that names no kind takes it from the builtin it also derives from (ValueError:
invalid input, LookupError: not found, OSError: unavailable), else from its parent.

Business outcomes (a refused recipient, a deferral, an unrecognised bounce) are values,
never exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar

__all__ = [
    "KIND_OUTCOMES",
    "ConfigurationError",
    "ConflictError",
    "DeliveryDisconnectedError",
    "DeliveryError",
    "DeliveryTimeoutError",
    "ErrorKind",
    "InvalidInputError",
    "KindOutcome",
    "MailcarrierError",
    "NotFoundError",
    "ParseError",
    "RefusedByPolicyError",
    "RuleFileError",
    "UnavailableError",
]


class ErrorKind(StrEnum):
    """What went wrong, as the caller must act on it."""

    #: The named record does not exist (in this account): check the id.
    NOT_FOUND = "not-found"
    #: The request contradicts the stored state (a name taken, a mailing already sent).
    CONFLICT = "conflict"
    #: A value given is malformed or not allowed: correct it and retry.
    INVALID_INPUT = "invalid-input"
    #: Something we depend on failed (database, DNS, a remote server): retry later.
    UNAVAILABLE = "unavailable"
    #: Understood and refused by a rule of the house (eligibility, sender hygiene).
    REFUSED_BY_POLICY = "refused-by-policy"

    @property
    def problem_type(self) -> str:
        """The ``type`` of the API's problem document for this kind."""
        return KIND_OUTCOMES[self].problem_type

    @property
    def http_status(self) -> int:
        """The HTTP status the API answers this kind with."""
        return KIND_OUTCOMES[self].http_status

    @property
    def exit_status(self) -> int:
        """The exit status a ``mailcarrier`` command ends with on this kind."""
        return KIND_OUTCOMES[self].exit_status


@dataclass(frozen=True, slots=True)
class KindOutcome:
    """How a kind of error reaches the caller: through the API and through the command line."""

    #: RFC 9457 problem type URI (``urn:mailcarrier:problem:<kind>``).
    problem_type: str
    #: HTTP status of the problem response.
    http_status: int
    #: Process exit status; 0-6 are the general statuses of ``cli/exit_codes.py``, so a
    #: kind takes its own number after them (a refusal by policy keeps the older 5).
    exit_status: int


def _outcome(kind: str, http_status: int, exit_status: int) -> KindOutcome:
    return KindOutcome(f"urn:mailcarrier:problem:{kind}", http_status, exit_status)


#: The one table: each kind's problem type, HTTP status and exit status, each distinct.
KIND_OUTCOMES: Mapping[ErrorKind, KindOutcome] = MappingProxyType({
    ErrorKind.NOT_FOUND: _outcome(ErrorKind.NOT_FOUND, 404, 7),
    ErrorKind.CONFLICT: _outcome(ErrorKind.CONFLICT, 409, 8),
    ErrorKind.INVALID_INPUT: _outcome(ErrorKind.INVALID_INPUT, 422, 9),
    ErrorKind.UNAVAILABLE: _outcome(ErrorKind.UNAVAILABLE, 503, 10),
    ErrorKind.REFUSED_BY_POLICY: _outcome(ErrorKind.REFUSED_BY_POLICY, 403, 5),
})


_KIND_OF_BUILTIN: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (LookupError, ErrorKind.NOT_FOUND),
    (ValueError, ErrorKind.INVALID_INPUT),
    (OSError, ErrorKind.UNAVAILABLE),
)


class MailcarrierError(Exception):
    """Root of every error mailcarrier raises on purpose."""

    #: The class's kind; a subclass sets it, or takes it from its builtin or its parent.
    kind: ClassVar[ErrorKind] = ErrorKind.UNAVAILABLE

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            return
        for builtin, kind in _KIND_OF_BUILTIN:
            if issubclass(cls, builtin):
                cls.kind = kind
                return

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip().splitlines()[0])


class InvalidInputError(MailcarrierError, ValueError):
    """A value the caller gave is malformed or not allowed."""

    kind = ErrorKind.INVALID_INPUT


class UnavailableError(MailcarrierError):
    """A service or resource mailcarrier depends on failed; trying again later may work."""

    kind = ErrorKind.UNAVAILABLE


class RefusedByPolicyError(MailcarrierError):
    """The request was understood and is refused by a rule (eligibility, sender hygiene)."""

    kind = ErrorKind.REFUSED_BY_POLICY


class ParseError(InvalidInputError):
    """The input looked like the expected format but could not be read."""

    def __init__(self, message: str | None = None, *, excerpt: str = "") -> None:
        super().__init__(message)
        #: A short, printable piece of the offending input, for logs and error lines.
        self.excerpt = excerpt[:120]


class RuleFileError(InvalidInputError):
    """A classification rule file is invalid."""


class ConfigurationError(InvalidInputError):
    """A setting is missing or contradictory."""


class NotFoundError(MailcarrierError, LookupError):
    """The requested record does not exist."""

    kind = ErrorKind.NOT_FOUND


class ConflictError(MailcarrierError):
    """The request contradicts the stored state."""

    kind = ErrorKind.CONFLICT


class DeliveryError(UnavailableError):
    """Sending failed for an infrastructure reason."""


class DeliveryTimeoutError(DeliveryError, TimeoutError):
    """The remote server did not answer in time."""


class DeliveryDisconnectedError(DeliveryError, ConnectionError):
    """The connection to the remote server was lost."""
