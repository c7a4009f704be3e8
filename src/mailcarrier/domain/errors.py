"""The project's exception tree.

Every exception mailcarrier raises on purpose derives from :class:`MailcarrierError`.
Subclasses also inherit the builtin they resemble, so callers that only know the
builtin still catch them::

    MailcarrierError
    ├── ParseError(ValueError)          input is applicable but malformed
    ├── RuleFileError(ValueError)       a shipped or user rule file is invalid
    ├── ConfigurationError(ValueError)  a setting is missing or contradictory
    ├── NotFoundError(LookupError)      a named record does not exist (in this account)
    ├── ConflictError                   the request contradicts stored state
    └── DeliveryError                   infrastructure failure while sending
        ├── DeliveryTimeoutError(TimeoutError)
        └── DeliveryDisconnectedError(ConnectionError)

Business outcomes (a refused recipient, a deferral, an unrecognised bounce) are values,
never exceptions.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "DeliveryDisconnectedError",
    "DeliveryError",
    "DeliveryTimeoutError",
    "MailcarrierError",
    "NotFoundError",
    "ParseError",
    "RuleFileError",
]


class MailcarrierError(Exception):
    """Root of every error mailcarrier raises on purpose."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip().splitlines()[0])


class ParseError(MailcarrierError, ValueError):
    """The input looked like the expected format but could not be read."""

    def __init__(self, message: str | None = None, *, excerpt: str = "") -> None:
        super().__init__(message)
        #: A short, printable piece of the offending input, for logs and error lines.
        self.excerpt = excerpt[:120]


class RuleFileError(MailcarrierError, ValueError):
    """A classification rule file is invalid."""


class ConfigurationError(MailcarrierError, ValueError):
    """A setting is missing or contradictory."""


class NotFoundError(MailcarrierError, LookupError):
    """The requested record does not exist."""


class ConflictError(MailcarrierError):
    """The request contradicts the stored state."""


class DeliveryError(MailcarrierError):
    """Sending failed for an infrastructure reason."""


class DeliveryTimeoutError(DeliveryError, TimeoutError):
    """The remote server did not answer in time."""


class DeliveryDisconnectedError(DeliveryError, ConnectionError):
    """The connection to the remote server was lost."""
