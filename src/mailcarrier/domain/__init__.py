"""The domain core: pure functions and frozen values, no I/O.

This is the library other programs import: parse an SMTP reply, classify it, parse a
bounce email, decide a contact's status, compute a retry schedule.
"""

from mailcarrier.domain.classify import (
    Classification,
    Evidence,
    classify,
    classify_evidence,
    classify_internal,
    classify_reply,
)
from mailcarrier.domain.errors import MailcarrierError, ParseError, RuleFileError
from mailcarrier.domain.rules_engine import RuleSet, Scope, default_rules, load_rules
from mailcarrier.domain.smtp_reply import EnhancedStatus, SMTPReply, SMTPStage, parse_reply
from mailcarrier.domain.vocabulary import (
    INTERNAL_CODES,
    BounceType,
    Category,
    ContactStatus,
    DeliveryState,
    Reason,
)

__all__ = [
    "INTERNAL_CODES",
    "BounceType",
    "Category",
    "Classification",
    "ContactStatus",
    "DeliveryState",
    "EnhancedStatus",
    "Evidence",
    "MailcarrierError",
    "ParseError",
    "Reason",
    "RuleFileError",
    "RuleSet",
    "SMTPReply",
    "SMTPStage",
    "Scope",
    "classify",
    "classify_evidence",
    "classify_internal",
    "classify_reply",
    "default_rules",
    "load_rules",
    "parse_reply",
]
