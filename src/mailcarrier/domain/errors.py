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

Each error has one :class:`ErrorKind` (``error.kind``), and each kind one API problem type
and status (``api/problems.py``) and one CLI exit status (``cli/error_kinds.py``), so a
new error class needs no handler anywhere: it is a subclass of the kind it is. A subclass
of the root that names no kind takes it from the builtin it also derives from (ValueError:
invalid input, LookupError: not found, OSError: unavailable), else from its parent.

Business outcomes (a refused recipient, a deferral, an unrecognised bounce) are values,
never exceptions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "DeliveryDisconnectedError",
    "DeliveryError",
    "DeliveryTimeoutError",
    "ErrorKind",
    "InvalidInputError",
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
