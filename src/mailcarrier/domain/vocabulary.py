"""The domain's words: bounce reasons, marketer categories, statuses, internal codes.

Reasons use the vocabulary of Sisimai so results compare with it. Categories are the
marketer-facing layer of seed 001 (1 spam/block, 2 invalid address, 3 temporary,
4 technical, 9 unknown). Enum values are persisted and never renamed.

Two notions of "hard" live here and are kept apart on purpose:

* :func:`is_hard_bounce` answers "is the *address* itself bad?" (Sisimai's
  ``hardbounce``): only ``userunknown``, ``hostunknown``, ``hasmoved`` and a permanent
  ``notaccept``. This is the flag that invalidates a contact.
* :attr:`Category.is_hard` is the seed's marketer wording: categories 1 and 2 are
  "hard bounces" (the message was refused for good), 3/4/9 are "soft". A category-1
  block is final for the message but says more about the sender than the address, so
  it never invalidates a contact on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "INTERNAL_CODES",
    "REASON_CATEGORY",
    "BounceType",
    "Category",
    "ContactStatus",
    "DeliveryState",
    "InternalCode",
    "Reason",
    "category_for",
    "category_of",
    "is_hard_bounce",
]


class Reason(enum.StrEnum):
    """Why a message was not delivered (Sisimai vocabulary)."""

    USERUNKNOWN = "userunknown"  #: the mailbox does not exist
    HOSTUNKNOWN = "hostunknown"  #: the domain does not exist or has no mail host
    HASMOVED = "hasmoved"  #: the mailbox moved to another address
    NOTACCEPT = "notaccept"  #: the domain accepts no mail at all (null MX)
    SUSPEND = "suspend"  #: the mailbox is disabled or suspended
    MAILBOXFULL = "mailboxfull"  #: over quota
    EXCEEDLIMIT = "exceedlimit"  #: the message exceeds the recipient's size limit
    MESGTOOBIG = "mesgtoobig"  #: the message exceeds the server's size limit
    SYSTEMFULL = "systemfull"  #: the receiving server is out of disk
    TOOMANYCONN = "toomanyconn"  #: too many connections or recipients
    SPEEDING = "speeding"  #: rate limited
    EXPIRED = "expired"  #: retries exhausted, delivery time expired
    NETWORKERROR = "networkerror"  #: network, DNS or connection problem
    SYSTEMERROR = "systemerror"  #: the receiving system failed
    MAILERERROR = "mailererror"  #: a local delivery program failed
    FAILEDSTARTTLS = "failedstarttls"  #: TLS negotiation failed or TLS was required
    SYNTAXERROR = "syntaxerror"  #: SMTP syntax error
    NORELAYING = "norelaying"  #: relaying denied
    BLOCKED = "blocked"  #: the sending IP or host is blocked (blocklist, no rDNS)
    SPAMDETECTED = "spamdetected"  #: the content was judged spam
    BADREPUTATION = "badreputation"  #: the sender's reputation is too low
    REQUIREPTR = "requireptr"  #: the sending IP lacks a valid PTR record
    AUTHFAILURE = "authfailure"  #: SPF, DKIM or DMARC failed
    POLICYVIOLATION = "policyviolation"  #: a local policy refused the message
    REJECTED = "rejected"  #: the envelope sender was refused
    FILTERED = "filtered"  #: a gateway refused a (probably real) mailbox
    SECURITYERROR = "securityerror"  #: authentication or security requirement failed
    VIRUSDETECTED = "virusdetected"  #: a virus was found
    CONTENTERROR = "contenterror"  #: the content is malformed or not acceptable
    NOTCOMPLIANTRFC = "notcompliantrfc"  #: the message violates an RFC
    ONHOLD = "onhold"  #: a DSN without enough detail to say
    UNDEFINED = "undefined"  #: not determined
    VACATION = "vacation"  #: an auto-reply, not a bounce
    FEEDBACK = "feedback"  #: a complaint or other feedback report (ARF)
    DELIVERED = "delivered"  #: a success DSN
    SUPPRESSED = "suppressed"  #: not sent because the contact may not be mailed


class Category(enum.IntEnum):
    """The marketer-facing bounce category of seed 001."""

    SPAM_BLOCK = 1  #: rejected as spam or sender blocked; may recover after delisting
    INVALID_ADDRESS = 2  #: invalid or nonexistent address or domain
    TEMPORARY = 3  #: mailbox full, timeouts, throttling
    TECHNICAL = 4  #: transient outages, administrative failures, DNS
    UNKNOWN = 9  #: undetermined or unreadable

    @property
    def is_hard(self) -> bool:
        """Seed 001's wording: categories 1 and 2 are hard bounces."""
        return self in (Category.SPAM_BLOCK, Category.INVALID_ADDRESS)

    @property
    def label(self) -> str:
        """The marketer's name of the category ("invalid address")."""
        return _CATEGORY_LABELS[self]


