"""Classify an SMTP reply or a bounce's diagnostic into reason, category, hard/soft, retry.

Classification looks at the stage, the reply code, the RFC 3463 enhanced code and the
text together, through the ordered rules of :mod:`mailcarrier.domain.rules_engine`.
Permanence comes from the reply code when there is one (it is what the server will do),
otherwise from the enhanced code's class, otherwise from the caller's hint (a DSN's
``Action: failed``). Every result names the rule that decided it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from mailcarrier.domain.rules_engine import RuleSet, Scope, default_rules
from mailcarrier.domain.smtp_reply import EnhancedStatus, SMTPReply, SMTPStage, status_in_text
from mailcarrier.domain.vocabulary import (
    INTERNAL_CODES,
    Category,
    Reason,
    category_of,
    is_hard_bounce,
)

__all__ = ["Classification", "classify", "classify_internal", "classify_reply", "normalise_text"]


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failure means and what to do about it."""

    reason: Reason
    category: Category
    #: The address itself is bad (Sisimai's "hardbounce"): invalidate the contact.
    hard_bounce: bool
    #: The failure is final for this message (5xx, or 5.x.x without a code).
    permanent: bool
    #: Try this recipient again later.
    retry: bool
    scope: Scope
    #: The id of the rule that decided, for tracing ("internal:146" for our own codes).
    rule: str
    #: Our internal code (146, 147, 160, ...) when the failure happened on our side.
    internal_code: int | None = None
    #: The server may have accepted the message (a 147-style timeout after the final ".").
    outcome_unknown: bool = False


_DEFAULT_SCOPE: dict[Reason, Scope] = {
    **dict.fromkeys(
        (Reason.BLOCKED, Reason.BADREPUTATION, Reason.REQUIREPTR, Reason.TOOMANYCONN, Reason.SPEEDING,
         Reason.NETWORKERROR, Reason.SYSTEMFULL, Reason.FAILEDSTARTTLS, Reason.AUTHFAILURE,
         Reason.NORELAYING, Reason.REJECTED),
        Scope.DOMAIN,
    ),
    **dict.fromkeys(
        (Reason.SPAMDETECTED, Reason.CONTENTERROR, Reason.VIRUSDETECTED, Reason.MESGTOOBIG,
         Reason.NOTCOMPLIANTRFC, Reason.POLICYVIOLATION),
        Scope.MESSAGE,
    ),
}

# Addresses, IP literals and bracketed hosts vary per message but never decide a reason;
# masking them lets identical server templates share one cache entry. One pass; an address
# is only tried where a run of local-part characters starts, and that run is never
# re-scanned (possessive), so masking stays linear in the length of the reply.
_LOCAL = "\\w.+\\-=!#$%&'*/?^`{|}~"
_VARIABLE = re.compile(
    rf"(?<![{_LOCAL}<])<?[{_LOCAL}]*+@[\w\-.]+>?"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b|\[[0-9a-fA-F:.]+\]"
)


def normalise_text(text: str) -> str:
    """The text rules see: addresses and IPs masked, whitespace collapsed."""
    return " ".join(_VARIABLE.sub("<*>", text).split())


def _permanent(code: int | None, status: EnhancedStatus | None, hint: bool | None) -> bool:
    if code is not None and 400 <= code < 600:
        return code >= 500
    if status is not None and status.klass in (4, 5):
        return status.klass == 5
    return bool(hint)


@lru_cache(maxsize=65536)
def _decide(
    rules: RuleSet, text: str, code: int | None, status: str, stage: SMTPStage, hint: bool | None
) -> Classification:
    enhanced = EnhancedStatus.parse(status) if status else None
    permanent = _permanent(code, enhanced, hint)
    if code is not None and 200 <= code < 400:
        return Classification(Reason.DELIVERED, Category.UNKNOWN, False, False, False,
                              Scope.RECIPIENT, "builtin:positive-reply")
    rule = rules.first_match(code, status, stage, text)
    if rule is None:
        reason, rule_id, retry_override, scope = Reason.UNDEFINED, "builtin:undefined", None, None
    else:
        reason, rule_id, retry_override, scope = rule.reason, rule.id, rule.retry, rule.scope
    if retry_override is not None:
        permanent = not retry_override
    retry = not permanent
    return Classification(
        reason=reason,
        category=category_of(reason),
        hard_bounce=is_hard_bounce(reason, permanent=permanent),
        permanent=permanent,
        retry=retry,
        scope=scope or _DEFAULT_SCOPE.get(reason, Scope.RECIPIENT),
        rule=rule_id,
    )


def classify(
    text: str = "",
    *,
    code: int | None = None,
    status: EnhancedStatus | str | None = None,
    stage: SMTPStage = SMTPStage.UNKNOWN,
    permanent_hint: bool | None = None,
    rules: RuleSet | None = None,
) -> Classification:
    """Classify a failure described by any of: reply code, enhanced code, free text.

    ``status`` may be omitted: an enhanced code found in ``text`` is used instead.
    ``permanent_hint`` decides permanence only when neither code says it (a DSN
    ``Action: failed`` with no status).
    """
    if status is None:
        found = status_in_text(text) if text else ""
    elif isinstance(status, str):
        found = status_in_text(status) or (status_in_text(text) if text else "")
    else:
        found = str(status)
    # normalise_text, inlined: this is the per-reply hot path.
    key = " ".join(_VARIABLE.sub("<*>", text).split())
    return _decide(rules or default_rules(), key, code, found, stage, permanent_hint)


def classify_reply(reply: SMTPReply, rules: RuleSet | None = None) -> Classification:
    """Classify a parsed SMTP reply, taking its stage into account."""
    return classify(reply.text, code=reply.code, status=reply.enhanced, stage=reply.stage, rules=rules)


def classify_internal(code: int) -> Classification:
    """Classify one of our internal codes (146 timeout before ".", 147 after, 160 ...)."""
    entry = INTERNAL_CODES[code]
    permanent = not entry.retry and not entry.outcome_unknown
    return Classification(
        reason=entry.reason,
        category=category_of(entry.reason),
        hard_bounce=is_hard_bounce(entry.reason, permanent=permanent),
        permanent=permanent,
        retry=entry.retry,
        scope=Scope.RECIPIENT if permanent else Scope.DOMAIN,
        rule=f"internal:{entry.code}",
        internal_code=entry.code,
        outcome_unknown=entry.outcome_unknown,
    )