_CATEGORY_LABELS = {
    Category.SPAM_BLOCK: "spam / sender blocked",
    Category.INVALID_ADDRESS: "invalid address",
    Category.TEMPORARY: "temporary (mailbox full, timeouts, throttling)",
    Category.TECHNICAL: "technical (outages, administrative failures, DNS)",
    Category.UNKNOWN: "unknown",
}


class BounceType(enum.StrEnum):
    """Seed 001's two kinds of bounce: hard = categories 1 and 2, soft = 3, 4 and 9."""

    HARD = "hard"  #: refused for good: spam/block (category 1) or invalid address (category 2)
    SOFT = "soft"  #: temporary, technical or unknown (categories 3, 4, 9)

    @classmethod
    def of(cls, reason: Reason, category: Category) -> BounceType | None:
        """The bounce type of a classified failure; None for what is not a bounce."""
        if reason in _NOT_BOUNCES:
            return None
        return cls.HARD if category.is_hard else cls.SOFT


REASON_CATEGORY: dict[Reason, Category] = {
    **dict.fromkeys(
        (
            Reason.BLOCKED, Reason.SPAMDETECTED, Reason.BADREPUTATION, Reason.REQUIREPTR,
            Reason.AUTHFAILURE, Reason.POLICYVIOLATION, Reason.REJECTED, Reason.SECURITYERROR,
            Reason.VIRUSDETECTED, Reason.CONTENTERROR, Reason.NOTCOMPLIANTRFC, Reason.FILTERED,
        ),
        Category.SPAM_BLOCK,
    ),
    **dict.fromkeys(
        (Reason.USERUNKNOWN, Reason.HOSTUNKNOWN, Reason.HASMOVED, Reason.NOTACCEPT),
        Category.INVALID_ADDRESS,
    ),
    **dict.fromkeys(
        (
            Reason.MAILBOXFULL, Reason.EXCEEDLIMIT, Reason.MESGTOOBIG, Reason.SYSTEMFULL,
            Reason.TOOMANYCONN, Reason.SPEEDING, Reason.EXPIRED, Reason.SUSPEND,
        ),
        Category.TEMPORARY,
    ),
    **dict.fromkeys(
        (
            Reason.NETWORKERROR, Reason.SYSTEMERROR, Reason.MAILERERROR, Reason.FAILEDSTARTTLS,
            Reason.SYNTAXERROR, Reason.NORELAYING,
        ),
        Category.TECHNICAL,
    ),
    **dict.fromkeys(
        (Reason.UNDEFINED, Reason.ONHOLD, Reason.VACATION, Reason.FEEDBACK, Reason.DELIVERED,
         Reason.SUPPRESSED),
        Category.UNKNOWN,
    ),
}


_NOT_BOUNCES = frozenset({Reason.DELIVERED, Reason.VACATION, Reason.FEEDBACK, Reason.SUPPRESSED})


def category_of(reason: Reason) -> Category:
    """The marketer category a reason has when the failure is final (ARCHITECTURE.md §2 table)."""
    return REASON_CATEGORY[reason]


def category_for(reason: Reason, *, permanent: bool, timeout: bool = False) -> Category:
    """The marketer category of one failure: its reason's, as the failure's nature allows.

    Seed 001 defines categories by what happened. A temporary failure (4xx, a deferral)
    is never category 1 or 2: greylisting, throttling and "try again later" are
    category 3, and a 4xx "mailbox unavailable" proves nothing about the address yet. A
    timeout is category 3 ("timeouts") whatever reason it was read as.
    """
    base = REASON_CATEGORY[reason]
    if reason in _NOT_BOUNCES:
        return base
    if timeout:
        return Category.TEMPORARY
    if not permanent and base in (Category.SPAM_BLOCK, Category.INVALID_ADDRESS):
        return Category.TEMPORARY
    return base


def is_hard_bounce(reason: Reason, *, permanent: bool) -> bool:
    """Whether the *address* is bad, so the contact must be invalidated.

    ``permanent`` says the failure was final (5xx reply or 5.x.x status). A temporary
    "user unknown" (some servers answer 450 while a mailbox is being provisioned) is
    not evidence against the address yet; neither is a block.
    """
    return category_for(reason, permanent=permanent) is Category.INVALID_ADDRESS


class ContactStatus(enum.StrEnum):
    """Whether a contact may be mailed (seed 003): only ``active`` ones are."""

    PENDING = "pending"  #: subscribed, waiting for double opt-in confirmation
    ACTIVE = "active"  #: may be mailed
    ERROR = "error"  #: suppressed after bounces; mailed again only after reactivation
    OPTED_OUT = "opted_out"  #: unsubscribed or complained; never mailed again


class DeliveryState(enum.StrEnum):
    """Where one recipient of one mailing stands."""

    QUEUED = "queued"  #: waiting for its first attempt
    IN_PROGRESS = "in_progress"  #: attempted and deferred; a next attempt is scheduled
    DELIVERED = "delivered"  #: the receiving server answered 2xx to the end of data
    BOUNCED_HARD = "bounced_hard"  #: refused for good (category 1 or 2)
    BOUNCED_SOFT = "bounced_soft"  #: gave up after temporary failures (category 3, 4, 9)
    SUPPRESSED = "suppressed"  #: not sent: the contact may not be mailed
    FAILED = "failed"  #: not sent: a local error (template, configuration) prevented it

    @property
    def is_final(self) -> bool:
        return self not in (DeliveryState.QUEUED, DeliveryState.IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class InternalCode:
    """A code we assign when the failure happened on our side of the dialogue.

    Seed 002 defines 146, 147 and 160; the rest extend the family so a reader can tell
    where the dialogue broke without reading logs.
    """

    code: int
    name: str
    reason: Reason
    retry: bool
    outcome_unknown: bool
    meaning: str


INTERNAL_CODES: dict[int, InternalCode] = {
    c.code: c
    for c in (
        InternalCode(146, "timeout_before_dot", Reason.NETWORKERROR, True, False,
                     "Timed out during the SMTP dialogue before the final '.' of DATA; "
                     "the message was certainly not accepted."),
        InternalCode(147, "timeout_after_dot", Reason.NETWORKERROR, False, True,
                     "Timed out waiting for the reply to the final '.'; the server may have "
                     "accepted the message (outcome unknown)."),
        InternalCode(148, "lost_after_dot", Reason.NETWORKERROR, False, True,
                     "The connection closed after the final '.' before a reply; outcome unknown."),
        InternalCode(150, "connection_lost", Reason.NETWORKERROR, True, False,
                     "The connection closed during the dialogue before the final '.'."),
        InternalCode(160, "connect_timeout", Reason.NETWORKERROR, True, False,
                     "Timed out connecting to the receiving server."),
        InternalCode(161, "connection_refused", Reason.NETWORKERROR, True, False,
                     "The receiving server refused the TCP connection."),
        InternalCode(162, "host_unreachable", Reason.NETWORKERROR, True, False,
                     "No route to the receiving server."),
        InternalCode(170, "dns_nxdomain", Reason.HOSTUNKNOWN, False, False,
                     "DNS says the recipient domain does not exist (NXDOMAIN)."),
        InternalCode(171, "dns_servfail", Reason.NETWORKERROR, True, False,
                     "DNS lookup failed temporarily (SERVFAIL or timeout); the domain may exist."),
        InternalCode(172, "dns_null_mx", Reason.NOTACCEPT, False, False,
                     "The domain publishes a null MX (RFC 7505): it accepts no mail."),
        InternalCode(173, "dns_no_mail_host", Reason.HOSTUNKNOWN, False, False,
                     "The domain exists but has neither MX nor A/AAAA records."),
        InternalCode(180, "tls_failed", Reason.FAILEDSTARTTLS, True, False,
                     "The TLS handshake after STARTTLS failed."),
        InternalCode(181, "tls_required", Reason.FAILEDSTARTTLS, True, False,
                     "TLS is required by policy but the server did not offer STARTTLS."),
        InternalCode(190, "protocol_error", Reason.NETWORKERROR, True, False,
                     "The server sent an answer that is not valid SMTP."),
        InternalCode(191, "smtputf8_not_offered", Reason.SYSTEMERROR, False, False,
                     "The recipient or sender address needs SMTPUTF8 (RFC 6531) and the receiving "
                     "server does not offer it; nothing was sent. A limit of that server, not an "
                     "invalid address."),
        InternalCode(199, "internal_error", Reason.SYSTEMERROR, True, False,
                     "An unexpected error on our side; the attempt is retried."),
    )
}
